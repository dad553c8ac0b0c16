//! Community ID v1: one flow hash that every tool seeing the same flow computes alike.
//!
//! Zeek, Suricata, Packetbeat and Elastic Agent tag flows with it, so events of connbeat can
//! be joined with theirs (and the two agents at the two ends of one connection agree on
//! it, whichever end each one is). The specification (corelight/community-id-spec): the
//! SHA-1 of `seed (u16) · source address · destination address · IP protocol · 0 ·
//! source port · destination port`, all in network byte order, with the endpoints put in
//! a canonical order first, then base64, prefixed by the version, `1:`.
//!
//! ICMP has no ports: the message type and code stand in for them, and a type that has a
//! counterpart (echo request and reply, …) takes that counterpart as its second "port", so
//! that both directions of an exchange hash alike. A type without one is one-way: its
//! direction is kept as it is.
//!
//! Pure and allocation-free: the digest input lives on the stack, the result is a fixed
//! 30-byte value ([`CommunityId`]) written as text without a heap buffer.

use base64::Engine as _;
use std::net::{IpAddr, SocketAddr};

/// IANA protocol numbers the hash takes.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

/// The seed every event of connbeat uses (the specification's default).
pub const SEED: u16 = 0;

/// A Community ID v1: `1:` and the base64 of a SHA-1 digest (30 ASCII bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommunityId([u8; 30]);

impl CommunityId {
    /// The flow of a TCP, UDP or SCTP connection from `src` to `dst` (the order does not
    /// matter). `transport` is `tcp`, `udp` or `sctp`; None for another transport, or for
    /// endpoints of different families (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn of_ports(transport: &str, src: SocketAddr, dst: SocketAddr) -> Option<CommunityId> {
        let p = match transport {
            "tcp" => proto::TCP,
            "udp" => proto::UDP,
            "sctp" => proto::SCTP,
            _ => return None,
        };
        flow(
            SEED,
            p,
            src.ip(),
            dst.ip(),
            Some((src.port(), dst.port())),
            false,
        )
    }

    /// The flow of an ICMP (IPv4) or ICMPv6 message of `icmp_type` and `code` from `src` to
    /// `dst`; which of the two it is follows the addresses' family.
    pub fn of_icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8) -> Option<CommunityId> {
        let (src, dst) = (canonical(src), canonical(dst));
        let v6 = src.is_ipv6();
        let (sport, dport, one_way) = icmp_ports(icmp_type, code, v6);
        let p = if v6 { proto::ICMPV6 } else { proto::ICMP };
        flow(SEED, p, src, dst, Some((sport, dport)), one_way)
    }

    /// The text, `1:…=`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII by construction")
    }
}

impl std::fmt::Display for CommunityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for CommunityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CommunityId({})", self.as_str())
    }
}

impl serde::Serialize for CommunityId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The hash of one flow: `ports` is None for a protocol without ports, `one_way` keeps the
/// given direction (ICMP types without a counterpart).
pub fn flow(
    seed: u16,
    protocol: u8,
    src: IpAddr,
    dst: IpAddr,
    ports: Option<(u16, u16)>,
    one_way: bool,
) -> Option<CommunityId> {
    let (mut src, mut dst) = (canonical(src), canonical(dst));
    let (mut sport, mut dport) = ports.unwrap_or((0, 0));
    if src.is_ipv4() != dst.is_ipv4() {
        return None;
    }
    let ordered = src < dst || (src == dst && sport < dport);
    if !one_way && !ordered {
        std::mem::swap(&mut src, &mut dst);
        std::mem::swap(&mut sport, &mut dport);
    }
    // seed 2 + addresses 2 × 16 + protocol 1 + padding 1 + ports 2 × 2
    let mut buf = [0u8; 40];
    let mut n = 0;
    let mut put = |b: &[u8]| {
        buf[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    put(&seed.to_be_bytes());
    for ip in [src, dst] {
        match ip {
            IpAddr::V4(a) => put(&a.octets()),
            IpAddr::V6(a) => put(&a.octets()),
        }
    }
    put(&[protocol, 0]);
    if ports.is_some() {
        put(&sport.to_be_bytes());
        put(&dport.to_be_bytes());
    }
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &buf[..n]);
    let mut out = [0u8; 30];
    out[..2].copy_from_slice(b"1:");
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(digest.as_ref(), &mut out[2..])
        .expect("28 bytes hold the base64 of 20");
    debug_assert_eq!(written, 28);
    Some(CommunityId(out))
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports for an
/// IPv4 peer) is the IPv4 address on the wire, and hashes as such.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The "ports" of an ICMP message: its type, and its counterpart's type when it has one
/// (else its code, and the message is one-way).
fn icmp_ports(icmp_type: u8, code: u8, v6: bool) -> (u16, u16, bool) {
    // (type, counterpart), both ways, from the specification's tables.
    const V4: [(u8, u8); 10] = [
        (8, 0),   // echo request, echo reply
        (0, 8),   //
        (13, 14), // timestamp, timestamp reply
        (14, 13), //
        (15, 16), // information request, reply
        (16, 15), //
        (10, 9),  // router solicitation, router advertisement
        (9, 10),  //
        (17, 18), // address mask request, reply
        (18, 17), //
    ];
    const V6: [(u8, u8); 12] = [
        (128, 129), // echo request, echo reply
        (129, 128), //
        (133, 134), // router solicitation, router advertisement
        (134, 133), //
        (135, 136), // neighbor solicitation, neighbor advertisement
        (136, 135), //
        (130, 131), // multicast listener query, report
        (131, 130), //
        (139, 140), // node information query, response
        (140, 139), //
        (144, 145), // home agent address discovery request, reply
        (145, 144), //
    ];
    let table: &[(u8, u8)] = if v6 { &V6 } else { &V4 };
    match table.iter().find(|(t, _)| *t == icmp_type) {
        Some((_, other)) => (icmp_type.into(), (*other).into(), false),
        None => (icmp_type.into(), code.into(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The specification's published examples (seed 0).
    #[test]
    fn specification_examples() {
        let cases = [
            (
                "tcp",
                "128.232.110.120:34855",
                "66.35.250.204:80",
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            ),
            (
                "udp",
                "192.168.1.52:54585",
                "8.8.8.8:53",
                "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
            ),
        ];
        for (t, a, b, want) in cases {
            let id = CommunityId::of_ports(t, sa(a), sa(b)).unwrap();
            assert_eq!(id.as_str(), want, "{t} {a} {b}");
            let back = CommunityId::of_ports(t, sa(b), sa(a)).unwrap();
            assert_eq!(back, id, "both directions hash alike");
        }
        // ICMP echo request and its reply share one ID.
        let req = CommunityId::of_icmp(
            "192.168.0.89".parse().unwrap(),
            "192.168.0.1".parse().unwrap(),
            8,
            0,
        )
        .unwrap();
        assert_eq!(req.as_str(), "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=");
        let reply = CommunityId::of_icmp(
            "192.168.0.1".parse().unwrap(),
            "192.168.0.89".parse().unwrap(),
            0,
            0,
        )
        .unwrap();
        assert_eq!(reply, req);
    }

    #[test]
    fn mapped_addresses_hash_as_ipv4_and_mixed_families_have_none() {
        let v4 = CommunityId::of_ports("tcp", sa("10.0.0.1:5000"), sa("10.0.0.2:80")).unwrap();
        let mapped = CommunityId::of_ports(
            "tcp",
            sa("[::ffff:10.0.0.1]:5000"),
            sa("[::ffff:10.0.0.2]:80"),
        )
        .unwrap();
        assert_eq!(v4, mapped);
        assert_eq!(
            CommunityId::of_ports("tcp", sa("10.0.0.1:5000"), sa("[fd00::2]:80")),
            None
        );
        assert_eq!(
            CommunityId::of_ports("icmp", sa("10.0.0.1:0"), sa("10.0.0.2:0")),
            None
        );
    }

    /// A one-way ICMP type keeps its direction: the two directions differ.
    #[test]
    fn one_way_icmp_keeps_its_direction() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let ab = CommunityId::of_icmp(a, b, 3, 1).unwrap();
        let ba = CommunityId::of_icmp(b, a, 3, 1).unwrap();
        assert_ne!(ab, ba);
        let echo6 = CommunityId::of_icmp(
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            128,
            0,
        )
        .unwrap();
        let reply6 = CommunityId::of_icmp(
            "fd00::2".parse().unwrap(),
            "fd00::1".parse().unwrap(),
            129,
            0,
        )
        .unwrap();
        assert_eq!(echo6, reply6);
        assert_eq!(
            serde_json::to_string(&echo6).unwrap(),
            format!("\"{echo6}\"")
        );
    }
}
