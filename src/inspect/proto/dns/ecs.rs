//! The `dns` object of an ECS event: the classic one with Packetbeat 8's additions
//! (`type`, `header_flags`, `resolved_ip`, record TTLs as strings, and the question's
//! public-suffix parts), written straight from the transaction.
//!
//! The public suffix comes from the list compiled into the `psl` crate (ICANN and private
//! sections, like the Go list Packetbeat uses), so no file is read at run time.

use super::{Answer, DnsTxn, Flags};
use serde::Serialize;
use std::net::IpAddr;

/// The ECS `dns` object of a transaction.
#[derive(Serialize)]
pub struct EcsDns<'a> {
    /// `answer` once the response is in, else `query`.
    r#type: &'static str,
    id: u16,
    op_code: &'a str,
    flags: &'a Flags,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    header_flags: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    question: Option<EcsQuestion<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answers_count: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorities_count: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additionals_count: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    answers: Vec<EcsRecord<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authorities: Vec<EcsRecord<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    additionals: Vec<EcsRecord<'a>>,
    #[serde(skip_serializing_if = "<[IpAddr]>::is_empty")]
    resolved_ip: &'a [IpAddr],
}

#[derive(Serialize)]
struct EcsQuestion<'a> {
    name: &'a str,
    r#type: &'a str,
    class: &'a str,
    #[serde(flatten)]
    suffix: Option<SuffixParts<'a>>,
}

/// A resource record: the classic one, its TTL a string as Packetbeat 8 writes it.
#[derive(Serialize)]
struct EcsRecord<'a> {
    name: &'a str,
    r#type: &'a str,
    class: &'a str,
    ttl: String,
    data: &'a str,
}

/// The public-suffix parts of a name (`www.example.co.uk`: registered domain
/// `example.co.uk`, top-level domain `co.uk`, subdomain `www`).
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct SuffixParts<'a> {
    pub etld_plus_one: &'a str,
    pub registered_domain: &'a str,
    pub top_level_domain: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<&'a str>,
}

/// The parts of `name`, or none when it has no registrable domain (it is a public
/// suffix itself, or not a well-formed name), as Go's `EffectiveTLDPlusOne` refuses it.
pub fn suffix_parts(name: &str) -> Option<SuffixParts<'_>> {
    if name.is_empty() || name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return None;
    }
    let domain = psl::domain_str(name)?;
    // The eTLD+1 is the public suffix and one label more: the suffix is what follows its
    // first dot.
    let (_, tld) = domain.split_once('.')?;
    let subdomain = name
        .strip_suffix(domain)
        .and_then(|s| s.strip_suffix('.'))
        .filter(|s| !s.is_empty());
    Some(SuffixParts {
        etld_plus_one: domain,
        registered_domain: domain,
        top_level_domain: tld,
        subdomain,
    })
}

/// Packetbeat 8's `dns.header_flags`, in its order: the bits set in the header of the
/// message the event describes (the response, or the query when none came).
fn header_flags(f: &Flags) -> Vec<&'static str> {
    [
        (0x0400, "AA"),
        (0x0200, "TC"),
        (0x0100, "RD"),
        (0x0080, "RA"),
        (0x0020, "AD"),
        (0x0010, "CD"),
    ]
    .into_iter()
    .filter_map(|(bit, name)| (f.word & bit != 0).then_some(name))
    .collect()
}

fn records(rs: &[Answer]) -> Vec<EcsRecord<'_>> {
    rs.iter()
        .map(|r| EcsRecord {
            name: &r.name,
            r#type: &r.kind,
            class: &r.class,
            ttl: r.ttl.to_string(),
            data: &r.data,
        })
        .collect()
}

/// The addresses the answers resolve the question to (A and AAAA records).
pub fn resolved_ips(t: &DnsTxn) -> Vec<IpAddr> {
    t.answers
        .iter()
        .filter(|a| a.kind == "A" || a.kind == "AAAA")
        .filter_map(|a| a.data.parse().ok())
        .collect()
}

impl<'a> EcsDns<'a> {
    /// The object of `t`; `resolved` is [`resolved_ips`] of it.
    pub fn of(t: &'a DnsTxn, resolved: &'a [IpAddr]) -> EcsDns<'a> {
        EcsDns {
            r#type: if t.response_code.is_some() {
                "answer"
            } else {
                "query"
            },
            id: t.id,
            op_code: &t.op_code,
            flags: &t.flags,
            header_flags: header_flags(&t.flags),
            question: t.question.as_ref().map(|q| EcsQuestion {
                name: &q.name,
                r#type: &q.kind,
                class: &q.class,
                suffix: suffix_parts(&q.name),
            }),
            response_code: t.response_code.as_deref(),
            answers_count: t.answers_count,
            authorities_count: t.authorities_count,
            additionals_count: t.additionals_count,
            answers: records(&t.answers),
            authorities: records(&t.authorities),
            additionals: records(&t.additionals),
            resolved_ip: resolved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_suffix_parts_as_packetbeat_writes_them() {
        let p = suffix_parts("www.example.com").unwrap();
        assert_eq!(
            p,
            SuffixParts {
                etld_plus_one: "example.com",
                registered_domain: "example.com",
                top_level_domain: "com",
                subdomain: Some("www"),
            }
        );
        let p = suffix_parts("a.b.example.co.uk").unwrap();
        assert_eq!(
            (p.registered_domain, p.top_level_domain, p.subdomain),
            ("example.co.uk", "co.uk", Some("a.b"))
        );
        let p = suffix_parts("example.com").unwrap();
        assert_eq!(p.subdomain, None);
        // A name under an unlisted top-level label: the label is the suffix (the list's
        // default rule).
        let p = suffix_parts("host.corp.internal-test").unwrap();
        assert_eq!(
            (p.registered_domain, p.top_level_domain, p.subdomain),
            ("corp.internal-test", "internal-test", Some("host"))
        );
        // Public suffixes themselves, and malformed names, have none.
        for none in [
            "com",
            "co.uk",
            "",
            ".",
            "a..com",
            ".example.com",
            "example.com.",
        ] {
            assert_eq!(suffix_parts(none), None, "{none:?}");
        }
    }

    #[test]
    fn answers_resolve_to_addresses_and_ttls_are_strings() {
        let rec = |kind: &str, data: &str| Answer {
            name: "www.example.com".into(),
            kind: kind.into(),
            class: "IN".into(),
            ttl: 300,
            data: data.into(),
        };
        let mut t = DnsTxn {
            id: 7,
            op_code: "QUERY".into(),
            ..Default::default()
        };
        let v = serde_json::to_value(EcsDns::of(&t, &[])).unwrap();
        assert_eq!(v["type"], "query");
        assert!(
            v.get("header_flags").is_none() && v.get("answers").is_none(),
            "{v}"
        );
        t.response_code = Some("NOERROR".into());
        t.answers = vec![
            rec("CNAME", "edge.example.net"),
            rec("A", "192.0.2.1"),
            rec("AAAA", "2001:db8::1"),
        ];
        let ips = resolved_ips(&t);
        assert_eq!(
            ips,
            [
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        let v = serde_json::to_value(EcsDns::of(&t, &ips)).unwrap();
        assert_eq!(v["type"], "answer");
        assert_eq!(v["answers"][1]["ttl"], "300");
        assert_eq!(
            v["resolved_ip"],
            serde_json::json!(["192.0.2.1", "2001:db8::1"])
        );
        // The classic object keeps the number.
        assert_eq!(serde_json::to_value(&t).unwrap()["answers"][1]["ttl"], 300);
    }

    #[test]
    fn header_flags_in_packetbeat_order() {
        let f = super::super::flags(0x8000 | 0x0400 | 0x0100 | 0x0080 | 0x0010, true);
        assert_eq!(header_flags(&f), vec!["AA", "RD", "RA", "CD"]);
        assert!(header_flags(&Flags::default()).is_empty());
        // A query never answered: its own bits, AD (asking for authenticated data)
        // included, though the classic object keeps only RD and CD of a query.
        let q = super::super::flags(0x0100 | 0x0020, false);
        assert_eq!(header_flags(&q), vec!["RD", "AD"]);
        assert_eq!(q.authentic_data, None);
    }
}
