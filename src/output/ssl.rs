//! The `ssl` block of the HTTP, Elasticsearch, Redis and Logstash outputs, turned into a
//! rustls client configuration: trusted CAs (`certificate_authorities`, else the system
//! store), a client certificate (`certificate` + `key`, an encrypted PKCS#8 key with
//! `key_passphrase`), `verification_mode` (`full`/`strict`: chain and host name;
//! `certificate`: chain only; `none`: nothing, for tests), `supported_protocols` and
//! `cipher_suites`. The Kafka output maps the same block onto librdkafka settings instead
//! (see `kafka/client.rs`).
//!
//! Every error names the setting at fault (`output.http.ssl.certificate_authorities`, ...).

use super::OutputError;
use super::network::TlsVersion;
use crate::config::{SslConfig, VerificationMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// Builds the TLS client configuration of the `ssl` block at `key` (e.g.
/// `output.http.ssl`); `None` (no block) means system CAs and full verification.
pub fn client_config(ssl: Option<&SslConfig>, key: &str) -> Result<ClientConfig, OutputError> {
    let default = SslConfig::default();
    let ssl = ssl.unwrap_or(&default);
    let mut provider = rustls::crypto::ring::default_provider();
    if !ssl.cipher_suites.is_empty() {
        provider.cipher_suites = cipher_suites(&ssl.cipher_suites, &provider, key)?;
    }
    let provider = Arc::new(provider);
    let versions = protocol_versions(&ssl.supported_protocols, key)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| {
            cfg(
                &format!("{key}.cipher_suites"),
                format!("no cipher suite left for the versions of ssl.supported_protocols: {e}"),
            )
        })?;
    let roots = Arc::new(roots(ssl, key)?);
    let builder = match ssl.verification_mode {
        VerificationMode::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
        VerificationMode::Certificate => {
            let inner =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| cfg(&format!("{key}.certificate_authorities"), e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
        }
        VerificationMode::Full | VerificationMode::Strict => builder.with_root_certificates(roots),
    };
    let config = if ssl.certificate.is_empty() && ssl.key.is_empty() {
        builder.with_no_client_auth()
    } else {
        if ssl.key.is_empty() && holds_private_key(&ssl.certificate) {
            return Err(cfg(
                &format!("{key}.certificate"),
                format!(
                    "{} holds a private key, not a certificate, and ssl.key is empty: \
                     the key belongs under {key}.key (was ssl.certificate written twice?)",
                    shown(&ssl.certificate)
                ),
            ));
        }
        if ssl.certificate.is_empty() || ssl.key.is_empty() {
            return Err(cfg(
                &format!("{key}.certificate"),
                "a client certificate needs both ssl.certificate and ssl.key".into(),
            ));
        }
        let chain = certs(&ssl.certificate, &format!("{key}.certificate"))?;
        let pk = private_key(&ssl.key, &format!("{key}.key"), &ssl.key_passphrase)?;
        builder.with_client_auth_cert(chain, pk).map_err(|e| {
            cfg(
                &format!("{key}.key"),
                format!("does not match ssl.certificate: {e}"),
            )
        })?
    };
    Ok(config)
}

/// `supported_protocols`: Beats' names (`TLSv1.2`, `TLSv1.3`); empty means both. rustls
/// has no TLS 1.0 or 1.1, which are refused by name.
fn protocol_versions(
    versions: &[TlsVersion],
    key: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, OutputError> {
    if versions.is_empty() {
        return Ok(rustls::DEFAULT_VERSIONS.to_vec());
    }
    versions
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => Ok(&rustls::version::TLS12),
            TlsVersion::Tls13 => Ok(&rustls::version::TLS13),
            TlsVersion::Ssl3 | TlsVersion::Tls10 | TlsVersion::Tls11 => Err(cfg(
                &format!("{key}.supported_protocols"),
                format!(
                    "{} is not supported (insecure); use TLSv1.2 or TLSv1.3",
                    v.name()
                ),
            )),
        })
        .collect()
}

/// `cipher_suites` by Beats' names (`ECDHE-ECDSA-AES-128-GCM-SHA256`), matched against
/// rustls' suites (`TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`) with separators, `TLS`,
/// `WITH` and ChaCha's implied `SHA256` ignored.
fn cipher_suites(
    names: &[String],
    provider: &rustls::crypto::CryptoProvider,
    key: &str,
) -> Result<Vec<rustls::SupportedCipherSuite>, OutputError> {
    fn norm(name: &str) -> String {
        let up = name.to_ascii_uppercase().replace(['-', '_'], " ");
        let words: Vec<&str> = up
            .split_whitespace()
            .filter(|w| !matches!(*w, "TLS" | "TLS13" | "WITH"))
            .collect();
        let s = words.concat();
        match s.strip_suffix("SHA256") {
            Some(base) if s.contains("CHACHA20") => base.to_string(),
            _ => s,
        }
    }
    names
        .iter()
        .map(|n| {
            provider
                .cipher_suites
                .iter()
                .find(|c| norm(&format!("{:?}", c.suite())) == norm(n))
                .copied()
                .ok_or_else(|| {
                    let known: Vec<String> = provider
                        .cipher_suites
                        .iter()
                        .map(|c| format!("{:?}", c.suite()))
                        .collect();
                    cfg(
                        &format!("{key}.cipher_suites"),
                        format!("unknown cipher suite {n:?}; known: {}", known.join(", ")),
                    )
                })
        })
        .collect()
}

/// Whether a PEM source holds a private key and no certificate.
fn holds_private_key(source: &str) -> bool {
    let pem = if source.trim_start().starts_with("-----BEGIN") {
        source.as_bytes().to_vec()
    } else {
        std::fs::read(source).unwrap_or_default()
    };
    CertificateDer::pem_slice_iter(&pem).next().is_none()
        && PrivateKeyDer::from_pem_slice(&pem).is_ok()
}

fn cfg(key: &str, msg: String) -> OutputError {
    OutputError::Config(format!("{key}: {msg}"))
}

/// The trusted CAs: the configured files (or inline PEM), else the system store.
fn roots(ssl: &SslConfig, key: &str) -> Result<RootCertStore, OutputError> {
    let mut store = RootCertStore::empty();
    let ca_key = format!("{key}.certificate_authorities");
    if ssl.certificate_authorities.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for c in found.certs {
            let _ = store.add(c);
        }
        if store.is_empty() {
            return Err(cfg(
                &ca_key,
                "no system CA certificates found (install ca-certificates) and none configured"
                    .into(),
            ));
        }
        return Ok(store);
    }
    for ca in &ssl.certificate_authorities {
        for c in certs(ca, &ca_key)? {
            store.add(c).map_err(|e| {
                cfg(
                    &ca_key,
                    format!("{}: not a usable CA certificate: {e}", shown(ca)),
                )
            })?;
        }
    }
    Ok(store)
}

/// What to show of a file name or inline PEM in an error.
fn shown(source: &str) -> String {
    if source.trim_start().starts_with("-----BEGIN") {
        "inline PEM".into()
    } else {
        source.to_string()
    }
}

/// Certificates from a PEM file, or from inline PEM text.
pub fn certs(source: &str, key: &str) -> Result<Vec<CertificateDer<'static>>, OutputError> {
    let pem = read_pem(source, key)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| cfg(key, format!("{}: bad PEM: {e}", shown(source))))?;
    if certs.is_empty() {
        return Err(cfg(
            key,
            format!("{}: no certificate found in it", shown(source)),
        ));
    }
    Ok(certs)
}

/// The private key of `source`; an encrypted PKCS#8 key (`ENCRYPTED PRIVATE KEY`, e.g.
/// `openssl pkcs8 -topk8 -v2 aes-256-cbc`) is decrypted with `passphrase`.
fn private_key(
    source: &str,
    key: &str,
    passphrase: &str,
) -> Result<PrivateKeyDer<'static>, OutputError> {
    let pem = read_pem(source, key)?;
    let pass_key = format!("{key}_passphrase");
    if let Some(der) = pem_block(&String::from_utf8_lossy(&pem), "ENCRYPTED PRIVATE KEY") {
        if passphrase.is_empty() {
            return Err(cfg(
                &pass_key,
                format!("{} is encrypted: set {pass_key}", shown(source)),
            ));
        }
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| cfg(key, format!("{}: not a PKCS#8 key: {e}", shown(source))))?;
        let doc = info.decrypt(passphrase).map_err(|e| {
            cfg(
                &pass_key,
                format!(
                    "cannot decrypt {} ({e}): is it the right passphrase?",
                    shown(source)
                ),
            )
        })?;
        return Ok(PrivateKeyDer::Pkcs8(doc.as_bytes().to_vec().into()));
    }
    if String::from_utf8_lossy(&pem).contains("Proc-Type: 4,ENCRYPTED") {
        return Err(cfg(
            key,
            format!(
                "{} is encrypted in OpenSSL's old format, which is not read: convert it with \
                 `openssl pkcs8 -topk8 -v2 aes-256-cbc` and set {pass_key}",
                shown(source)
            ),
        ));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        cfg(
            key,
            format!("{}: no usable private key: {e}", shown(source)),
        )
    })
}

/// The DER bytes of the first PEM block labelled `label`.
fn pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn read_pem(source: &str, key: &str) -> Result<Vec<u8>, OutputError> {
    if source.trim_start().starts_with("-----BEGIN") {
        return Ok(source.as_bytes().to_vec());
    }
    std::fs::read(source).map_err(|e| cfg(key, format!("cannot read {source}: {e}")))
}

/// `verification_mode: certificate`: the chain must lead to a trusted CA; the host name is
/// not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `verification_mode: none`: any certificate is accepted (the handshake signatures are
/// still checked, so the connection is encrypted, just not authenticated).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
