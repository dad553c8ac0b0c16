//! The fields of an X.509 certificate seen in a handshake, as Packetbeat 8 writes them
//! (`tls.server.x509.*`, `tls.detailed.server_certificate_chain`, `tls.server.subject`,
//! ...): `x509-parser` reads the DER, this module names what it read the way Go's
//! `crypto/x509` does (distinguished names in RFC 2253 order and escaping, `SHA256-RSA`,
//! decimal serial numbers). Pure: bytes in, fields out.

use serde::Serialize;
use x509_parser::der_parser::Oid;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::*;
use x509_parser::signature_algorithm::SignatureAlgorithm;

/// One certificate's fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cert {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alternative_names: Vec<String>,
    pub issuer: Name,
    pub not_after: String,
    pub not_before: String,
    pub public_key_algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_size: Option<usize>,
    pub serial_number: String,
    pub signature_algorithm: String,
    pub subject: Name,
    pub version_number: u32,
}

/// A distinguished name's parts (multi-valued ones joined by a space) and its string.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Name {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub common_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub country: String,
    pub distinguished_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub locality: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub organization: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub organizational_unit: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub postal_code: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub serial_number: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state_or_province: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub street_address: String,
}

/// Reads one DER certificate; `None` when it is not one.
pub fn parse(der: &[u8]) -> Option<Cert> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    let mut alternative_names = Vec::new();
    let (mut emails, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) => alternative_names.push(s.to_string()),
                GeneralName::RFC822Name(s) => emails.push(s.to_string()),
                GeneralName::IPAddress(b) => ips.extend(ip_text(b)),
                _ => {}
            }
        }
    }
    alternative_names.extend(emails);
    alternative_names.extend(ips);
    let v = c.validity();
    Some(Cert {
        alternative_names,
        issuer: name(c.issuer()),
        not_after: time_text(&v.not_after),
        not_before: time_text(&v.not_before),
        public_key_algorithm: key_algorithm(c.public_key()).into(),
        public_key_size: key_size(c.public_key()),
        serial_number: c.tbs_certificate.serial.to_string(),
        signature_algorithm: signature_algorithm(&c.signature_algorithm),
        subject: name(c.subject()),
        version_number: c.version().0 + 1,
    })
}

fn ip_text(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
        _ => None,
    }
}

/// `2020-12-02T12:00:00.000Z`.
fn time_text(t: &ASN1Time) -> String {
    let d = t.to_datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.millisecond()
    )
}

/// Go's names of public key algorithms (`(unknown:N)` with Go's numbering otherwise).
fn key_algorithm(k: &SubjectPublicKeyInfo<'_>) -> &'static str {
    match k.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.10040.4.1" => "DSA",
        "1.2.840.10045.2.1" => "ECDSA",
        "1.3.101.112" => "(unknown:4)",
        _ => "(unknown:0)",
    }
}

/// Bits of the RSA modulus, or of the named curve.
fn key_size(k: &SubjectPublicKeyInfo<'_>) -> Option<usize> {
    match k.parsed().ok()? {
        x509_parser::public_key::PublicKey::RSA(rsa) => {
            let m = rsa.modulus;
            let first = m.iter().position(|b| *b != 0)?;
            Some((m.len() - first) * 8 - m[first].leading_zeros() as usize)
        }
        x509_parser::public_key::PublicKey::EC(_) => {
            let params = k.algorithm.parameters.as_ref()?;
            let curve = Oid::new(params.data.into()).to_id_string();
            match curve.as_str() {
                "1.3.132.0.33" => Some(224),
                "1.2.840.10045.3.1.7" => Some(256),
                "1.3.132.0.34" => Some(384),
                "1.3.132.0.35" => Some(521),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Go's names of signature algorithms (`SHA256-RSA`, `ECDSA-SHA384`, ...; `0` otherwise).
fn signature_algorithm(a: &AlgorithmIdentifier<'_>) -> String {
    let name = match a.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.2" => "MD2-RSA",
        "1.2.840.113549.1.1.4" => "MD5-RSA",
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => "SHA1-RSA",
        "1.2.840.113549.1.1.11" => "SHA256-RSA",
        "1.2.840.113549.1.1.12" => "SHA384-RSA",
        "1.2.840.113549.1.1.13" => "SHA512-RSA",
        "1.2.840.113549.1.1.10" => {
            let hash = match SignatureAlgorithm::try_from(a) {
                Ok(SignatureAlgorithm::RSASSA_PSS(p)) => p.hash_algorithm_oid().to_id_string(),
                _ => String::new(),
            };
            match hash.as_str() {
                "2.16.840.1.101.3.4.2.1" => "SHA256-RSAPSS",
                "2.16.840.1.101.3.4.2.2" => "SHA384-RSAPSS",
                "2.16.840.1.101.3.4.2.3" => "SHA512-RSAPSS",
                _ => "0",
            }
        }
        "1.2.840.10040.4.3" => "DSA-SHA1",
        "2.16.840.1.101.3.4.3.2" => "DSA-SHA256",
        "1.2.840.10045.4.1" => "ECDSA-SHA1",
        "1.2.840.10045.4.3.2" => "ECDSA-SHA256",
        "1.2.840.10045.4.3.3" => "ECDSA-SHA384",
        "1.2.840.10045.4.3.4" => "ECDSA-SHA512",
        "1.3.101.112" => "Ed25519",
        _ => "0",
    };
    name.into()
}

/// The attribute types Go reads into named fields, with their short names, in the order
/// Go writes them (the string reverses it).
const NAMED: [(&str, &str); 9] = [
    ("2.5.4.6", "C"),
    ("2.5.4.8", "ST"),
    ("2.5.4.7", "L"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.17", "POSTALCODE"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.3", "CN"),
    ("2.5.4.5", "SERIALNUMBER"),
];

/// An attribute's value as text, when it is a string type.
fn value_text(a: &AttributeTypeAndValue<'_>) -> Option<String> {
    if let Ok(s) = a.as_str() {
        return Some(s.to_string());
    }
    let v = a.attr_value();
    match v.tag() {
        Tag::T61String => Some(v.data.iter().map(|b| char::from(*b)).collect()),
        Tag::BmpString => {
            let units: Vec<u16> = v
                .data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        _ => None,
    }
}

fn name(n: &X509Name<'_>) -> Name {
    // Values of each named type in order of appearance (CN and SERIALNUMBER: the last).
    let mut named: [Vec<String>; 9] = Default::default();
    // Other attributes, as `oid=#hex(DER)`.
    let mut others = Vec::new();
    for rdn in n.iter_rdn() {
        for a in rdn.iter() {
            let oid = a.attr_type().to_id_string();
            let text = value_text(a);
            match (NAMED.iter().position(|(o, _)| *o == oid), text) {
                (Some(i), Some(t)) => {
                    if i >= 7 {
                        named[i].clear();
                    }
                    named[i].push(t);
                }
                (Some(_), None) => {}
                (None, text) => others.push(format!("{oid}=#{}", other_der(a, text))),
            }
        }
    }
    // Go's RDN sequence: the others first, then one RDN per named type; written reversed.
    let mut rdns: Vec<String> = others;
    for (i, (_, short)) in NAMED.iter().enumerate() {
        if !named[i].is_empty() {
            let parts: Vec<String> = named[i]
                .iter()
                .map(|v| format!("{short}={}", escape(v)))
                .collect();
            rdns.push(parts.join("+"));
        }
    }
    rdns.reverse();
    let joined = |i: usize| named[i].join(" ");
    Name {
        country: joined(0),
        state_or_province: joined(1),
        locality: joined(2),
        street_address: joined(3),
        postal_code: joined(4),
        organization: joined(5),
        organizational_unit: joined(6),
        common_name: joined(7),
        serial_number: joined(8),
        distinguished_name: rdns.join(","),
    }
}

/// The hex DER Go writes for an attribute it has no name for: a string is re-encoded as a
/// PrintableString when its characters allow, else as a UTF8String.
fn other_der(a: &AttributeTypeAndValue<'_>, text: Option<String>) -> String {
    let (tag, data): (u8, Vec<u8>) = match text {
        Some(t) => {
            let printable = t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b));
            (if printable { 0x13 } else { 0x0c }, t.into_bytes())
        }
        None => {
            let v = a.attr_value();
            let constructed = if v.header.is_constructed() { 0x20 } else { 0 };
            ((v.tag().0 as u8 & 0x1f) | constructed, v.data.to_vec())
        }
    };
    let mut der = vec![tag];
    let n = data.len();
    if n < 0x80 {
        der.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        der.push(0x80 | bytes.len() as u8);
        der.extend(bytes);
    }
    der.extend(data);
    der.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 2253 escaping as Go does it.
fn escape(v: &str) -> String {
    let n = v.chars().count();
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let esc = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => i == 0 || i == n - 1,
            '#' => i == 0,
            _ => false,
        };
        if esc {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_as_go() {
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" #x "), "\\ #x\\ ");
        assert_eq!(escape("#a#"), "\\#a#");
    }

    #[test]
    fn not_a_certificate() {
        assert_eq!(parse(b"\x30\x03\x02\x01\x01"), None);
        assert_eq!(parse(b""), None);
    }
}
