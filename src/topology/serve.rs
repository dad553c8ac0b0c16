//! `--serve ADDR`: the live page at `/` and its graph at `GET /graph`, answered from the
//! graph as it is when asked. A plain HTTP/1.1 server on its own thread: one request
//! per connection, a few small documents, no keep-alive.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// What the server answers: `(content type, body)` for a path, or None (404).
pub type Answer = Arc<dyn Fn(&str) -> Option<(&'static str, String)> + Send + Sync>;

/// Binds `addr` and answers on a background thread.
pub fn start(addr: &str, answer: Answer) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("topology-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = handle(stream, &answer) {
                    tracing::debug!("topology http: {e}");
                }
            }
        })?;
    Ok(local)
}

fn handle(mut s: TcpStream, answer: &Answer) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    let path = loop {
        let r = s.read(&mut buf[n..])?;
        if r == 0 {
            return Ok(());
        }
        n += r;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Complete(_)) => {
                if req.method != Some("GET") {
                    return respond(&mut s, "405 Method Not Allowed", "text/plain", "GET only\n");
                }
                break req.path.unwrap_or("/").to_string();
            }
            Ok(httparse::Status::Partial) if n < buf.len() => continue,
            _ => return respond(&mut s, "400 Bad Request", "text/plain", "bad request\n"),
        }
    };
    let path = path.split('?').next().unwrap_or("/");
    match answer(path) {
        Some((ctype, body)) => respond(&mut s, "200 OK", ctype, &body),
        None => respond(
            &mut s,
            "404 Not Found",
            "text/plain",
            "not found; try / or /graph\n",
        ),
    }
}

fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body.as_bytes())
}
