//! Paced HTTP and Redis load for `perf/capture_bench.py`: `--rate` requests per second per
//! protocol, spread over `--conns` keep-alive connections per protocol (one thread each),
//! for `--secs` seconds; each request waits for its whole response. Prints
//! `DONE http=N redis=M behind=K` (K: requests sent more than 100 ms behind schedule).
//!
//! Usage: txload --http HOST:PORT --redis HOST:PORT --rate R --secs S [--conns C]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// One HTTP/1.1 GET and its whole response (Content-Length bodies).
fn http_once(r: &mut BufReader<TcpStream>, path: &str) -> std::io::Result<()> {
    r.get_mut().write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: txload\r\n\r\n").as_bytes(),
    )?;
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line
            .to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().to_string())
        {
            len = v.parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
}

/// One Redis GET and its reply (a bulk string, or nil).
fn redis_once(r: &mut BufReader<TcpStream>, key: &str) -> std::io::Result<()> {
    r.get_mut()
        .write_all(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes())?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    if let Some(n) = line
        .strip_prefix('$')
        .and_then(|n| n.trim().parse::<i64>().ok())
        && n >= 0
    {
        let mut body = vec![0u8; n as usize + 2];
        r.read_exact(&mut body)?;
    }
    Ok(())
}

fn main() {
    let rate: f64 = arg("--rate").and_then(|v| v.parse().ok()).expect("--rate");
    let secs: f64 = arg("--secs").and_then(|v| v.parse().ok()).expect("--secs");
    let conns: usize = arg("--conns").and_then(|v| v.parse().ok()).unwrap_or(8);
    let targets = [("http", arg("--http")), ("redis", arg("--redis"))];
    let behind = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    let start = Instant::now() + Duration::from_millis(200);
    for (proto, addr) in targets {
        let Some(addr) = addr else { continue };
        let done = Arc::new(AtomicU64::new(0));
        for c in 0..conns {
            let (addr, done, behind) = (addr.clone(), done.clone(), behind.clone());
            threads.push((
                proto,
                done.clone(),
                std::thread::spawn(move || {
                    let open = || {
                        let s = TcpStream::connect(&addr).expect("connect");
                        s.set_nodelay(true).ok();
                        BufReader::new(s)
                    };
                    let mut r = open();
                    let step = Duration::from_secs_f64(conns as f64 / rate);
                    let n = (secs * rate / conns as f64).round() as u64;
                    // Threads start staggered over one step.
                    let first = start + step.mul_f64(c as f64 / conns as f64);
                    for k in 0..n {
                        // A new connection every 500 requests: servers end keep-alive
                        // connections after a number of requests (nginx: 1000), and a
                        // request sent as one closes would get no response.
                        if k > 0 && k % 500 == 0 {
                            r = open();
                        }
                        let due = first + step.mul_f64(k as f64);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        } else if now - due > Duration::from_millis(100) {
                            behind.fetch_add(1, Ordering::Relaxed);
                        }
                        let ok = if proto == "http" {
                            http_once(&mut r, &format!("/index.html?c={c}&k={k}"))
                        } else {
                            redis_once(&mut r, &format!("k{c}:{k}"))
                        };
                        if let Err(e) = ok {
                            eprintln!("{proto} connection {c}: {e}");
                            return;
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }),
            ));
        }
    }
    let mut counts = std::collections::BTreeMap::new();
    for (proto, done, t) in threads {
        t.join().expect("load thread");
        counts.insert(proto, done.load(Ordering::Relaxed));
    }
    println!(
        "DONE http={} redis={} behind={} secs={:.2}",
        counts.get("http").copied().unwrap_or(0),
        counts.get("redis").copied().unwrap_or(0),
        behind.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
}
