//! A real HTTP/1.1 server on loopback for the output tests: plain or TLS (certificates
//! from a CA the test generates with rcgen, optionally requiring a client certificate),
//! keep-alive, Content-Length and chunked bodies, gzip request bodies decoded. Each request
//! is recorded and answered by a handler the test provides, so a test can answer 500, 429
//! or 413 on demand, or play an Elasticsearch `_bulk` endpoint.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, gunzipped when it came with `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// The body's size on the wire.
    pub wire_len: usize,
    /// The status the server answered with.
    pub answered: u16,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// A reply: status, extra headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: vec![],
        }
    }
    pub fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(v).unwrap(),
        }
    }
    pub fn with_header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn with_body(mut self, b: &str) -> Reply {
        self.body = b.as_bytes().to_vec();
        self
    }
}

pub type Handler = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

/// Certificates of a test PKI, written as PEM files in a directory.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate,
    /// all signed by the CA.
    pub fn generate(dir: &Path, tag: &str) -> Pki {
        Pki::generate_for(dir, tag, &["127.0.0.1", "localhost"])
    }

    /// Like [`Pki::generate`], the server certificate valid for `names` only.
    pub fn generate_for(dir: &Path, tag: &str, names: &[&str]) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("connbeat test CA {tag}"));
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            let cert = p.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) =
            leaf(names.iter().map(|n| n.to_string()).collect(), "server");
        let (client_pem, client_key) = leaf(vec!["client".into()], "client");
        let w = |name: &str, text: &str| {
            let p = dir.join(format!("{tag}-{name}"));
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            ca: w("ca.pem", &ca_cert.pem()),
            server_cert: w("server.pem", &server_pem),
            server_key: w("server.key", &server_key),
            client_cert: w("client.pem", &client_pem),
            client_key: w("client.key", &client_key),
        }
    }

    /// A rustls server configuration; with `client_auth`, a client certificate signed by the
    /// CA is required.
    pub fn server_config(&self, client_auth: bool) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.server_cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(&self.server_key).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&self.ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(v)
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(builder.with_single_cert(certs, key).unwrap())
    }
}

/// The running server; stops accepting when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Starts on 127.0.0.1:`port` (0: any free port).
    pub fn start(port: u16, tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let (h, r, s, tls) = (handler.clone(), r.clone(), s.clone(), tls.clone());
                        std::thread::spawn(move || serve_conn(stream, tls, h, r, s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            addr,
            requests,
            stop,
        }
    }

    pub fn url(&self, https: bool) -> String {
        format!("{}://{}", if https { "https" } else { "http" }, self.addr)
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_conn(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    requests: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    match tls {
        Some(cfg) => {
            let conn = match rustls::ServerConnection::new(cfg) {
                Ok(c) => c,
                Err(_) => return,
            };
            let s = rustls::StreamOwned::new(conn, stream);
            serve_http(s, handler, requests, stop);
        }
        None => serve_http(stream, handler, requests, stop),
    }
}

fn serve_http<S: Read + Write>(
    stream: S,
    handler: Handler,
    requests: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
) {
    let mut r = BufReader::new(stream);
    loop {
        let req = match read_request(&mut r, &stop) {
            Some(req) => req,
            None => return,
        };
        let mut req = req;
        let reply = handler(&req);
        req.answered = reply.status;
        requests.lock().unwrap().push(req);
        let mut out = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let w = r.get_mut();
        if w.write_all(out.as_bytes()).is_err()
            || w.write_all(&reply.body).is_err()
            || w.flush().is_err()
        {
            return;
        }
    }
}

/// Reads one request; None at end of connection, on error, or when the server stops.
fn read_request<S: Read>(r: &mut BufReader<S>, stop: &AtomicBool) -> Option<Req> {
    let mut line = String::new();
    // Wait for the request line, giving up when the server stops.
    loop {
        match r.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => break,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        read_line_patiently(r, &mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            read_line_patiently(r, &mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            read_exact_patiently(r, &mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; n];
        read_exact_patiently(r, &mut body)?;
    }
    let wire_len = body.len();
    if get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut d = flate2::read::GzDecoder::new(&body[..]);
        let mut plain = Vec::new();
        d.read_to_end(&mut plain).ok()?;
        body = plain;
    }
    Some(Req {
        method,
        path,
        headers,
        body,
        wire_len,
        answered: 0,
    })
}

fn read_line_patiently<S: Read>(r: &mut BufReader<S>, line: &mut String) -> Option<()> {
    for _ in 0..100 {
        match r.read_line(line) {
            Ok(0) => return None,
            Ok(_) => return Some(()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return None,
        }
    }
    None
}

fn read_exact_patiently<S: Read>(r: &mut BufReader<S>, buf: &mut [u8]) -> Option<()> {
    let mut got = 0;
    let mut idle = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return None,
            Ok(n) => {
                got += n;
                idle = 0;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                idle += 1;
                if idle > 100 {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    Some(())
}
