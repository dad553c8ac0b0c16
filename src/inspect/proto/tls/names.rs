//! The names TLS events give to numbers on the wire, as Packetbeat 8 writes them: IANA's
//! names where IANA has one, `(unknown:0x....)` otherwise. Cipher suites come from
//! `tls-parser`'s IANA table, plus the few pre-IANA suites Packetbeat also names.

use std::borrow::Cow;

/// A 16-bit value with no name.
fn unknown16(v: u16) -> Cow<'static, str> {
    Cow::Owned(format!("(unknown:0x{v:04x})"))
}

/// An 8-bit value with no name.
fn unknown8(v: u8) -> Cow<'static, str> {
    Cow::Owned(format!("(unknown:0x{v:02x})"))
}

/// A cipher suite's name.
pub fn cipher(id: u16) -> Cow<'static, str> {
    if let Some(c) = tls_parser::TlsCipherSuite::from_id(id) {
        return Cow::Borrowed(c.name);
    }
    let legacy = match id {
        0x001C => "SSL_FORTEZZA_KEA_WITH_NULL_SHA",
        0x001D => "SSL_FORTEZZA_KEA_WITH_FORTEZZA_CBC_SHA",
        0x0060 => "TLS_RSA_EXPORT1024_WITH_RC4_56_MD5",
        0x0061 => "TLS_RSA_EXPORT1024_WITH_RC2_CBC_56_MD5",
        0x0062 => "TLS_RSA_EXPORT1024_WITH_DES_CBC_SHA",
        0x0063 => "TLS_DHE_DSS_EXPORT1024_WITH_DES_CBC_SHA",
        0x0064 => "TLS_RSA_EXPORT1024_WITH_RC4_56_SHA",
        0x0065 => "TLS_DHE_DSS_EXPORT1024_WITH_RC4_56_SHA",
        0x0066 => "TLS_DHE_DSS_WITH_RC4_128_SHA",
        0x0080 => "TLS_GOSTR341094_WITH_28147_CNT_IMIT",
        0x0081 => "TLS_GOSTR341001_WITH_28147_CNT_IMIT",
        0x0082 => "TLS_GOSTR341094_WITH_NULL_GOSTR3411",
        0x0083 => "TLS_GOSTR341001_WITH_NULL_GOSTR3411",
        0xFEFE | 0xFFE1 => "SSL_RSA_FIPS_WITH_DES_CBC_SHA",
        0xFEFF | 0xFFE0 => "SSL_RSA_FIPS_WITH_3DES_EDE_CBC_SHA",
        _ => return unknown16(id),
    };
    Cow::Borrowed(legacy)
}

/// A supported group (named curve or finite-field group).
pub fn group(id: u16) -> Cow<'static, str> {
    const SECT: [&str; 30] = [
        "sect163k1",
        "sect163r1",
        "sect163r2",
        "sect193r1",
        "sect193r2",
        "sect233k1",
        "sect233r1",
        "sect239k1",
        "sect283k1",
        "sect283r1",
        "sect409k1",
        "sect409r1",
        "sect571k1",
        "sect571r1",
        "secp160k1",
        "secp160r1",
        "secp160r2",
        "secp192k1",
        "secp192r1",
        "secp224k1",
        "secp224r1",
        "secp256k1",
        "secp256r1",
        "secp384r1",
        "secp521r1",
        "brainpoolP256r1",
        "brainpoolP384r1",
        "brainpoolP512r1",
        "x25519",
        "x448",
    ];
    let name = match id {
        1..=30 => SECT[usize::from(id) - 1],
        256 => "ffdhe2048",
        257 => "ffdhe3072",
        258 => "ffdhe4096",
        259 => "ffdhe6144",
        260 => "ffdhe8192",
        0xFF01 => "arbitrary_explicit_prime_curves",
        0xFF02 => "arbitrary_explicit_char2_curves",
        _ => return unknown16(id),
    };
    Cow::Borrowed(name)
}

/// A signature scheme of `signature_algorithms`.
pub fn signature_scheme(id: u16) -> Cow<'static, str> {
    let name = match id {
        0x0401 => "rsa_pkcs1_sha256",
        0x0501 => "rsa_pkcs1_sha384",
        0x0601 => "rsa_pkcs1_sha512",
        0x0403 => "ecdsa_secp256r1_sha256",
        0x0503 => "ecdsa_secp384r1_sha384",
        0x0603 => "ecdsa_secp521r1_sha512",
        0x0804 => "rsa_pss_sha256",
        0x0805 => "rsa_pss_sha384",
        0x0806 => "rsa_pss_sha512",
        0x0807 => "ed25519",
        0x0808 => "ed448",
        0x0201 => "rsa_pkcs1_sha1",
        0x0203 => "ecdsa_sha1",
        _ => return unknown16(id),
    };
    Cow::Borrowed(name)
}

/// A compression method.
pub fn compression(id: u8) -> Cow<'static, str> {
    match id {
        0 => Cow::Borrowed("NULL"),
        1 => Cow::Borrowed("DEFLATE"),
        64 => Cow::Borrowed("LZS"),
        _ => unknown8(id),
    }
}

/// An EC point format.
pub fn ec_point_format(id: u8) -> Cow<'static, str> {
    match id {
        0 => Cow::Borrowed("uncompressed"),
        1 => Cow::Borrowed("ansiX962_compressed_prime"),
        2 => Cow::Borrowed("ansiX962_compressed_char2"),
        _ => unknown8(id),
    }
}

/// An alert's severity.
pub fn alert_level(level: u8) -> Cow<'static, str> {
    match level {
        1 => Cow::Borrowed("warning"),
        2 => Cow::Borrowed("fatal"),
        _ => unknown8(level),
    }
}

/// An alert's description.
pub fn alert(code: u8) -> Cow<'static, str> {
    let name = match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        21 => "decryption_failed",
        22 => "record_overflow",
        30 => "decompression_failure",
        40 => "handshake_failure",
        41 => "no_certificate_RESERVED",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        60 => "export_restriction_RESERVED",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        110 => "unsupported_extension",
        111 => "certificate_unobtainable",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        114 => "bad_certificate_hash_value",
        115 => "unknown_psk_identity",
        _ => return unknown8(code),
    };
    Cow::Borrowed(name)
}

/// `TLS 1.2` and friends (`tls.detailed.version`, `supported_versions`).
pub fn version(v: u16) -> String {
    let [major, minor] = v.to_be_bytes();
    match (major, minor) {
        (3, 0) => "SSL 3.0".into(),
        (3, m) => format!("TLS 1.{}", m - 1),
        _ => format!("(raw {major}.{minor})"),
    }
}

/// ECS's (`tls.version_protocol`, `tls.version`): `("tls", "1.2")`, `("ssl", "3.0")`.
pub fn protocol_version(v: u16) -> (&'static str, String) {
    let [major, minor] = v.to_be_bytes();
    match (major, minor) {
        (3, 0) => ("ssl", "3.0".into()),
        (3, m) => ("tls", format!("1.{}", m - 1)),
        _ => ("unknown", format!("{major}.{minor}")),
    }
}

/// The hello's own version field, `3.3`.
pub fn raw_version(v: u16) -> String {
    let [major, minor] = v.to_be_bytes();
    format!("{major}.{minor}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_packetbeat_writes_them() {
        assert_eq!(cipher(0xc02f), "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
        assert_eq!(cipher(0x1301), "TLS_AES_128_GCM_SHA256");
        assert_eq!(cipher(0x0081), "TLS_GOSTR341001_WITH_28147_CNT_IMIT");
        assert_eq!(cipher(0x00ff), "TLS_EMPTY_RENEGOTIATION_INFO_SCSV");
        assert_eq!(cipher(0xff85), "(unknown:0xff85)");
        assert_eq!(group(29), "x25519");
        assert_eq!(group(257), "ffdhe3072");
        assert_eq!(group(0x6a6a), "(unknown:0x6a6a)");
        assert_eq!(signature_scheme(0x0301), "(unknown:0x0301)");
        assert_eq!(signature_scheme(0x0804), "rsa_pss_sha256");
        assert_eq!(compression(0), "NULL");
        assert_eq!(ec_point_format(2), "ansiX962_compressed_char2");
        assert_eq!(alert(40), "handshake_failure");
        assert_eq!(alert(200), "(unknown:0xc8)");
        assert_eq!(version(0x0303), "TLS 1.2");
        assert_eq!(version(0x0300), "SSL 3.0");
        assert_eq!(protocol_version(0x0304), ("tls", "1.3".into()));
        assert_eq!(raw_version(0x0303), "3.3");
    }
}
