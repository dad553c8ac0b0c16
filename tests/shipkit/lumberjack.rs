//! A Beats-protocol (lumberjack v2) receiver for the Logstash output tests: windows, JSON
//! and zlib-compressed frames, plain or TLS (rustls, optionally requiring a client
//! certificate). What it does with each window is scripted: acknowledge, delay, close the
//! connection in the middle of the window, or acknowledge part of it then close. Only
//! acknowledged events are kept (what a Logstash that died before acknowledging would
//! not have passed on), so "nothing lost, nothing twice" can be checked exactly.
//!
//! Written here rather than on the `lumberjack-protocol` crate: its server acknowledges
//! a batch as a whole, so it cannot answer a partial window or close mid-window on
//! command, which is what these tests are about.
#![allow(dead_code)]

use flate2::read::ZlibDecoder;
use std::collections::VecDeque;
use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the receiver does with the next window.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Acknowledge the whole window once it is read.
    Ack,
    /// Wait, then acknowledge.
    Delay(Duration),
    /// Close the connection after reading this many events of the window.
    CloseAfter(usize),
    /// Acknowledge this many events, then close the connection.
    PartialThenClose(u32),
    /// Acknowledge every `n` events on the way (partial ACKs), then the whole window.
    AckEvery(u32),
    /// Acknowledge once this many windows in all have been announced, on any
    /// connection (closing after 20 s without them): a client that waits for this ACK
    /// before it sends its next window elsewhere never gets it.
    AckWhenWindows(usize),
}

#[derive(Default)]
struct Shared {
    /// Acknowledged events, in order.
    events: Mutex<Vec<serde_json::Value>>,
    script: Mutex<VecDeque<Act>>,
    /// The size of every window announced.
    windows: Mutex<Vec<u32>>,
    connections: AtomicUsize,
    /// The sockets of open connections, shut down by `kill`.
    open: Mutex<Vec<TcpStream>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on 127.0.0.1 (a port chosen by the system).
    pub fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut r = Receiver {
            addr: listener.local_addr().unwrap(),
            tls,
            shared: Arc::new(Shared::default()),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        self.stop = Arc::new(AtomicBool::new(false));
        let (stop, shared, tls) = (self.stop.clone(), self.shared.clone(), self.tls.clone());
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        shared.connections.fetch_add(1, Ordering::Relaxed);
                        shared.open.lock().unwrap().push(s.try_clone().unwrap());
                        let (shared, tls) = (shared.clone(), tls.clone());
                        std::thread::spawn(move || {
                            // The socket's clone in `open` would keep it open: shut it down.
                            match tls {
                                None => {
                                    let mut s = s;
                                    let _ = connection(&mut s, &shared);
                                    let _ = s.shutdown(std::net::Shutdown::Both);
                                }
                                Some(cfg) => {
                                    let conn = rustls::ServerConnection::new(cfg).unwrap();
                                    let mut t = rustls::StreamOwned::new(conn, s);
                                    let _ = connection(&mut t, &shared);
                                    let _ = t.sock.shutdown(std::net::Shutdown::Both);
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    /// The next windows are handled so, in order; then `Ack` again.
    pub fn script(&self, acts: impl IntoIterator<Item = Act>) {
        self.shared.script.lock().unwrap().extend(acts);
    }

    /// The events acknowledged so far, in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.shared.events.lock().unwrap().clone()
    }

    pub fn event_count(&self) -> usize {
        self.shared.events.lock().unwrap().len()
    }

    pub fn windows(&self) -> Vec<u32> {
        self.shared.windows.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Stops listening and cuts every connection, like a crash: windows not yet
    /// acknowledged are lost.
    pub fn kill(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        for s in self.shared.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let listener = TcpListener::bind(self.addr).unwrap();
        self.serve(listener);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

fn u32_of<R: Read>(r: &mut R) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// A window being read.
#[derive(Default)]
struct Window {
    size: u32,
    got: Vec<serde_json::Value>,
    act: Option<Act>,
}

fn ack<W: Write>(w: &mut W, seq: u32) -> std::io::Result<()> {
    let mut f = vec![b'2', b'A'];
    f.extend_from_slice(&seq.to_be_bytes());
    w.write_all(&f)?;
    w.flush()
}

/// Serves one connection until it closes or a scripted close.
fn connection<S: Read + Write>(s: &mut S, shared: &Shared) -> std::io::Result<()> {
    let mut w = Window::default();
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head)?;
        if !frame(head, s, &mut w, shared)? {
            return Ok(());
        }
    }
}

/// Handles one frame of the connection `r`, answering on it. False: close it.
fn frame<S: Read + Write>(
    head: [u8; 2],
    r: &mut S,
    w: &mut Window,
    shared: &Shared,
) -> std::io::Result<bool> {
    assert_eq!(head[0], b'2', "protocol version");
    match head[1] {
        b'W' => {
            *w = Window {
                size: u32_of(r)?,
                ..Default::default()
            };
            shared.windows.lock().unwrap().push(w.size);
            w.act = Some(
                shared
                    .script
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or(Act::Ack),
            );
            Ok(true)
        }
        b'C' => {
            let len = u32_of(r)? as usize;
            let mut data = vec![0u8; len];
            r.read_exact(&mut data)?;
            let mut inner = Vec::new();
            ZlibDecoder::new(&data[..]).read_to_end(&mut inner)?;
            let mut cur = Cursor::new(inner);
            let out = r;
            while (cur.position() as usize) < cur.get_ref().len() {
                let mut h = [0u8; 2];
                cur.read_exact(&mut h)?;
                if !inner_frame(h, &mut cur, out, w, shared)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        _ => {
            let mut out = Vec::new();
            let keep = json_frame(head, r, &mut out, w, shared)?;
            r.write_all(&out)?;
            r.flush()?;
            Ok(keep)
        }
    }
}

fn inner_frame<S: Write>(
    head: [u8; 2],
    cur: &mut Cursor<Vec<u8>>,
    out: &mut S,
    w: &mut Window,
    shared: &Shared,
) -> std::io::Result<bool> {
    let mut acks = Vec::new();
    let keep = json_frame(head, cur, &mut acks, w, shared)?;
    out.write_all(&acks)?;
    out.flush()?;
    Ok(keep)
}

/// A `J` frame: the event joins the window; at the window's end, the scripted act. ACKs
/// go to `acks`.
fn json_frame<R: Read>(
    head: [u8; 2],
    r: &mut R,
    acks: &mut Vec<u8>,
    w: &mut Window,
    shared: &Shared,
) -> std::io::Result<bool> {
    assert_eq!(head[1], b'J', "frame type {:?}", head[1] as char);
    let seq = u32_of(r)?;
    let len = u32_of(r)? as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    assert_eq!(
        seq as usize,
        w.got.len() + 1,
        "sequence numbers count up from 1"
    );
    w.got
        .push(serde_json::from_slice(&payload).expect("a JSON event"));
    let n = w.got.len();
    let commit = |upto: usize, w: &Window| {
        shared
            .events
            .lock()
            .unwrap()
            .extend(w.got[..upto].iter().cloned());
    };
    match w.act.clone().unwrap_or(Act::Ack) {
        Act::CloseAfter(k) if n >= k => return Ok(false),
        Act::AckEvery(k) if n.is_multiple_of(k as usize) && n < w.size as usize => {
            ack(acks, n as u32)?;
        }
        _ => {}
    }
    if n < w.size as usize {
        return Ok(true);
    }
    match w.act.take().unwrap_or(Act::Ack) {
        Act::Ack | Act::AckEvery(_) | Act::CloseAfter(_) => {}
        Act::Delay(d) => std::thread::sleep(d),
        Act::AckWhenWindows(k) => {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while shared.windows.lock().unwrap().len() < k {
                if std::time::Instant::now() > deadline {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Act::PartialThenClose(k) => {
            commit(k as usize, w);
            ack(acks, k)?;
            return Ok(false);
        }
    }
    commit(n, w);
    ack(acks, n as u32)?;
    Ok(true)
}
