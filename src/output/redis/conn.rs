//! One connection to a Redis server: opened through the output's [`Dialer`]
//! (proxy, TLS), authenticated and on its database, then commands written in bulk and
//! replies read one at a time.

use crate::output::OutputError;
use crate::output::resp::{self, Reply};
use crate::output::stream::{Dialer, Stream};
use std::io::{self, Read, Write};

pub struct RedisConn {
    stream: Stream,
    host: String,
    dialer: Dialer,
    /// Bytes read and not yet parsed.
    rbuf: Vec<u8>,
    /// Where the unparsed bytes start in `rbuf`.
    at: usize,
}

impl RedisConn {
    /// Wraps a connected stream.
    pub fn new(stream: Stream, host: String, dialer: Dialer) -> RedisConn {
        RedisConn {
            stream,
            host,
            dialer,
            rbuf: Vec::with_capacity(64 * 1024),
            at: 0,
        }
    }

    /// Connects to `host`, sends AUTH (when `password` is set) and SELECT (when `db` is
    /// not 0), then PING, and checks their replies.
    pub fn open(
        dialer: &Dialer,
        host: &str,
        password: &str,
        db: u32,
    ) -> Result<RedisConn, OutputError> {
        let stream = dialer.connect(host)?;
        let mut c = RedisConn::new(stream, host.to_string(), dialer.clone());
        if !password.is_empty()
            && let Reply::Error(m) = c.call(&[b"AUTH", password.as_bytes()])?
        {
            return Err(c.unavailable(&format!(
                "output.redis.password: {host} refused the password: {m}"
            )));
        }
        if db != 0 {
            let n = db.to_string();
            if let Reply::Error(m) = c.call(&[b"SELECT", n.as_bytes()])? {
                return Err(c.unavailable(&format!(
                    "output.redis.db: {host} refused database {db}: {m}"
                )));
            }
        }
        // A restarted server answers LOADING until it has read its append-only file, and
        // would store the later commands of a pipeline whose first ones it refused: events
        // out of order. So no batch goes to it before it answers PING.
        if let Reply::Error(m) = c.call(&[b"PING"])? {
            return Err(c.unavailable(&format!("{host} is not ready: {m}")));
        }
        Ok(c)
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply, OutputError> {
        let mut buf = Vec::new();
        resp::command(&mut buf, args);
        self.send(&buf)
            .and_then(|_| self.reply())
            .map_err(|e| self.unavailable(&self.explain(&e)))
    }

    /// Writes commands already encoded.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads the next reply.
    pub fn reply(&mut self) -> io::Result<Reply> {
        loop {
            match resp::parse(&self.rbuf[self.at..], resp::LIMITS) {
                Ok(Some((r, n))) => {
                    self.at += n;
                    if self.at == self.rbuf.len() {
                        self.rbuf.clear();
                        self.at = 0;
                    }
                    return Ok(r);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if self.at > 0 {
                self.rbuf.drain(..self.at);
                self.at = 0;
            }
            let len = self.rbuf.len();
            self.rbuf.resize(len + 64 * 1024, 0);
            let n = match self.stream.read(&mut self.rbuf[len..]) {
                Ok(n) => n,
                Err(e) => {
                    self.rbuf.truncate(len);
                    return Err(e);
                }
            };
            self.rbuf.truncate(len + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
        }
    }

    /// An I/O error explained (TLS alerts in terms of the `ssl` settings).
    pub fn explain(&self, e: &io::Error) -> String {
        self.dialer.explain(&self.host, e)
    }

    /// "Come back later", naming the host.
    pub fn unavailable(&self, message: &str) -> OutputError {
        let message = if message.starts_with(&self.host) || message.starts_with("output.") {
            message.to_string()
        } else {
            format!("{}: {message}", self.host)
        };
        OutputError::Unavailable {
            output: "redis",
            message,
            retry_after: None,
        }
    }
}
