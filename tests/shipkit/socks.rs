//! A SOCKS5 proxy (RFC 1928, user/password of RFC 1929 when asked) on loopback for the
//! `proxy_url` tests: CONNECT only, every target it was asked for recorded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub struct Socks5 {
    pub addr: SocketAddr,
    /// `host:port` of every CONNECT, as the client named it.
    pub targets: Arc<Mutex<Vec<String>>>,
}

impl Socks5 {
    /// Listens on 127.0.0.1 (a port the system picks); `auth`: the user and password it
    /// requires.
    pub fn start(auth: Option<(&str, &str)>) -> Socks5 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        let t = targets.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (t, auth) = (t.clone(), auth.clone());
                std::thread::spawn(move || {
                    let _ = serve(s, auth, t);
                });
            }
        });
        Socks5 { addr, targets }
    }

    pub fn url(&self, user: Option<(&str, &str)>) -> String {
        match user {
            Some((u, p)) => format!("socks5://{u}:{p}@{}", self.addr),
            None => format!("socks5://{}", self.addr),
        }
    }
}

fn serve(
    mut s: TcpStream,
    auth: Option<(String, String)>,
    targets: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head)?;
    let mut methods = vec![0u8; head[1] as usize];
    s.read_exact(&mut methods)?;
    let want = if auth.is_some() { 2 } else { 0 };
    if !methods.contains(&want) {
        return s.write_all(&[5, 0xff]);
    }
    s.write_all(&[5, want])?;
    if let Some((user, password)) = auth {
        let mut b = [0u8; 2];
        s.read_exact(&mut b)?;
        let mut u = vec![0u8; b[1] as usize];
        s.read_exact(&mut u)?;
        let mut l = [0u8; 1];
        s.read_exact(&mut l)?;
        let mut p = vec![0u8; l[0] as usize];
        s.read_exact(&mut p)?;
        let ok = u == user.as_bytes() && p == password.as_bytes();
        s.write_all(&[1, if ok { 0 } else { 1 }])?;
        if !ok {
            return Ok(());
        }
    }
    let mut req = [0u8; 4];
    s.read_exact(&mut req)?;
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            s.read_exact(&mut a)?;
            std::net::Ipv4Addr::from(a).to_string()
        }
        4 => {
            let mut a = [0u8; 16];
            s.read_exact(&mut a)?;
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)?;
            let mut n = vec![0u8; l[0] as usize];
            s.read_exact(&mut n)?;
            String::from_utf8_lossy(&n).into_owned()
        }
    };
    let mut port = [0u8; 2];
    s.read_exact(&mut port)?;
    let port = u16::from_be_bytes(port);
    targets.lock().unwrap().push(format!("{host}:{port}"));
    let up = match TcpStream::connect((host.as_str(), port)) {
        Ok(u) => u,
        Err(_) => return s.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
    };
    s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])?;
    let (mut a, mut b) = (s.try_clone()?, up.try_clone()?);
    let (mut s2, mut up2) = (s, up);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut up2, &mut s2);
    let _ = s2.shutdown(std::net::Shutdown::Write);
    Ok(())
}
