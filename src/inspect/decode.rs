//! Link, network and transport decoding: bytes of one captured frame to a typed view.
//!
//! Hand-written zero-copy views in the style of smoltcp's `wire` module rather than
//! `etherparse`, because the capture path needs things that crate does not give: the Linux
//! cooked v1/v2 headers of the `any` device (etherparse rejects loopback frames captured on
//! `any` and has no v2), BSD null/loop headers, and IPv4 fragments handed to a reassembler
//! instead of rejected. Everything here is a pure function over a byte slice: no I/O, no
//! clock, no allocation, and every length read from the wire is checked against the slice.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// libpcap link-layer types (`DLT_*` / `LINKTYPE_*`) that connbeat decodes.
pub mod linktype {
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    pub const RAW_OPENBSD: i32 = 12;
    pub const RAW_BSD: i32 = 14;
    pub const RAW: i32 = 101;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const LINUX_SLL2: i32 = 276;
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame shorter than its {0} header")]
    Truncated(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// Not an error in the traffic: a protocol connbeat does not inspect (ARP, ICMP, ...).
    #[error("unsupported {0}")]
    Unsupported(&'static str),
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// Bound on stacked VLAN tags; deeper stacks are treated as malformed.
const MAX_VLAN_TAGS: usize = 8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// What the link layer of a frame says besides its payload: the Ethernet addresses and
/// the VLAN tags (outermost first), which flows are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct LinkInfo {
    /// Source and destination MAC, for Ethernet frames.
    pub macs: Option<([u8; 6], [u8; 6])>,
    /// Up to two VLAN ids (outer, inner); deeper tags are decoded but not kept.
    pub vlans: [u16; 2],
    pub vlan_count: u8,
}

impl LinkInfo {
    /// The VLAN ids, outermost first.
    pub fn vlans(&self) -> &[u16] {
        &self.vlans[..usize::from(self.vlan_count)]
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The network-layer content of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network<'a> {
    /// A whole (unfragmented) IP datagram's transport payload.
    Ip(IpPayload<'a>),
    /// One fragment of an IPv4 datagram, for [`super::frag`].
    Fragment(Fragment<'a>),
}

/// A transport-layer payload with its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPayload<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub data: &'a [u8],
    /// Bytes the IP header announced but the capture cut off (snaplen).
    pub missing: usize,
}

/// One IPv4 fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub id: u16,
    pub protocol: u8,
    /// Offset of this fragment's data in the datagram, in bytes.
    pub offset: usize,
    pub more: bool,
    pub data: &'a [u8],
}

/// Strips the link-layer header of a frame of the given link type and decodes IP.
pub fn decode_frame(link: i32, frame: &[u8]) -> Result<Network<'_>, DecodeError> {
    decode_frame_link(link, frame).map(|(_, n)| n)
}

/// [`decode_frame`], also returning what the link layer says (MACs, VLAN tags).
pub fn decode_frame_link(link: i32, frame: &[u8]) -> Result<(LinkInfo, Network<'_>), DecodeError> {
    let mut info = LinkInfo::default();
    let net = match link {
        linktype::ETHERNET => {
            let mut ethertype = be16(frame, 12).ok_or(DecodeError::Truncated("ethernet"))?;
            let mut dst = [0u8; 6];
            let mut src = [0u8; 6];
            dst.copy_from_slice(&frame[0..6]);
            src.copy_from_slice(&frame[6..12]);
            info.macs = Some((src, dst));
            let mut at = 14;
            let mut tags = 0;
            while ETH_VLAN.contains(&ethertype) {
                tags += 1;
                if tags > MAX_VLAN_TAGS {
                    return Err(DecodeError::Malformed("vlan"));
                }
                let tci = be16(frame, at).ok_or(DecodeError::Truncated("vlan"))?;
                if usize::from(info.vlan_count) < info.vlans.len() {
                    info.vlans[usize::from(info.vlan_count)] = tci & 0x0fff;
                    info.vlan_count += 1;
                }
                ethertype = be16(frame, at + 2).ok_or(DecodeError::Truncated("vlan"))?;
                at += 4;
            }
            decode_ethertype(ethertype, &frame[at..])
        }
        linktype::LINUX_SLL => {
            // packet type(2) arphrd(2) addr len(2) addr(8) protocol(2)
            let proto = be16(frame, 14).ok_or(DecodeError::Truncated("linux cooked"))?;
            decode_ethertype(proto, &frame[16..])
        }
        linktype::LINUX_SLL2 => {
            // protocol(2) reserved(2) ifindex(4) arphrd(2) pkttype(1) addr len(1) addr(8)
            let proto = be16(frame, 0).ok_or(DecodeError::Truncated("linux cooked v2"))?;
            if frame.len() < 20 {
                return Err(DecodeError::Truncated("linux cooked v2"));
            }
            decode_ethertype(proto, &frame[20..])
        }
        linktype::NULL | linktype::LOOP => {
            let fam = frame.get(..4).ok_or(DecodeError::Truncated("loopback"))?;
            let fam: [u8; 4] = fam
                .try_into()
                .map_err(|_| DecodeError::Truncated("loopback"))?;
            // NULL is in the capturing host's byte order, LOOP in network order: accept both.
            let v = if link == linktype::LOOP {
                u32::from_be_bytes(fam)
            } else {
                let le = u32::from_le_bytes(fam);
                if le < 256 {
                    le
                } else {
                    u32::from_be_bytes(fam)
                }
            };
            match v {
                2 => decode_ipv4(&frame[4..]),
                10 | 24 | 28 | 30 => decode_ipv6(&frame[4..]),
                _ => Err(DecodeError::Unsupported("loopback family")),
            }
        }
        linktype::RAW | linktype::RAW_BSD | linktype::RAW_OPENBSD => decode_raw_ip(frame),
        linktype::IPV4 => decode_ipv4(frame),
        linktype::IPV6 => decode_ipv6(frame),
        _ => Err(DecodeError::Unsupported("link type")),
    }?;
    Ok((info, net))
}

fn decode_ethertype(ethertype: u16, rest: &[u8]) -> Result<Network<'_>, DecodeError> {
    match ethertype {
        ETH_IPV4 => decode_ipv4(rest),
        ETH_IPV6 => decode_ipv6(rest),
        _ => Err(DecodeError::Unsupported("ether type")),
    }
}

fn decode_raw_ip(b: &[u8]) -> Result<Network<'_>, DecodeError> {
    match b.first().map(|v| v >> 4) {
        Some(4) => decode_ipv4(b),
        Some(6) => decode_ipv6(b),
        Some(_) => Err(DecodeError::Malformed("ip version")),
        None => Err(DecodeError::Truncated("ip")),
    }
}

/// Decodes an IPv4 header; fragments are returned as such, not reassembled.
pub fn decode_ipv4(b: &[u8]) -> Result<Network<'_>, DecodeError> {
    let first = *b.first().ok_or(DecodeError::Truncated("ipv4"))?;
    if first >> 4 != 4 {
        return Err(DecodeError::Malformed("ipv4 version"));
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 {
        return Err(DecodeError::Malformed("ipv4 header length"));
    }
    if b.len() < ihl {
        return Err(DecodeError::Truncated("ipv4"));
    }
    let total = usize::from(be16(b, 2).ok_or(DecodeError::Truncated("ipv4"))?);
    if total < ihl {
        return Err(DecodeError::Malformed("ipv4 total length"));
    }
    let flags_frag = be16(b, 6).ok_or(DecodeError::Truncated("ipv4"))?;
    let protocol = b[9];
    let src = Ipv4Addr::from(be32(b, 12).ok_or(DecodeError::Truncated("ipv4"))?);
    let dst = Ipv4Addr::from(be32(b, 16).ok_or(DecodeError::Truncated("ipv4"))?);
    // Ethernet pads short frames: the IP total length is the truth, the capture may be shorter.
    let end = total.min(b.len());
    let data = &b[ihl..end];
    let missing = total - end;
    let more = flags_frag & 0x2000 != 0;
    let offset = usize::from(flags_frag & 0x1fff) * 8;
    if more || offset != 0 {
        if missing != 0 {
            return Err(DecodeError::Truncated("ipv4 fragment"));
        }
        return Ok(Network::Fragment(Fragment {
            src,
            dst,
            id: be16(b, 4).unwrap_or(0),
            protocol,
            offset,
            more,
            data,
        }));
    }
    Ok(Network::Ip(IpPayload {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        protocol,
        data,
        missing,
    }))
}

/// Decodes an IPv6 header and skips the usual extension headers.
pub fn decode_ipv6(b: &[u8]) -> Result<Network<'_>, DecodeError> {
    if b.len() < 40 {
        return Err(DecodeError::Truncated("ipv6"));
    }
    if b[0] >> 4 != 6 {
        return Err(DecodeError::Malformed("ipv6 version"));
    }
    let payload_len = usize::from(be16(b, 4).unwrap_or(0));
    let mut next = b[6];
    let src: [u8; 16] = b[8..24]
        .try_into()
        .map_err(|_| DecodeError::Truncated("ipv6"))?;
    let dst: [u8; 16] = b[24..40]
        .try_into()
        .map_err(|_| DecodeError::Truncated("ipv6"))?;
    let end = (40 + payload_len).min(b.len());
    let missing = 40 + payload_len - end;
    let mut at = 40;
    // Hop-by-hop, routing, destination options: skip; fragments are not reassembled.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let nh = *b.get(at).ok_or(DecodeError::Truncated("ipv6 extension"))?;
                let len = (usize::from(
                    *b.get(at + 1)
                        .ok_or(DecodeError::Truncated("ipv6 extension"))?,
                ) + 1)
                    * 8;
                next = nh;
                at += len;
                if at > end {
                    return Err(DecodeError::Truncated("ipv6 extension"));
                }
            }
            44 => return Err(DecodeError::Unsupported("ipv6 fragment")),
            _ => break,
        }
    }
    Ok(Network::Ip(IpPayload {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol: next,
        data: &b[at..end],
        missing,
    }))
}

/// TCP flag bits.
pub mod tcpflags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// A decoded TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: &'a [u8],
    /// Payload bytes the capture did not include (snaplen or a cut capture).
    pub missing: usize,
}

impl TcpSegment<'_> {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A decoded UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// The transport content of an IP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    Tcp(TcpSegment<'a>),
    Udp(UdpDatagram<'a>),
}

/// Decodes TCP or UDP from an IP payload.
pub fn decode_transport<'a>(p: &IpPayload<'a>) -> Result<Transport<'a>, DecodeError> {
    let b = p.data;
    match p.protocol {
        IPPROTO_TCP => {
            if b.len() < 20 {
                return Err(DecodeError::Truncated("tcp"));
            }
            let off = usize::from(b[12] >> 4) * 4;
            if off < 20 {
                return Err(DecodeError::Malformed("tcp data offset"));
            }
            if b.len() < off {
                return Err(DecodeError::Truncated("tcp"));
            }
            Ok(Transport::Tcp(TcpSegment {
                src_port: be16(b, 0).unwrap_or(0),
                dst_port: be16(b, 2).unwrap_or(0),
                seq: be32(b, 4).unwrap_or(0),
                ack: be32(b, 8).unwrap_or(0),
                flags: b[13],
                payload: &b[off..],
                missing: p.missing,
            }))
        }
        IPPROTO_UDP => {
            if b.len() < 8 {
                return Err(DecodeError::Truncated("udp"));
            }
            let len = usize::from(be16(b, 4).unwrap_or(0));
            if len < 8 {
                return Err(DecodeError::Malformed("udp length"));
            }
            if p.missing > 0 || len > b.len() {
                return Err(DecodeError::Truncated("udp"));
            }
            Ok(Transport::Udp(UdpDatagram {
                src_port: be16(b, 0).unwrap_or(0),
                dst_port: be16(b, 2).unwrap_or(0),
                payload: &b[8..len],
            }))
        }
        _ => Err(DecodeError::Unsupported("ip protocol")),
    }
}

/// The fixed part of an ICMP (v4 or v6) message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpHeader {
    /// 4 or 6.
    pub version: u8,
    pub icmp_type: u8,
    pub code: u8,
    /// Bytes 4..8 of the header: identifier and sequence number of echo-like messages.
    pub id: u16,
    pub seq: u16,
    /// Bytes after the 8-byte header (what Packetbeat counts as the message's size).
    pub payload_len: usize,
}

/// Decodes the ICMP header of an IP payload whose protocol is ICMP (IPv4) or ICMPv6 (IPv6).
pub fn decode_icmp(p: &IpPayload<'_>) -> Result<IcmpHeader, DecodeError> {
    let version = match (p.protocol, p.src) {
        (IPPROTO_ICMP, IpAddr::V4(_)) => 4,
        (IPPROTO_ICMPV6, IpAddr::V6(_)) => 6,
        _ => return Err(DecodeError::Unsupported("ip protocol")),
    };
    let b = p.data;
    if b.len() < 8 {
        return Err(DecodeError::Truncated("icmp"));
    }
    Ok(IcmpHeader {
        version,
        icmp_type: b[0],
        code: b[1],
        id: be16(b, 4).unwrap_or(0),
        seq: be16(b, 6).unwrap_or(0),
        payload_len: b.len() - 8 + p.missing,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an IPv4 + TCP packet (no options), for tests across the inspect module.
    pub fn ipv4_tcp(
        src: [u8; 4],
        dst: [u8; 4],
        sp: u16,
        dp: u16,
        seq: u32,
        flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&sp.to_be_bytes());
        tcp[2..4].copy_from_slice(&dp.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        tcp.extend_from_slice(payload);
        ipv4(src, dst, IPPROTO_TCP, &tcp)
    }

    pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        ip.extend_from_slice(payload);
        ip
    }

    #[test]
    fn ethernet_with_stacked_vlans() {
        let ip = ipv4_tcp(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            1234,
            80,
            7,
            tcpflags::ACK,
            b"hi",
        );
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0, 0, 0, 0]); // ethernet padding
        let Network::Ip(p) = decode_frame(linktype::ETHERNET, &f).unwrap() else {
            panic!()
        };
        let Transport::Tcp(t) = decode_transport(&p).unwrap() else {
            panic!()
        };
        assert_eq!(
            (t.src_port, t.dst_port, t.seq, t.payload),
            (1234, 80, 7, &b"hi"[..])
        );
    }

    #[test]
    fn link_info_keeps_macs_and_two_vlans() {
        let ip = ipv4(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            IPPROTO_ICMP,
            &[8, 0, 0, 0, 0, 5, 0, 1, 9, 9],
        );
        let mut f = vec![2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1];
        f.extend_from_slice(&[0x81, 0x00, 0x20, 101, 0x81, 0x00, 0x02, 0x58, 0x08, 0x00]);
        f.extend_from_slice(&ip);
        let (info, Network::Ip(p)) = decode_frame_link(linktype::ETHERNET, &f).unwrap() else {
            panic!()
        };
        assert_eq!(info.macs, Some(([1; 6], [2; 6])));
        assert_eq!(info.vlans(), &[101, 600]);
        let h = decode_icmp(&p).unwrap();
        assert_eq!(
            (h.version, h.icmp_type, h.id, h.seq, h.payload_len),
            (4, 8, 5, 1, 2)
        );
        assert!(
            decode_icmp(&IpPayload {
                data: &[8, 0, 0],
                ..p
            })
            .is_err()
        );
    }

    #[test]
    fn cooked_v1_and_v2_loopback() {
        let ip = ipv4_tcp([127, 0, 0, 1], [127, 0, 0, 1], 1, 2, 0, tcpflags::SYN, b"");
        let mut v1 = vec![0, 0, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        v1.extend_from_slice(&ip);
        assert!(matches!(
            decode_frame(linktype::LINUX_SLL, &v1),
            Ok(Network::Ip(_))
        ));
        let mut v2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        v2.extend_from_slice(&ip);
        assert!(matches!(
            decode_frame(linktype::LINUX_SLL2, &v2),
            Ok(Network::Ip(_))
        ));
    }

    #[test]
    fn hostile_lengths_are_errors_not_panics() {
        let mut ip = ipv4_tcp([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 0, 0, b"abc");
        ip[0] = 0x4f; // ihl 60 > len
        assert!(decode_frame(linktype::RAW, &ip).is_err());
        for n in 0..ip.len() {
            let _ = decode_frame(linktype::ETHERNET, &ip[..n]);
            let _ = decode_frame(linktype::RAW, &ip[..n]);
        }
    }
}
