//! The `ssl` block of the HTTP and Elasticsearch outputs, turned into a rustls client
//! configuration: trusted CAs (`certificate_authorities`, else the system store), a client
//! certificate (`certificate` + `key`) and `verification_mode` (`full`/`strict`: chain and
//! host name; `certificate`: chain only; `none`: nothing, for tests). The Kafka output maps
//! the same block onto librdkafka settings instead (see `kafka.rs`).
//!
//! Every error names the setting at fault (`output.http.ssl.certificate_authorities`, ...).

use super::OutputError;
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg(key, format!("TLS setup: {e}")))?;
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
        if ssl.certificate.is_empty() || ssl.key.is_empty() {
            return Err(cfg(
                &format!("{key}.certificate"),
                "a client certificate needs both ssl.certificate and ssl.key".into(),
            ));
        }
        let chain = certs(&ssl.certificate, &format!("{key}.certificate"))?;
        let pk = private_key(&ssl.key, &format!("{key}.key"))?;
        builder.with_client_auth_cert(chain, pk).map_err(|e| {
            cfg(
                &format!("{key}.key"),
                format!("does not match ssl.certificate: {e}"),
            )
        })?
    };
    Ok(config)
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

fn private_key(source: &str, key: &str) -> Result<PrivateKeyDer<'static>, OutputError> {
    let pem = read_pem(source, key)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        cfg(
            key,
            format!("{}: no usable private key: {e}", shown(source)),
        )
    })
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
