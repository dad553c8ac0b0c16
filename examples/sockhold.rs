//! Test helper: a real process that holds TCP (or UDP) sockets on loopback, for connbeat's
//! integration tests and benchmarks (`tests/`, `perf/`).
//!
//! Every mode reports on stdout, one line per fact, so that a test polls for a line
//! instead of sleeping:
//!
//! - `READY pid=P port=X`          the socket is listening / the helper is set up
//! - `SOCK l=IP:PORT r=IP:PORT`    one socket this process holds (local, remote)
//! - `HELD n=N`                    all N connections are established and held
//! - `DONE n=N`                    a finite mode finished
//!
//! Holding modes stay alive until their standard input reaches end of file (the test
//! closes it, or dies) or until `--ttl SECS` (default 600) passes, so a helper never
//! outlives its test for long. On end of file, `listen` and `connect` reset their
//! connections (SO_LINGER 0) so that no TIME_WAIT sockets are left behind.
//!
//! Modes:
//! - `listen ADDR N`              listen on ADDR (port 0 = any), accept N connections, hold
//! - `connect ADDR N`             open N connections to ADDR, hold them
//! - `delay-server ADDR DELAY_MS` per connection: read one byte, wait DELAY_MS, write one
//!   byte, close; until stdin closes
//! - `burst ADDR M CONC`          M short connections (send a byte, read the reply, close),
//!   CONC at a time; prints `SOCK` for each, then `DONE`, and exits
//! - `churn ADDR MILLIS`          for MILLIS ms keep spawning short-lived children that each
//!   connect to ADDR and exit at once (processes vanishing while /proc is scanned)
//! - `churn-child ADDR`           (used by `churn`)
//! - `no-cmdline ADDR`            connect to ADDR, then overwrite its own argument area with
//!   NUL bytes, so /proc/PID/cmdline holds no text; hold
//! - `leaderless ADDR`            connect to ADDR from a second thread, then end the main
//!   thread alone (SYS_exit): the thread-group leader is a zombie, so /proc/PID/fd and
//!   /proc/PID/cmdline are empty while the process still owns the socket
//! - `threads ADDR`               listen on ADDR; for each line read on stdin, start a thread
//!   that prints `TID n` (its thread id) and parks; exits at end of file
//! - `half-close ADDR`            connect to ADDR and close at once, without waiting:
//!   the socket lives on orphaned in FIN_WAIT (no process owns it); prints `SOCK`, `DONE`
//! - `connect-once ADDR`          connect to ADDR, send a byte, read the reply, print `SOCK`
//!   and exit at once (a short-lived client)
//! - `reuse-fd HOW ADDR FILE`     the socket of a process takes the place of an open file
//!   without changing the number of fds it holds. It opens FILE (and, for `recv`, listens
//!   on the Unix socket FILE.sock), prints `READY`, waits for a line on stdin, then:
//!   `close` closes FILE and connects to ADDR (the socket takes its fd); `dup2` connects
//!   and moves the socket onto FILE's fd with dup2; `recv` accepts a connection on
//!   FILE.sock, closes the listener and FILE, and receives the socket the peer sends;
//!   `thread` does `close` in a thread with a file table of its own (unshare(CLONE_FILES)).
//!   Prints `SOCK` with the socket's fd as `fd=N`; holds
//! - `send-fd ADDR PATH`          connect to ADDR, send the socket over the Unix socket PATH
//!   (SCM_RIGHTS), close it; prints `SOCK`, holds
//! - `udp-bind ADDR`              bind a UDP socket on ADDR (port 0 = any); prints `READY`
//!   and, once a datagram came, `SOCK` with its sender as `r`; hold
//! - `udp-connect ADDR`           a UDP socket connected to ADDR; sends one datagram,
//!   prints `SOCK`, holds

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut ttl = Duration::from_secs(600);
    let mut rest: Vec<&str> = Vec::new();
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--ttl" {
            ttl = Duration::from_secs(args[i + 1].parse().expect("--ttl SECS"));
            i += 2;
        } else {
            rest.push(&args[i]);
            i += 1;
        }
    }
    raise_nofile();
    watchdog(ttl);
    let addr = |i: usize| -> SocketAddr { rest[i].parse().expect("ADDR as ip:port") };
    let num = |i: usize| -> usize { rest[i].parse().expect("a number") };
    match rest.first().copied() {
        Some("listen") => listen(addr(1), num(2)),
        Some("connect") => connect(addr(1), num(2)),
        Some("delay-server") => delay_server(addr(1), num(2) as u64),
        Some("burst") => burst(addr(1), num(2), num(3)),
        Some("churn") => churn(&args[0], rest[1], num(2) as u64),
        Some("churn-child") => churn_child(addr(1)),
        Some("no-cmdline") => no_cmdline(addr(1)),
        Some("leaderless") => leaderless(addr(1)),
        Some("half-close") => half_close(addr(1)),
        Some("threads") => threads(addr(1)),
        Some("connect-once") => connect_once(addr(1)),
        Some("reuse-fd") => reuse_fd(rest[1], addr(2), rest[3]),
        Some("send-fd") => send_fd(addr(1), rest[2]),
        Some("udp-bind") => udp_bind(addr(1)),
        Some("udp-connect") => udp_connect(addr(1)),
        _ => {
            eprintln!("usage: sockhold [--ttl SECS] MODE ARGS (see the source)");
            std::process::exit(2);
        }
    }
}

/// Prints one line and flushes it, so the reader sees it at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).expect("stdout");
    out.write_all(b"\n").expect("stdout");
    out.flush().expect("stdout");
}

fn say_sock(s: &TcpStream) {
    say(&format!(
        "SOCK l={} r={}",
        s.local_addr().expect("local_addr"),
        s.peer_addr().expect("peer_addr")
    ));
}

/// Soft RLIMIT_NOFILE up to the hard limit: holding modes keep thousands of fds.
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Exits the whole process after `ttl`, whatever else is going on.
fn watchdog(ttl: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(ttl);
        eprintln!("sockhold: ttl reached, exiting");
        std::process::exit(3);
    });
}

fn udp_bind(addr: SocketAddr) {
    let s = std::net::UdpSocket::bind(addr).expect("bind udp");
    let local = s.local_addr().expect("local_addr");
    say(&format!(
        "READY pid={} port={}",
        std::process::id(),
        local.port()
    ));
    let mut buf = [0u8; 64];
    let (_, from) = s.recv_from(&mut buf).expect("recv_from");
    say(&format!("SOCK l={local} r={from}"));
    hold();
}

fn udp_connect(addr: SocketAddr) {
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::1]:0".parse().expect("addr")
    } else {
        "127.0.0.1:0".parse().expect("addr")
    };
    let s = std::net::UdpSocket::bind(bind).expect("bind udp");
    s.connect(addr).expect("connect udp");
    s.send(b"x").expect("send");
    say(&format!(
        "SOCK l={} r={}",
        s.local_addr().expect("local_addr"),
        s.peer_addr().expect("peer_addr")
    ));
    hold();
}

/// Blocks until standard input reaches end of file (the test is done with us).
fn hold() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().lock().read_to_end(&mut sink);
}

/// SO_LINGER 0: closing sends RST instead of FIN, so thousands of held connections end
/// without leaving TIME_WAIT sockets behind for the next test or benchmark stage.
fn reset_on_close(held: &[TcpStream]) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    for s in held {
        // SAFETY: setsockopt on a socket we own, with a correctly sized value.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &l as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }
}

fn bind(addr: SocketAddr) -> TcpListener {
    // std's listen backlog is 128; thousands of quick connects want the kernel maximum.
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket we own.
    unsafe { libc::listen(l.as_raw_fd(), 4096) };
    l
}

fn listen(addr: SocketAddr, n: usize) {
    let l = bind(addr);
    say(&format!(
        "READY pid={} port={}",
        std::process::id(),
        l.local_addr().unwrap().port()
    ));
    let mut held = Vec::with_capacity(n);
    while held.len() < n {
        let (s, _) = l.accept().expect("accept");
        held.push(s);
    }
    for s in &held {
        say_sock(s);
    }
    say(&format!("HELD n={n}"));
    hold();
    reset_on_close(&held);
}

fn connect(addr: SocketAddr, n: usize) {
    say(&format!("READY pid={} port=0", std::process::id()));
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}")));
    }
    for s in &held {
        say_sock(s);
    }
    say(&format!("HELD n={n}"));
    hold();
    reset_on_close(&held);
}

fn delay_server(addr: SocketAddr, delay_ms: u64) {
    let l = bind(addr);
    say(&format!(
        "READY pid={} port={}",
        std::process::id(),
        l.local_addr().unwrap().port()
    ));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    std::thread::sleep(Duration::from_millis(delay_ms));
                    let _ = s.write_all(b"y");
                }
            });
        }
    });
    hold();
}

fn burst(addr: SocketAddr, m: usize, conc: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let lines = Arc::new(Mutex::new(Vec::with_capacity(m)));
    let workers: Vec<_> = (0..conc.max(1))
        .map(|_| {
            let (next, lines) = (next.clone(), lines.clone());
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::SeqCst) < m {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    let line = format!(
                        "SOCK l={} r={}",
                        s.local_addr().unwrap(),
                        s.peer_addr().unwrap()
                    );
                    s.write_all(b"x").expect("write");
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).expect("read reply");
                    drop(s);
                    lines.lock().unwrap().push(line);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("burst worker");
    }
    for l in lines.lock().unwrap().iter() {
        say(l);
    }
    say(&format!("DONE n={m}"));
}

fn churn(me: &str, addr: &str, millis: u64) {
    say(&format!("READY pid={} port=0", std::process::id()));
    let end = Instant::now() + Duration::from_millis(millis);
    let mut running = Vec::new();
    let mut spawned = 0usize;
    while Instant::now() < end {
        while running.len() < 16 {
            running.push(
                std::process::Command::new(me)
                    .args(["churn-child", addr])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn churn-child"),
            );
            spawned += 1;
        }
        running.retain_mut(|c: &mut std::process::Child| c.try_wait().ok().flatten().is_none());
        std::thread::sleep(Duration::from_millis(1));
    }
    for mut c in running {
        let _ = c.wait();
    }
    say(&format!("DONE n={spawned}"));
}

fn churn_child(addr: SocketAddr) {
    // Hold the socket for a moment so that some polls see it owned by a dying process.
    let _s = TcpStream::connect(addr);
    std::thread::sleep(Duration::from_millis(20));
}

fn no_cmdline(addr: SocketAddr) {
    let s = TcpStream::connect(addr).expect("connect");
    // Fields 48 and 49 of /proc/self/stat are arg_start and arg_end: the argument area
    // that /proc/PID/cmdline shows. Zero it, as daemons that hide their arguments do, so
    // cmdline reads back as nothing but NUL bytes. (prctl(PR_SET_MM) would make it
    // zero-length, but needs CAP_SYS_RESOURCE, which test containers often lack.)
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
    let field = |n: usize| -> usize { after_comm.split(' ').nth(n - 3).unwrap().parse().unwrap() };
    let (arg_start, arg_end) = (field(48), field(49));
    // SAFETY: [arg_start, arg_end) is this process's own argv strings on its stack; the
    // arguments were already copied into `String`s by `main`.
    unsafe { std::ptr::write_bytes(arg_start as *mut u8, 0, arg_end - arg_start) };
    say_sock(&s);
    say(&format!("READY pid={} port=0", std::process::id()));
    hold();
}

fn leaderless(addr: SocketAddr) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let s = TcpStream::connect(addr).expect("connect");
        say_sock(&s);
        tx.send(()).unwrap();
        // Wait until the leader is a zombie before telling the test we are ready.
        let status = format!("/proc/{}/status", std::process::id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let st = std::fs::read_to_string(&status).unwrap_or_default();
            if st
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        say(&format!("READY pid={} port=0", std::process::id()));
        hold();
        std::process::exit(0);
    });
    rx.recv().unwrap();
    // SAFETY: the raw exit syscall ends this thread only; nothing on this stack is used again.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
}

fn threads(addr: SocketAddr) {
    let l = bind(addr);
    say(&format!(
        "READY pid={} port={}",
        std::process::id(),
        l.local_addr().unwrap().port()
    ));
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
        line.clear();
        std::thread::spawn(|| {
            // SAFETY: gettid(2) has no preconditions.
            say(&format!("TID {}", unsafe { libc::gettid() }));
            loop {
                std::thread::park();
            }
        });
    }
    drop(l);
}

fn half_close(addr: SocketAddr) {
    let s = TcpStream::connect(addr).expect("connect");
    say_sock(&s);
    drop(s);
    say(&format!("DONE n=1 pid={}", std::process::id()));
}

fn connect_once(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(b"x").expect("write");
    let mut b = [0u8; 1];
    let _ = s.read(&mut b);
    say_sock(&s);
}

fn say_sock_fd(s: &TcpStream, fd: i32) {
    say(&format!(
        "SOCK l={} r={} fd={fd}",
        s.local_addr().expect("local_addr"),
        s.peer_addr().expect("peer_addr")
    ));
}

fn reuse_fd(how: &str, addr: SocketAddr, file: &str) {
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
    use std::os::unix::net::UnixListener;
    let unix = (how == "recv").then(|| {
        let path = format!("{file}.sock");
        let _ = std::fs::remove_file(&path);
        UnixListener::bind(&path).expect("bind unix")
    });
    let work = move || {
        if how == "thread" {
            // SAFETY: unshare(2) of this thread's file table; no pointer arguments.
            let r = unsafe { libc::unshare(libc::CLONE_FILES) };
            assert_eq!(r, 0, "unshare(CLONE_FILES)");
        }
        let f = std::fs::File::open(file).expect("open FILE");
        let fd = f.as_raw_fd();
        say(&format!("READY pid={} port=0 fd={fd}", std::process::id()));
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("stdin");
        let s = match how {
            "close" | "thread" => {
                drop(f);
                TcpStream::connect(addr).expect("connect")
            }
            "dup2" => {
                let s = TcpStream::connect(addr).expect("connect");
                let raw = s.into_raw_fd();
                // SAFETY: both fds are ours; dup2 closes FILE's fd and puts the socket there.
                unsafe {
                    assert_eq!(libc::dup2(raw, fd), fd);
                    libc::close(raw);
                }
                std::mem::forget(f);
                // SAFETY: `fd` now holds the socket, owned from here on.
                unsafe { TcpStream::from_raw_fd(fd) }
            }
            "recv" => {
                // Accept, then close the listener and the file: as many fds as before,
                // the received socket in the file's.
                let listener = unix.expect("unix listener");
                let conn = listener.accept().expect("accept unix").0;
                drop(listener);
                drop(f);
                let got = recv_fd(&conn);
                // SAFETY: a socket fd just received, ours alone.
                unsafe { TcpStream::from_raw_fd(got) }
            }
            other => panic!("reuse-fd: unknown HOW {other}"),
        };
        say_sock_fd(&s, s.as_raw_fd());
        hold();
        reset_on_close(std::slice::from_ref(&s));
    };
    if how == "thread" {
        std::thread::scope(|sc| {
            sc.spawn(work);
        });
    } else {
        work();
    }
}

/// Receives one fd sent with SCM_RIGHTS.
fn recv_fd(conn: &std::os::unix::net::UnixStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cmsg = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    // SAFETY: recvmsg into the buffers above; the control message is read only if the
    // kernel filled one in.
    unsafe {
        assert_eq!(libc::recvmsg(conn.as_raw_fd(), &mut msg, 0), 1, "recvmsg");
        let c = libc::CMSG_FIRSTHDR(&msg);
        assert!(
            !c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS,
            "no fd received"
        );
        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32)
    }
}

fn send_fd(addr: SocketAddr, path: &str) {
    use std::os::fd::AsRawFd;
    let s = TcpStream::connect(addr).expect("connect");
    let conn = std::os::unix::net::UnixStream::connect(path).expect("connect unix");
    let mut byte = [b'x'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cmsg = [0u64; 8];
    // SAFETY: as in `recv_fd`; the control buffer is large enough for one fd.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, s.as_raw_fd());
        assert_eq!(libc::sendmsg(conn.as_raw_fd(), &msg, 0), 1, "sendmsg");
    }
    say_sock(&s);
    drop(s);
    hold();
}
