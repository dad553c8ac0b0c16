//! A hello's extensions as Packetbeat 8 names and decodes them
//! (`tls.detailed.client_hello.extensions.*`): the extensions it reads get their name and
//! value, the others are listed by name or number under `_unparsed_`.

use super::names;
use super::parser::{alpn, grease, sni, u16s};
use serde_json::{Map, Value, json};

/// Name of an extension, and whether it has a decoded value here.
fn label(id: u16) -> (String, bool) {
    let (name, decoded) = match id {
        0 => ("server_name_indication", true),
        1 => ("max_fragment_length", true),
        2 => ("client_certificate_url", true),
        3 => ("trusted_ca_keys", false),
        4 => ("truncated_hmac", true),
        5 => ("status_request", true),
        6 => ("user_mapping", false),
        7 => ("client_authz", false),
        8 => ("server_authz", false),
        9 => ("cert_type", true),
        10 => ("supported_groups", true),
        11 => ("ec_points_formats", true),
        12 => ("srp", true),
        13 => ("signature_algorithms", true),
        16 => ("application_layer_protocol_negotiation", true),
        35 => ("session_ticket", true),
        43 => ("supported_versions", true),
        0xff01 => ("renegotiation_info", false),
        _ => return (id.to_string(), false),
    };
    (name.to_string(), decoded)
}

fn strings<S: Into<String>>(v: impl Iterator<Item = S>) -> Value {
    Value::Array(v.map(|s| Value::String(s.into())).collect())
}

/// The value of extension `id`, `None` when it cannot be read.
fn decode(id: u16, d: &[u8]) -> Option<Value> {
    let u16_at = |at: usize| d.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]));
    Some(match id {
        0 => strings(sni(d)?.into_iter()),
        1 => match d {
            [v @ 1..=4] => json!(format!("2^{}", 8 + v)),
            [v] => json!(format!("(unknown:{v})")),
            _ => return None,
        },
        2 | 4 if d.is_empty() => json!(""),
        2 | 4 => json!(format!("(expected empty: found {} bytes)", d.len())),
        5 if d.is_empty() => json!({"response": true}),
        5 => {
            let code = *d.first()?;
            let list = u16_at(1)?;
            let exts = u16_at(3).unwrap_or_default();
            let kind = if code == 1 {
                "ocsp".to_string()
            } else {
                code.to_string()
            };
            json!({"type": kind, "responder_id_list_length": list, "request_extensions": exts})
        }
        9 => {
            let list = match d {
                [n, rest @ ..] if !rest.is_empty() => &rest[..usize::from(*n).min(rest.len())],
                _ => d,
            };
            strings(list.iter().map(|t| match t {
                0 => "X.509".to_string(),
                1 => "OpenPGP".to_string(),
                2 => "RawPubKey".to_string(),
                t => format!("(unknown:{t})"),
            }))
        }
        10 => {
            if usize::from(u16_at(0)?) + 2 != d.len() {
                return None;
            }
            strings(
                u16s(&d[2..])
                    .filter(|g| !grease(*g))
                    .map(|g| names::group(g).into_owned()),
            )
        }
        11 => {
            let (n, rest) = d.split_first()?;
            if usize::from(*n) != rest.len() {
                return None;
            }
            strings(rest.iter().map(|f| names::ec_point_format(*f).into_owned()))
        }
        12 => {
            let (n, rest) = d.split_first()?;
            json!(String::from_utf8_lossy(rest.get(..usize::from(*n))?))
        }
        13 => {
            if usize::from(u16_at(0)?) + 2 != d.len() {
                return None;
            }
            strings(u16s(&d[2..]).map(|s| names::signature_scheme(s).into_owned()))
        }
        16 => strings(alpn(d)?.into_iter()),
        35 if d.is_empty() => json!(""),
        35 => json!(format!("({} bytes)", d.len())),
        43 => match d {
            [a, b] => json!(names::version(u16::from_be_bytes([*a, *b]))),
            [n, rest @ ..] if !rest.is_empty() => {
                let n = usize::from(*n);
                if n > rest.len() || n % 2 != 0 || n == 0 {
                    return None;
                }
                strings(u16s(&rest[..n]).filter(|v| !grease(*v)).map(names::version))
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// The `extensions` object of a hello's extensions (in wire order, GREASE dropped).
pub fn to_map(exts: &[(u16, Vec<u8>)]) -> Map<String, Value> {
    let mut m = Map::new();
    let mut unparsed = Vec::new();
    for (id, d) in exts {
        let (name, decoded) = label(*id);
        match decoded.then(|| decode(*id, d)).flatten() {
            Some(v) => {
                m.insert(name, v);
            }
            None => unparsed.push(Value::String(name)),
        }
    }
    if !unparsed.is_empty() {
        m.insert("_unparsed_".into(), Value::Array(unparsed));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_named_and_decoded() {
        let exts = vec![
            (0, vec![0, 6, 0, 0, 3, b'a', b'.', b'b']),
            (5, vec![1, 0, 0, 0, 0]),
            (10, vec![0, 4, 0, 29, 1, 0]),
            (11, vec![1, 0]),
            (13, vec![0, 4, 4, 1, 3, 1]),
            (16, vec![0, 3, 2, b'h', b'2']),
            (23, vec![]),
            (35, vec![1, 2, 3]),
            (43, vec![4, 3, 4, 3, 3]),
            (0xff01, vec![0]),
        ];
        let m = Value::Object(to_map(&exts));
        assert_eq!(m["server_name_indication"], json!(["a.b"]));
        assert_eq!(
            m["status_request"],
            json!({"type": "ocsp", "responder_id_list_length": 0, "request_extensions": 0})
        );
        assert_eq!(m["supported_groups"], json!(["x25519", "ffdhe2048"]));
        assert_eq!(m["ec_points_formats"], json!(["uncompressed"]));
        assert_eq!(
            m["signature_algorithms"],
            json!(["rsa_pkcs1_sha256", "(unknown:0x0301)"])
        );
        assert_eq!(m["application_layer_protocol_negotiation"], json!(["h2"]));
        assert_eq!(m["session_ticket"], json!("(3 bytes)"));
        assert_eq!(m["supported_versions"], json!(["TLS 1.3", "TLS 1.2"]));
        assert_eq!(m["_unparsed_"], json!(["23", "renegotiation_info"]));
        // A server's selected version, and an empty SNI (unparsed, as Packetbeat).
        let m = Value::Object(to_map(&[(43, vec![3, 4]), (0, vec![])]));
        assert_eq!(m["supported_versions"], json!("TLS 1.3"));
        assert_eq!(m["_unparsed_"], json!(["server_name_indication"]));
    }
}
