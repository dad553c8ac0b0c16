//! Generated captures of a busy host: client ports reused thousands of times, files out of
//! time order, two capture sources with skewed clocks, retransmitted SYNs, a RST in the
//! middle of a response, TCP Fast Open data on the SYN, keep-alive connections whose port
//! is then reused. Every HTTP transaction must come out once with its status, and no gap
//! may be reported where no byte is missing.
//!
//! One test function on purpose: the counters are process-wide, so the scenarios run one
//! after the other and compare counter deltas.

mod inspect_util;

use connbeat::config::{Config, from_yaml_str};
use connbeat::monitor::{METRICS, get};
use inspect_util::synth::{Capture, Conn, Rng};
use inspect_util::{PROTOCOLS_YAML, TempDir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::AtomicU64;

const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 2), 18080);

fn config(extra: &str) -> Config {
    from_yaml_str(&format!("{PROTOCOLS_YAML}\n{extra}\n"), &[], &|_| None).expect("config")
}

fn run(cfg: &Config, cap: &Capture, dir: &TempDir, name: &str) -> Vec<Value> {
    let f = dir.0.join(name);
    cap.write(&f);
    run_file(cfg, &f)
}

fn run_file(cfg: &Config, f: &Path) -> Vec<Value> {
    let mut events = Vec::new();
    let mut sink = |e: connbeat::event::Event| events.push(e.to_value());
    connbeat::inspect::run_offline_with(cfg, f, &mut sink, None).expect("offline run");
    events.retain(|e| e["type"] == "http");
    events
}

/// "STATUS CODE" → count, e.g. "OK 200" → 2400, "Error -" → 1.
fn by_status(events: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        let code = e["http"]["response"]["code"]
            .as_u64()
            .map_or("-".to_string(), |c| c.to_string());
        let status = e["status"].as_str().unwrap_or("?");
        *m.entry(format!("{status} {code}")).or_default() += 1;
    }
    m
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Counter deltas of one run.
struct Deltas(Vec<u64>);

fn watch<T>(counters: &[&AtomicU64], f: impl FnOnce() -> T) -> (T, Deltas) {
    let before: Vec<u64> = counters.iter().map(|c| get(c)).collect();
    let out = f();
    let d = counters
        .iter()
        .zip(before)
        .map(|(c, b)| get(c) - b)
        .collect();
    (out, Deltas(d))
}

fn request(i: usize) -> Vec<u8> {
    format!("GET /item/{i} HTTP/1.1\r\nHost: shop\r\nUser-Agent: curl/8.5\r\nAccept: */*\r\n\r\n")
        .into_bytes()
}

fn code_of(i: usize) -> u16 {
    if i.is_multiple_of(5) { 404 } else { 200 }
}

/// A response in two writes, head then body (as Python's http.server sends it).
fn response(code: u16, body_len: usize) -> (Vec<u8>, Vec<u8>) {
    let phrase = if code == 200 { "OK" } else { "Not Found" };
    let head = format!(
        "HTTP/1.0 {code} {phrase}\r\nServer: SimpleHTTP/0.6\r\nContent-Type: text/html\r\nContent-Length: {body_len}\r\n\r\n"
    );
    (head.into_bytes(), vec![b'x'; body_len])
}

/// One curl-to-http.server connection starting at `t`: handshake, request, response in
/// two writes, then FIN from the server first (or from the client first when
/// `client_closes`). Returns the time of its last packet.
fn short_conn(
    cap: &mut Capture,
    t: u64,
    client: SocketAddrV4,
    isn: (u32, u32),
    i: usize,
    client_closes: bool,
) -> u64 {
    let step = 30;
    let mut c = Conn::new(client, SERVER, isn.0, isn.1);
    c.syn(cap, t, b"");
    c.syn_ack(cap, t + step, 0);
    c.ack(cap, t + 2 * step, true);
    c.data(cap, t + 3 * step, true, &request(i));
    if i.is_multiple_of(2) {
        // Otherwise the response carries the ACK (delayed ACK).
        c.ack(cap, t + 4 * step, false);
    }
    let (head, body) = response(code_of(i), 100 + i % 700);
    c.data(cap, t + 5 * step, false, &head);
    c.data(cap, t + 6 * step, false, &body);
    c.ack(cap, t + 7 * step, true);
    c.fin(cap, t + 8 * step, !client_closes);
    c.fin(cap, t + 9 * step, client_closes);
    c.ack(cap, t + 10 * step, !client_closes);
    t + 10 * step
}

fn tuple(frame: &[u8]) -> ([u8; 6], [u8; 6]) {
    let mut a = [0u8; 6];
    let mut b = [0u8; 6];
    a[..4].copy_from_slice(&frame[26..30]);
    a[4..].copy_from_slice(&frame[34..36]);
    b[..4].copy_from_slice(&frame[30..34]);
    b[4..].copy_from_slice(&frame[36..38]);
    (a, b)
}

/// Sorts by time, then swaps about a third of the adjacent pairs that are the two
/// directions of one connection (each keeping its time; every other swapped pair gets the
/// same time, as a microsecond clock gives two packets).
fn jitter(cap: &mut Capture, rng: &mut Rng) -> usize {
    cap.records.sort_by_key(|r| r.0);
    let mut swapped = 0;
    let mut i = 0;
    while i + 1 < cap.records.len() {
        let (a, b) = (tuple(&cap.records[i].1), tuple(&cap.records[i + 1].1));
        if a.0 == b.1 && a.1 == b.0 && rng.next().is_multiple_of(3) {
            if swapped % 2 == 1 {
                cap.records[i + 1].0 = cap.records[i].0;
            }
            cap.swap_next(i);
            swapped += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    swapped
}

/// `n` connections from `ports` client ports of `ip` (reused round-robin), a new one every
/// 250 µs, random ISNs (a fifth of them just below the wrap-around), jittered.
fn busy_host(ip: Ipv4Addr, ports: u16, n: usize, seed: u64) -> Capture {
    let mut rng = Rng(seed);
    let mut cap = Capture::default();
    let t0 = 1_795_000_000_000_000;
    for i in 0..n {
        let client = SocketAddrV4::new(ip, 40000 + (i % usize::from(ports)) as u16);
        let mut isn = (rng.next() as u32, rng.next() as u32);
        if i % 5 == 1 {
            isn.0 = u32::MAX - (rng.next() % 200) as u32;
            isn.1 = u32::MAX - (rng.next() % 900) as u32;
        }
        short_conn(&mut cap, t0 + i as u64 * 250, client, isn, i, i % 3 == 0);
    }
    let swapped = jitter(&mut cap, &mut rng);
    assert!(
        swapped > n / 2,
        "the capture is out of time order ({swapped} swaps)"
    );
    cap
}

#[test]
fn busy_host_captures() {
    let dir = TempDir::new("reuse");
    let cfg = config("");
    let gaps = &METRICS.inspect_tcp_gaps;
    let unmatched = &METRICS.inspect_unmatched_responses;
    let unsorted = &METRICS.inspect_tcp_unsorted;
    let reused = &METRICS.inspect_tcp_streams_reused;
    let stale = &METRICS.inspect_tcp_out_of_window;

    // 1. Heavy port reuse: 3,000 connections from 6 client ports (each port carries 500
    //    connections, a new one 1.5 ms after the last), out of time order.
    let n = 3000;
    let cap = busy_host(Ipv4Addr::new(10, 9, 0, 1), 6, n, 0x2545_f491_4f6c_dd1d);
    let (ev, d) = watch(&[gaps, unmatched, unsorted, stale], || {
        run(&cfg, &cap, &dir, "reuse.pcap")
    });
    assert_eq!(
        by_status(&ev),
        counts(&[("OK 200", 2400), ("Client Error 404", 600)])
    );
    assert_eq!(
        d.0,
        vec![0, 0, 0, 0],
        "gaps, unmatched, unsorted, out of window"
    );
    // Each transaction is the right one: /item/i answered with code_of(i).
    for e in &ev {
        let i: usize = e["path"].as_str().unwrap()["/item/".len()..]
            .parse()
            .unwrap();
        assert_eq!(e["http"]["response"]["code"], code_of(i), "{e}");
    }
    // The same file decoded in capture order (no sort window) pairs answers read before
    // their questions with nothing: the window is what makes the difference.
    let unsorted_cfg = config("connbeat.interfaces.sort_window: 0s");
    let (ev0, d0) = watch(&[unmatched], || {
        run_file(&unsorted_cfg, &dir.0.join("reuse.pcap"))
    });
    assert!(d0.0[0] > 0, "answers before questions in capture order");
    assert!(by_status(&ev0).get("OK 200").copied().unwrap_or(0) < 2400);

    // 2. Two capture sources merged as read, the second clock 2.5 s ahead: each connection
    //    is sorted on its own, so both decode completely.
    let a = busy_host(Ipv4Addr::new(10, 1, 0, 1), 4, 400, 7);
    let mut b = busy_host(Ipv4Addr::new(10, 2, 0, 1), 4, 400, 11);
    b.shift(2_500_000);
    let cap = Capture::interleave(&a, &b);
    let (ev, d) = watch(&[gaps, unmatched, unsorted], || {
        run(&cfg, &cap, &dir, "skew.pcap")
    });
    assert_eq!(
        by_status(&ev),
        counts(&[("OK 200", 640), ("Client Error 404", 160)])
    );
    assert_eq!(d.0[..2], [0, 0], "gaps, unmatched");
    // The clock jumps 2.5 s when the second source's first packet comes: what the first
    // source had held until then is let go at once, so at most that one is out of order.
    assert!(d.0[2] <= 1, "unsorted: {}", d.0[2]);
    // With the second source 2.5 s behind instead, the same, without the jump.
    let mut b = busy_host(Ipv4Addr::new(10, 2, 0, 1), 4, 400, 11);
    b.shift(-2_500_000);
    let cap = Capture::interleave(&a, &b);
    let (ev, d) = watch(&[gaps, unmatched, unsorted], || {
        run(&cfg, &cap, &dir, "skew2.pcap")
    });
    assert_eq!(by_status(&ev).values().sum::<usize>(), 800);
    assert_eq!(d.0, vec![0, 0, 0]);

    // 3. Retransmitted SYNs and SYN/ACKs (same ISN) on reused ports: one stream each.
    let mut cap = Capture::default();
    let mut t = 1_795_000_100_000_000u64;
    for i in 0..20usize {
        let client = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 41000 + (i % 2) as u16);
        let mut c = Conn::new(client, SERVER, 1000 + i as u32 * 7919, 5000);
        c.syn(&mut cap, t, b"");
        c.syn(&mut cap, t + 1_000_000, b"");
        let mut again = Conn::new(client, SERVER, c.c, c.s);
        c.syn_ack(&mut cap, t + 1_000_100, 0);
        again.syn_ack(&mut cap, t + 1_000_200, 0);
        c.data(&mut cap, t + 1_000_300, true, &request(i));
        let (head, body) = response(200, 10);
        c.data(&mut cap, t + 1_000_400, false, &[head, body].concat());
        c.fin(&mut cap, t + 1_000_500, false);
        c.fin(&mut cap, t + 1_000_600, true);
        c.ack(&mut cap, t + 1_000_700, false);
        t += 1_100_000;
    }
    let (ev, d) = watch(&[gaps, reused], || run(&cfg, &cap, &dir, "synretx.pcap"));
    assert_eq!(by_status(&ev), counts(&[("OK 200", 20)]));
    assert_eq!(d.0, vec![0, 0], "gaps, reused streams");

    // 4. A RST from the client in the middle of the response (more of it still in flight
    //    after the RST), then the port reused: the transaction is reported once, with the
    //    status the response head gave and a note that the body never ended, and the late
    //    segment opens nothing.
    let mut cap = Capture::default();
    let client = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 42000);
    let t = 1_795_000_200_000_000u64;
    let mut c = Conn::new(client, SERVER, 77, 9_000_000);
    c.syn(&mut cap, t, b"");
    c.syn_ack(&mut cap, t + 10, 0);
    c.data(&mut cap, t + 20, true, &request(1));
    let (head, body) = response(200, 3000);
    c.data(&mut cap, t + 30, false, &head);
    c.data(&mut cap, t + 40, false, &body[..1000]);
    c.rst(&mut cap, t + 50, true);
    c.data(&mut cap, t + 60, false, &body[1000..2000]);
    short_conn(&mut cap, t + 300_000, client, (5555, 6666), 2, false);
    let (ev, d) = watch(&[gaps, unmatched], || run(&cfg, &cap, &dir, "rst.pcap"));
    assert_eq!(by_status(&ev), counts(&[("OK 200", 2)]), "{ev:?}");
    assert_eq!(ev[0]["path"], "/item/1");
    assert_eq!(
        ev[0]["notes"],
        serde_json::json!(["connection ended before the end of the response"]),
        "3000 bytes declared, 1000 seen before the RST"
    );
    assert_eq!(ev[1]["path"], "/item/2");
    assert!(ev[1].get("notes").is_none(), "{}", ev[1]);
    assert_eq!(d.0, vec![0, 0], "gaps, unmatched");

    // 5. TCP Fast Open: the request rides on the SYN (and on its retransmission).
    let mut cap = Capture::default();
    let client = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 43000);
    let t = 1_795_000_300_000_000u64;
    let mut c = Conn::new(client, SERVER, u32::MAX - 3, 123);
    let req = request(7);
    c.syn(&mut cap, t, &req);
    c.syn(&mut cap, t + 200_000, &req);
    c.syn_ack(&mut cap, t + 200_100, req.len());
    c.ack(&mut cap, t + 200_200, true);
    let (head, body) = response(code_of(7), 50);
    c.data(&mut cap, t + 200_300, false, &[head, body].concat());
    c.fin(&mut cap, t + 200_400, true);
    c.fin(&mut cap, t + 200_500, false);
    c.ack(&mut cap, t + 200_600, true);
    let (ev, d) = watch(&[gaps, unmatched], || run(&cfg, &cap, &dir, "tfo.pcap"));
    assert_eq!(by_status(&ev), counts(&[("OK 200", 1)]));
    assert_eq!(ev[0]["path"], "/item/7");
    assert_eq!(d.0, vec![0, 0], "gaps, unmatched");

    // 6. Keep-alive connections whose port is then reused: one closed properly, one whose
    //    FIN the capture missed and whose last request is unanswered when the next SYN
    //    comes (published right then as closed, not after transaction_timeout).
    let mut cap = Capture::default();
    let client = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 44000);
    let mut t = 1_795_000_400_000_000u64;
    let mut rng = Rng(99);
    let mut id = 100;
    for (requests, answered, closes) in [(3, 3, true), (2, 2, true), (2, 1, false), (2, 2, true)] {
        let mut c = Conn::new(client, SERVER, rng.next() as u32, rng.next() as u32);
        c.syn(&mut cap, t, b"");
        c.syn_ack(&mut cap, t + 10, 0);
        c.ack(&mut cap, t + 20, true);
        t += 30;
        for k in 0..requests {
            c.data(&mut cap, t, true, &request(id));
            if k < answered {
                let (head, body) = response(200, 20);
                c.data(&mut cap, t + 10, false, &[head, body].concat());
                c.ack(&mut cap, t + 20, true);
            }
            id += 1;
            t += 100_000;
        }
        if closes {
            c.fin(&mut cap, t, true);
            c.fin(&mut cap, t + 10, false);
            c.ack(&mut cap, t + 20, true);
        }
        t += 500_000;
    }
    let (ev, d) = watch(&[gaps, unmatched, reused], || {
        run(&cfg, &cap, &dir, "keepalive.pcap")
    });
    assert_eq!(
        by_status(&ev),
        counts(&[("OK 200", 8), ("Error -", 1)]),
        "{ev:?}"
    );
    let failed = ev.iter().find(|e| e["status"] == "Error").unwrap();
    assert_eq!(failed["path"], "/item/106");
    assert_eq!(failed["notes"][0], "connection closed before the response");
    assert_eq!(d.0, vec![0, 0, 1], "gaps, unmatched, reused streams");
}

#[test]
fn sort_window_setting_is_checked() {
    let c = config("connbeat.interfaces.sort_window: 250ms");
    assert_eq!(
        c.connbeat.interfaces.sort_window.get(),
        std::time::Duration::from_millis(250)
    );
    assert_eq!(
        config("").connbeat.interfaces.sort_window.get(),
        std::time::Duration::from_millis(100)
    );
    for bad in ["soon", "-1", "20s"] {
        let e = from_yaml_str(
            &format!("{PROTOCOLS_YAML}\nconnbeat.interfaces.sort_window: {bad}\n"),
            &[],
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("connbeat.interfaces.sort_window"), "{bad}: {e}");
    }
}
