//! TLS handshakes: one transaction per connection, from its first bytes to the moment both
//! sides switched to encryption (ChangeCipherSpec), as Packetbeat reports them: the hellos
//! (versions, suites, extensions, JA3), the certificates of both sides, alerts, whether
//! the session was resumed.
//!
//! Handshake messages are reassembled across records and segments (a modern ClientHello
//! is ~1.8 KB and often spans two segments, a certificate chain several) up to a bound;
//! once a side encrypts, its bytes are skipped, never buffered. The classic shape keeps
//! its ClientHello-to-ServerHello view (`tls.client`, `version`, `cipher`, `established`,
//! `alert`); the ECS shape is Packetbeat 8's (`tls.*`, `tls.detailed.*`, `tls.*.x509.*`).

pub mod ext;
pub mod names;
pub mod parser;
pub mod x509;

use super::TxnObject;
use super::txn::{self, EcsFrame};
use super::{Common, Cx, Dir, Entry, GapAction, ParseError, Parsers, TcpFactory, TcpParser, Txn};
use crate::event::Event;
use md5::{Digest, Md5};
use parser::{Hello, hs};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The registry's handle on TLS.
pub struct Proto;

/// The TLS keys of a `connbeat.protocols` entry (Packetbeat's names and meanings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// The certificates' fields (`tls.detailed.*_certificate_chain`, `tls.*.x509`).
    pub send_certificates: bool,
    /// The certificates themselves, PEM, in `tls.server.certificate_chain` /
    /// `tls.client.certificate_chain`.
    pub include_raw_certificates: bool,
    /// Everything Packetbeat puts under `tls.detailed` and `tls.*.x509` (ECS events).
    pub include_detailed_fields: bool,
    /// Hashes of the leaf certificates written to `tls.server.hash.*` / `tls.client.hash.*`.
    pub fingerprints: Vec<Fingerprint>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            send_certificates: true,
            include_raw_certificates: false,
            include_detailed_fields: true,
            fingerprints: vec![Fingerprint::Sha1],
        }
    }
}

/// A certificate hash (`fingerprints`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fingerprint {
    Md5,
    Sha1,
    Sha256,
}

impl Fingerprint {
    fn name(self) -> &'static str {
        match self {
            Fingerprint::Md5 => "md5",
            Fingerprint::Sha1 => "sha1",
            Fingerprint::Sha256 => "sha256",
        }
    }

    /// Upper-case hex of the hash of `der`.
    fn of(self, der: &[u8]) -> String {
        let digest: Vec<u8> = match self {
            Fingerprint::Md5 => Md5::digest(der).to_vec(),
            Fingerprint::Sha1 => sha1::Sha1::digest(der).to_vec(),
            Fingerprint::Sha256 => ring::digest::digest(&ring::digest::SHA256, der)
                .as_ref()
                .to_vec(),
        };
        digest.iter().map(|b| format!("{b:02X}")).collect()
    }
}

impl super::Protocol for Proto {
    const NAME: &'static str = "tls";
    type Options = Options;
    fn parsers(e: &Entry<Options>, common: &Common) -> Parsers {
        Parsers {
            tcp: Some(factory(&e.options, common)),
            udp: None,
        }
    }
    fn fuzz_options() -> Options {
        Options {
            include_raw_certificates: true,
            fingerprints: vec![Fingerprint::Md5, Fingerprint::Sha1, Fingerprint::Sha256],
            ..Options::default()
        }
    }
}

fn factory(o: &Options, _common: &Common) -> TcpFactory {
    let o = Arc::new(o.clone());
    Arc::new(move || Box::new(Tls::new(o.clone())) as Box<dyn TcpParser>)
}

/// Bound on one handshake message being reassembled.
const MAX_HANDSHAKE: usize = 64 * 1024;

/// A certificate as seen on the wire, and its fields.
#[derive(Debug)]
pub struct Cert {
    pub der: Vec<u8>,
    pub fields: x509::Cert,
}

/// What one side sent before it switched to encryption.
#[derive(Debug, Default)]
pub struct Side {
    pub hello: Option<Hello>,
    /// When the hello was complete, µs, and its size.
    pub hello_at: (u64, u64),
    /// Its certificates, leaf first (none when one of them could not be read).
    pub certs: Vec<Cert>,
    /// It asked the other side for a certificate (a server).
    pub cert_requested: bool,
    /// It sent a key exchange (so the session was not resumed).
    pub key_exchanged: bool,
    /// Plaintext alerts: (level, description, when).
    pub alerts: Vec<(u8, u8, u64)>,
    /// The OCSP response status it stapled (a server).
    pub ocsp: Option<u8>,
    /// It sent ChangeCipherSpec: what follows is encrypted.
    pub encrypted: bool,
}

/// The `tls` object of a transaction: both sides of the handshake.
#[derive(Debug, Default)]
pub struct TlsTxn {
    options: Arc<Options>,
    /// Client, server.
    pub sides: [Side; 2],
    /// The connection's first bytes, µs.
    pub first: u64,
    /// When both sides had switched to encryption.
    pub done: Option<u64>,
}

/// The classic `tls` object (the ClientHello-to-ServerHello view).
#[derive(Serialize)]
struct Classic<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<ClassicClient<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ja3: Option<String>,
    /// What the ServerHello chose.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cipher: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alpn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    established: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<ClassicAlert>,
}

/// What the ClientHello offered.
#[derive(Serialize)]
struct ClassicClient<'a> {
    version: String,
    server_name: Option<&'a str>,
    alpn: Vec<String>,
    ja3: String,
    ja3_string: String,
}

#[derive(Serialize)]
struct ClassicAlert {
    level: u8,
    description: u8,
}

/// "TLS 1.2" and friends, `0x....` otherwise (the classic shape's names).
fn classic_version(v: u16) -> String {
    match v {
        0x0300..=0x0304 => names::version(v),
        _ => format!("0x{v:04x}"),
    }
}

fn classic_cipher(id: u16) -> String {
    tls_parser::TlsCipherSuite::from_id(id)
        .map_or_else(|| format!("0x{id:04x}"), |c| c.name.to_string())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ja3_hash(h: &Hello) -> (String, String) {
    let s = h.ja3();
    (hex(&Md5::digest(s.as_bytes())), s)
}

impl TlsTxn {
    fn client_hello(&self) -> Option<&Hello> {
        self.sides[0].hello.as_ref()
    }

    fn server_hello(&self) -> Option<&Hello> {
        self.sides[1].hello.as_ref()
    }

    fn server_name(&self) -> Option<String> {
        self.client_hello()?.server_names()?.into_iter().next()
    }

    /// Packetbeat's `established`: the server switched to encryption.
    fn established(&self) -> bool {
        self.sides[1].encrypted
    }

    /// The version in use: the server's choice, else what the client said.
    fn version(&self) -> u16 {
        match (self.server_hello(), self.client_hello()) {
            (Some(s), _) => s.chosen_version(),
            (None, Some(c)) => c.version,
            _ => 0,
        }
    }

    fn resumption(&self) -> Option<&'static str> {
        let (c, s) = (self.client_hello()?, self.server_hello());
        let id_match = !c.session_id.is_empty() && Some(&c.session_id) == s.map(|s| &s.session_id);
        let ticket =
            c.ext(35).is_some_and(|t| !t.is_empty()) && s.is_some_and(|s| s.ext(35).is_some());
        let exchanged = self.sides.iter().any(|s| s.key_exchanged);
        match (exchanged, ticket, id_match) {
            (false, true, _) => Some("ticket"),
            (false, false, true) => Some("id"),
            _ => None,
        }
    }

    fn classic(&self) -> Classic<'_> {
        let ch = self.client_hello();
        let sh = self.server_hello();
        let server_name = ch.and_then(|c| {
            let d = c.ext(0)?;
            // The first host name, borrowed from the extension.
            let n = usize::from(u16::from_be_bytes([*d.get(3)?, *d.get(4)?]));
            (d[2] == 0).then(|| std::str::from_utf8(d.get(5..5 + n)?).ok())?
        });
        let client = ch.map(|c| {
            let offered = c.offered_versions().into_iter().max().unwrap_or(c.version);
            let (ja3, ja3_string) = ja3_hash(c);
            ClassicClient {
                version: classic_version(offered),
                server_name,
                alpn: c.alpn().unwrap_or_default(),
                ja3,
                ja3_string,
            }
        });
        let alert = match sh {
            Some(_) => None,
            None => self.sides[1]
                .alerts
                .first()
                .map(|&(level, description, _)| ClassicAlert { level, description }),
        };
        Classic {
            ja3: client.as_ref().map(|c| c.ja3.clone()),
            client,
            server_name,
            version: sh.map(|s| classic_version(s.chosen_version())),
            cipher: sh.map(|s| classic_cipher(s.ciphers[0])),
            alpn: sh.and_then(|s| s.alpn()?.into_iter().next()),
            established: match (sh, &alert) {
                (Some(_), _) => Some(true),
                (None, Some(_)) => Some(false),
                _ => None,
            },
            alert,
        }
    }

    /// A hello as `tls.detailed.client_hello` / `server_hello`.
    fn hello_map(h: &Hello) -> Value {
        let mut m = Map::new();
        m.insert("version".into(), json!(names::raw_version(h.version)));
        if !h.session_id.is_empty() {
            m.insert("session_id".into(), json!(hex(&h.session_id)));
        }
        if !h.random.is_empty() {
            m.insert("random".into(), json!(hex(&h.random)));
        }
        if h.client && !h.compression.is_empty() {
            let c: Vec<_> = h
                .compression
                .iter()
                .map(|c| names::compression(*c))
                .collect();
            m.insert("supported_compression_methods".into(), json!(c));
        } else {
            let c = if h.client { 0 } else { h.compression[0] };
            m.insert(
                "selected_compression_method".into(),
                json!(names::compression(c)),
            );
        }
        if let Some(e) = &h.extensions {
            m.insert("extensions".into(), Value::Object(ext::to_map(e)));
        }
        Value::Object(m)
    }

    /// The certificate fields of one side: into `obj` (`tls.client` / `tls.server`) and
    /// `detailed`.
    fn certs(&self, side: usize, obj: &mut Map<String, Value>, detailed: &mut Map<String, Value>) {
        let o = &self.options;
        let certs = &self.sides[side].certs;
        let Some(leaf) = certs.first() else { return };
        let name = ["client", "server"][side];
        let mut hash = Map::new();
        for f in &o.fingerprints {
            hash.insert(f.name().into(), json!(f.of(&leaf.der)));
        }
        if !hash.is_empty() {
            obj.insert("hash".into(), Value::Object(hash));
        }
        obj.insert(
            "subject".into(),
            json!(leaf.fields.subject.distinguished_name),
        );
        obj.insert(
            "issuer".into(),
            json!(leaf.fields.issuer.distinguished_name),
        );
        obj.insert("not_before".into(), json!(leaf.fields.not_before));
        obj.insert("not_after".into(), json!(leaf.fields.not_after));
        if o.include_raw_certificates {
            let pem: Vec<String> = certs.iter().map(|c| pem(&c.der)).collect();
            obj.insert("certificate_chain".into(), json!(pem));
        }
        if o.send_certificates && o.include_detailed_fields {
            obj.insert("x509".into(), json!(leaf.fields));
            if certs.len() > 1 {
                let chain: Vec<_> = certs[1..].iter().map(|c| &c.fields).collect();
                detailed.insert(format!("{name}_certificate_chain"), json!(chain));
            }
        }
    }
}

/// A certificate in PEM, as Packetbeat writes it (64-character lines, final newline).
fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

impl TxnObject for TlsTxn {
    fn write_classic(&self, name: &'static str, e: &mut Event) {
        e.push_field(name, &self.classic());
    }

    fn write_ecs(&self, _name: &'static str, e: &mut Event, _at: &txn::EcsAt<'_>) {
        let mut tls = Map::new();
        let mut detailed = Map::new();
        let (mut client, mut server) = (Map::new(), Map::new());
        let version = self.version();
        let (protocol, number) = names::protocol_version(version);
        tls.insert("version".into(), json!(number));
        tls.insert("version_protocol".into(), json!(protocol));
        if let Some(c) = self.client_hello() {
            detailed.insert("client_hello".into(), Self::hello_map(c));
            client.insert("ja3".into(), json!(ja3_hash(c).0));
            if let Some(n) = self.server_name() {
                client.insert("server_name".into(), json!(n));
            }
            if !c.ciphers.is_empty() {
                let names: Vec<_> = c.ciphers.iter().map(|x| names::cipher(*x)).collect();
                client.insert("supported_ciphers".into(), json!(names));
            }
        }
        if let Some(s) = self.server_hello() {
            detailed.insert("server_hello".into(), Self::hello_map(s));
            tls.insert("cipher".into(), json!(names::cipher(s.ciphers[0])));
            if let Some(p) = s.alpn().and_then(|p| p.into_iter().next()) {
                tls.insert("next_protocol".into(), json!(p));
            }
        }
        if let Some(s) = self.sides[1].ocsp {
            detailed.insert("ocsp_response".into(), json!(parser::ocsp_name(s)));
        }
        self.certs(0, &mut client, &mut detailed);
        self.certs(1, &mut server, &mut detailed);
        detailed.insert(
            "client_certificate_requested".into(),
            json!(self.sides[1].cert_requested),
        );
        let resumption = self.resumption();
        if let Some(m) = resumption {
            detailed.insert("resumption_method".into(), json!(m));
        }
        let alerts: Vec<(&str, &(u8, u8, u64))> = ["client", "server"]
            .iter()
            .zip(&self.sides)
            .flat_map(|(who, s)| s.alerts.iter().map(move |a| (*who, a)))
            .collect();
        if !alerts.is_empty() {
            let list: Vec<Value> = alerts
                .iter()
                .map(|(who, (level, code, _))| {
                    json!({
                        "severity": names::alert_level(*level),
                        "code": code,
                        "type": names::alert(*code),
                        "source": who,
                    })
                })
                .collect();
            let types: Vec<_> = alerts.iter().map(|(_, a)| names::alert(a.1)).collect();
            detailed.insert("alerts".into(), Value::Array(list));
            detailed.insert("alert_types".into(), json!(types));
        }
        detailed.insert("version".into(), json!(names::version(version)));
        tls.insert("established".into(), json!(self.established()));
        tls.insert("resumed".into(), json!(resumption.is_some()));
        if !client.is_empty() {
            tls.insert("client".into(), Value::Object(client));
        }
        if !server.is_empty() {
            tls.insert("server".into(), Value::Object(server));
        }
        if self.options.include_detailed_fields {
            tls.insert("detailed".into(), Value::Object(detailed));
        }
        e.push_field("tls", &tls);
    }

    fn ecs_frame(&self) -> Option<EcsFrame<'_>> {
        let domain = self.client_hello().and_then(|c| {
            let d = c.ext(0)?;
            let n = usize::from(u16::from_be_bytes([*d.get(3)?, *d.get(4)?]));
            (d[2] == 0).then(|| std::str::from_utf8(d.get(5..5 + n)?).ok())?
        });
        Some(EcsFrame {
            start: self.first,
            end: self.done,
            status: if self.established() {
                txn::status::OK
            } else {
                txn::status::ERROR
            },
            server_domain: domain,
        })
    }
}

/// One connection's handshake.
pub struct Tls {
    txn: TlsTxn,
    /// Handshake bytes per direction, taken out of handshake records.
    hs: [Vec<u8>; 2],
    /// The transaction was published: the rest of the connection is skipped.
    published: bool,
    started: bool,
}

impl Tls {
    fn new(options: Arc<Options>) -> Tls {
        Tls {
            txn: TlsTxn {
                options,
                ..TlsTxn::default()
            },
            hs: [Vec::new(), Vec::new()],
            published: false,
            started: false,
        }
    }

    /// One complete handshake message of direction `i`.
    fn message(&mut self, i: usize, msg: &[u8], now: u64) -> Result<(), ParseError> {
        let side = &mut self.txn.sides[i];
        let body = msg.get(4..).unwrap_or_default();
        match msg.first().copied() {
            Some(t @ (hs::CLIENT_HELLO | hs::SERVER_HELLO)) => {
                // A hello from the wrong side is not this connection's handshake.
                if (t == hs::CLIENT_HELLO) != (i == 0) {
                    return Ok(());
                }
                if side.hello.is_none() {
                    side.hello = Some(parser::hello(msg, i == 0)?);
                    side.hello_at = (now, msg.len() as u64);
                }
            }
            Some(hs::CERTIFICATE) if side.certs.is_empty() => {
                let certs: Option<Vec<Cert>> = parser::certificates(body).and_then(|list| {
                    list.into_iter()
                        .map(|der| {
                            Some(Cert {
                                fields: x509::parse(der)?,
                                der: der.to_vec(),
                            })
                        })
                        .collect()
                });
                side.certs = certs.unwrap_or_default();
            }
            Some(hs::CERTIFICATE_REQUEST) => side.cert_requested = true,
            Some(hs::SERVER_KEY_EXCHANGE | hs::CLIENT_KEY_EXCHANGE) => side.key_exchanged = true,
            Some(hs::CERTIFICATE_STATUS) => side.ocsp = parser::ocsp_status(body),
            _ => {}
        }
        Ok(())
    }

    /// Publishes the transaction (once), when there was a ClientHello. `why`: the note of
    /// a handshake that got neither a ServerHello nor an alert.
    fn publish(&mut self, why: &str, cx: &mut Cx<'_>) {
        if std::mem::replace(&mut self.published, true) {
            return;
        }
        self.hs = [Vec::new(), Vec::new()];
        let x = std::mem::take(&mut self.txn);
        let Some(ch) = &x.sides[0].hello else {
            if x.sides[1].hello.is_some() {
                txn::unmatched_response();
            }
            return;
        };
        let (start, bytes_in) = x.sides[0].hello_at;
        let mut t: Txn<TlsTxn> = Txn::new(start, bytes_in);
        t.resource = ch.server_names().and_then(|n| n.into_iter().next());
        let server = (
            x.sides[1].hello.is_some(),
            x.sides[1].alerts.first().copied(),
        );
        t.fields = x;
        match server {
            (true, _) => {
                let (end, bytes) = t.fields.sides[1].hello_at;
                txn::complete(t, end, bytes, cx);
            }
            (false, Some((_, _, at))) => {
                t.status = txn::status::ERROR;
                t.notes.push("handshake ended in an alert".into());
                txn::complete(t, at, 2, cx);
            }
            (false, None) => txn::fail(t, why, cx),
        }
    }
}

fn idx(d: Dir) -> usize {
    match d {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    }
}

impl TcpParser for Tls {
    fn parse(&mut self, dir: Dir, data: &[u8], cx: &mut Cx<'_>) -> Result<usize, ParseError> {
        let i = idx(dir);
        if self.published || self.txn.sides[i].encrypted {
            return Ok(data.len());
        }
        if !std::mem::replace(&mut self.started, true) {
            self.txn.first = cx.now;
        }
        let Some((t, body, len)) = parser::record(data)? else {
            return Ok(0);
        };
        match t {
            parser::CHANGE_CIPHER_SPEC => {
                self.txn.sides[i].encrypted = true;
                self.hs[i] = Vec::new();
                if self.txn.sides.iter().all(|s| s.encrypted) {
                    self.txn.done = Some(cx.now);
                    self.publish(txn::NOTE_CLOSED, cx);
                }
            }
            parser::HANDSHAKE => {
                if self.hs[i].len() + body.len() > MAX_HANDSHAKE
                    || parser::declared_len(&self.hs[i]).is_some_and(|n| n > MAX_HANDSHAKE)
                {
                    self.hs[i] = Vec::new();
                    return Err(ParseError("tls: handshake message too long"));
                }
                self.hs[i].extend_from_slice(body);
                let mut used = 0;
                while let Some(n) = parser::handshake_len(&self.hs[i][used..]) {
                    let msg = self.hs[i][used..used + n].to_vec();
                    used += n;
                    if let Err(e) = self.message(i, &msg, cx.now) {
                        self.hs[i] = Vec::new();
                        return Err(e);
                    }
                }
                self.hs[i].drain(..used);
            }
            parser::ALERT => {
                // Two bytes: a plaintext alert (longer ones are encrypted).
                if let [level, code] = *body {
                    self.txn.sides[i].alerts.push((level, code, cx.now));
                }
            }
            _ => {}
        }
        Ok(len)
    }

    fn gap(&mut self, dir: Dir, len: usize, cx: &mut Cx<'_>) -> GapAction {
        self.hs[idx(dir)] = Vec::new();
        // A hole in the capture ends what can be known (as Packetbeat); a parse error
        // (`len` 0) only drops what this direction held.
        if len > 0 {
            self.publish(txn::NOTE_GAP, cx);
        }
        GapAction::Reset
    }

    fn fin(&mut self, _dir: Dir, cx: &mut Cx<'_>) {
        self.publish(txn::NOTE_CLOSED, cx);
    }

    fn expire(&mut self, cx: &mut Cx<'_>) {
        if self.started && cx.now.saturating_sub(self.txn.first) >= cx.timeout {
            self.publish(txn::NOTE_TIMEOUT, cx);
        }
    }

    fn close(&mut self, cx: &mut Cx<'_>) {
        self.publish(txn::NOTE_CLOSED, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::proto::Done;
    use crate::inspect::proto::testutil::drive;
    use crate::inspect::proto::txn::{EcsSettings, Endpoints};
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

    fn record(t: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![t, 3, 3];
        r.extend((body.len() as u16).to_be_bytes());
        r.extend(body);
        r
    }

    fn message(t: u8, body: &[u8]) -> Vec<u8> {
        let n = body.len() as u32;
        let mut m = vec![t];
        m.extend(&n.to_be_bytes()[1..]);
        m.extend(body);
        m
    }

    /// A CA and a leaf it signed (DER).
    fn chain() -> (Vec<u8>, Vec<u8>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Test CA");
        ca.distinguished_name
            .push(DnType::OrganizationName, "Example, Inc");
        ca.distinguished_name.push(DnType::CountryName, "DE");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress("10.0.0.1".parse().unwrap()));
        leaf.distinguished_name
            .push(DnType::CommonName, "a.example");
        leaf.distinguished_name
            .push(DnType::OrganizationalUnitName, "Web");
        let key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&key, &issuer).unwrap();
        (leaf_cert.der().to_vec(), ca_cert.der().to_vec())
    }

    fn client_hello() -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend([1u8; 32]);
        b.extend([0, 0, 4, 0xc0, 0x2f, 0x00, 0xff, 1, 0]);
        let mut ext = vec![0, 0, 0, 14, 0, 12, 0, 0, 9];
        ext.extend(b"a.example");
        ext.extend([0, 16, 0, 5, 0, 3, 2, b'h', b'2']);
        b.extend((ext.len() as u16).to_be_bytes());
        b.extend(ext);
        message(1, &b)
    }

    fn server_flight(leaf: &[u8], ca: &[u8]) -> Vec<u8> {
        let mut sh = vec![3, 3];
        sh.extend([2u8; 32]);
        sh.extend([0, 0xc0, 0x2f, 0, 0, 9, 0, 16, 0, 5, 0, 3, 2, b'h', b'2']);
        let mut certs: Vec<u8> = Vec::new();
        for c in [leaf, ca] {
            certs.extend(&(c.len() as u32).to_be_bytes()[1..]);
            certs.extend(c);
        }
        let mut body = (certs.len() as u32).to_be_bytes()[1..].to_vec();
        body.extend(certs);
        let mut hs = message(2, &sh);
        hs.extend(message(11, &body));
        hs.extend(message(12, &[3, 0, 23]));
        hs.extend(message(14, &[]));
        // Split over two records, as servers do with long chains.
        let (a, b) = hs.split_at(hs.len() / 2);
        let mut out = record(22, a);
        out.extend(record(22, b));
        out
    }

    fn run(options: Options) -> (Done, Vec<u8>) {
        let (leaf, ca) = chain();
        let mut p = Tls::new(Arc::new(options));
        let client_hello = record(22, &client_hello());
        let server = server_flight(&leaf, &ca);
        let mut client_end = record(22, &message(16, &[0, 1, 7]));
        client_end.extend(record(20, &[1]));
        client_end.extend(record(22, &[9; 40]));
        let mut server_end = record(20, &[1]);
        server_end.extend(record(22, &[8; 40]));
        let mut out = drive(
            &mut p,
            &[
                (Dir::ToServer, &client_hello),
                (Dir::ToClient, &server),
                (Dir::ToServer, &client_end),
                (Dir::ToClient, &server_end),
                (Dir::ToServer, &record(23, &[7; 100])),
            ],
            300,
        );
        assert_eq!(out.len(), 1, "one transaction per connection");
        (out.remove(0), leaf)
    }

    fn ecs(t: Done) -> Value {
        let ep = Endpoints::new(
            "tcp",
            "10.0.0.2:50000".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        );
        let s = EcsSettings::default();
        t.into_ecs_event("tls", &ep, &s).to_value()
    }

    #[test]
    fn handshake_with_certificates_in_ecs() {
        let (t, leaf) = run(Options {
            include_raw_certificates: true,
            fingerprints: vec![Fingerprint::Sha1, Fingerprint::Md5],
            ..Options::default()
        });
        let e = ecs(t);
        assert_eq!(e["status"], "OK");
        assert_eq!(e["destination"]["domain"], "a.example");
        assert_eq!(e["server"]["domain"], "a.example");
        assert!(e["network"].get("bytes").is_none() && e["source"].get("bytes").is_none());
        // First bytes at 1.001 s, the server's ChangeCipherSpec in the 4th message.
        assert!(e["event"]["duration"].as_u64().unwrap() > 0);
        let tls = &e["tls"];
        assert_eq!(tls["version"], "1.2");
        assert_eq!(tls["version_protocol"], "tls");
        assert_eq!(tls["cipher"], "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
        assert_eq!(tls["established"], true);
        assert_eq!(tls["resumed"], false);
        assert_eq!(tls["next_protocol"], "h2");
        assert_eq!(tls["client"]["server_name"], "a.example");
        assert_eq!(
            tls["client"]["supported_ciphers"],
            json!([
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"
            ])
        );
        assert_eq!(
            tls["client"]["ja3"],
            hex(&Md5::digest(b"771,49199-255,0-16,,"))
        );
        let sha1: String = sha1::Sha1::digest(&leaf)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(tls["server"]["hash"]["sha1"], sha1);
        assert_eq!(tls["server"]["hash"]["md5"].as_str().unwrap().len(), 32);
        assert_eq!(tls["server"]["subject"], "CN=a.example,OU=Web");
        assert_eq!(tls["server"]["issuer"], "CN=Test CA,O=Example\\, Inc,C=DE");
        let chain = tls["server"]["certificate_chain"].as_array().unwrap();
        assert_eq!(chain.len(), 2);
        assert!(
            chain[0]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----\n")
        );
        let x509 = &tls["server"]["x509"];
        assert_eq!(x509["subject"]["common_name"], "a.example");
        assert_eq!(x509["subject"]["organizational_unit"], "Web");
        assert_eq!(x509["issuer"]["organization"], "Example, Inc");
        assert_eq!(x509["issuer"]["country"], "DE");
        assert_eq!(x509["alternative_names"], json!(["a.example", "10.0.0.1"]));
        assert_eq!(x509["public_key_algorithm"], "ECDSA");
        assert_eq!(x509["public_key_size"], 256);
        assert_eq!(x509["signature_algorithm"], "ECDSA-SHA256");
        assert_eq!(x509["version_number"], 3);
        let d = &tls["detailed"];
        assert_eq!(d["version"], "TLS 1.2");
        assert_eq!(d["client_certificate_requested"], false);
        assert_eq!(d["client_hello"]["version"], "3.3");
        assert_eq!(d["client_hello"]["random"], hex(&[1; 32]));
        assert_eq!(
            d["client_hello"]["supported_compression_methods"],
            json!(["NULL"])
        );
        assert_eq!(
            d["client_hello"]["extensions"]["server_name_indication"],
            json!(["a.example"])
        );
        assert_eq!(d["server_hello"]["selected_compression_method"], "NULL");
        let ca = &d["server_certificate_chain"];
        assert_eq!(ca[0]["subject"]["common_name"], "Test CA");
        assert_eq!(
            ca[0]["subject"]["distinguished_name"],
            "CN=Test CA,O=Example\\, Inc,C=DE"
        );
    }

    #[test]
    fn options_trim_the_ecs_object() {
        let (t, _) = run(Options {
            include_detailed_fields: false,
            ..Options::default()
        });
        let tls = ecs(t)["tls"].clone();
        assert!(tls.get("detailed").is_none() && tls["server"].get("x509").is_none());
        assert!(tls["server"].get("certificate_chain").is_none());
        assert_eq!(
            tls["server"]["hash"].as_object().unwrap().len(),
            1,
            "sha1 only"
        );
        assert_eq!(tls["server"]["subject"], "CN=a.example,OU=Web");
        let (t, _) = run(Options {
            send_certificates: false,
            ..Options::default()
        });
        let tls = ecs(t)["tls"].clone();
        assert!(tls["server"].get("x509").is_none());
        assert!(tls["detailed"].get("server_certificate_chain").is_none());
        assert!(tls["detailed"].get("client_hello").is_some());
    }

    #[test]
    fn classic_shape_is_the_hello_exchange() {
        let (t, _) = run(Options::default());
        assert_eq!(t.status, "OK");
        let o = t.object();
        assert_eq!(o["version"], "TLS 1.2");
        assert_eq!(o["cipher"], "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
        assert_eq!(o["established"], true);
        assert_eq!(o["alpn"], "h2");
        assert_eq!(o["server_name"], "a.example");
        assert_eq!(o["client"]["server_name"], "a.example");
        assert_eq!(o["client"]["version"], "TLS 1.2");
        assert_eq!(o["client"]["alpn"], json!(["h2"]));
        assert!(o.get("detailed").is_none() && o.get("alert").is_none());
    }

    #[test]
    fn alert_and_unfinished_handshakes() {
        let mut p = Tls::new(Arc::new(Options::default()));
        let out = drive(
            &mut p,
            &[
                (Dir::ToServer, &record(22, &client_hello())),
                (Dir::ToClient, &record(21, &[2, 40])),
            ],
            7,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, "Error");
        assert_eq!(
            out[0].object()["alert"],
            json!({"level": 2, "description": 40})
        );
        let e = ecs(out.into_iter().next().unwrap());
        assert_eq!(e["status"], "Error");
        assert_eq!(e["tls"]["established"], false);
        assert!(e["event"].get("end").is_none());
        assert_eq!(
            e["tls"]["detailed"]["alerts"],
            json!([{"severity": "fatal", "code": 40, "type": "handshake_failure", "source": "server"}])
        );
        assert_eq!(
            e["tls"]["detailed"]["alert_types"],
            json!(["handshake_failure"])
        );
        // Not TLS at all: an error for the stream layer, no transaction.
        let mut p = Tls::new(Arc::new(Options::default()));
        let out = drive(&mut p, &[(Dir::ToServer, b"GET / HTTP/1.1\r\n\r\n")], 100);
        assert!(out.is_empty());
    }
}
