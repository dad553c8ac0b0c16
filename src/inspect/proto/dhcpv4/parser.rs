//! DHCPv4 (BOOTP, RFC 2131/2132) messages: bytes of one UDP datagram in, the fields and
//! options Packetbeat reports out. Pure; every length is checked against the datagram.

use std::net::Ipv4Addr;

/// The fixed BOOTP header, then the magic cookie.
const FIXED: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Why a datagram is not DHCPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("shorter than the BOOTP header and magic cookie")]
    Short,
    #[error("no DHCP magic cookie")]
    NoMagic,
    #[error("unknown op code {0}")]
    OpCode(u8),
    #[error("option {0} runs past the end of the message")]
    Option(u8),
}

/// A vendor-identifying vendor class (option 124): enterprise number and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorClass {
    pub enterprise: u32,
    pub data: Vec<u8>,
}

/// The options Packetbeat decodes (RFC 2132 numbers in the comments).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub message_type: Option<u8>,                             // 53
    pub parameter_request_list: Option<Vec<u8>>,              // 55
    pub requested_ip_address: Option<Ipv4Addr>,               // 50
    pub server_identifier: Option<Ipv4Addr>,                  // 54
    pub broadcast_address: Option<Ipv4Addr>,                  // 28
    pub max_dhcp_message_size: Option<u16>,                   // 57
    pub class_identifier: Option<String>,                     // 60
    pub domain_name: Option<String>,                          // 15
    pub dns_servers: Option<Vec<Ipv4Addr>>,                   // 6
    pub vendor_identifying_options: Option<Vec<VendorClass>>, // 124
    pub subnet_mask: Option<Ipv4Addr>,                        // 1
    pub utc_time_offset_sec: Option<i32>,                     // 2
    pub router: Option<Vec<Ipv4Addr>>,                        // 3
    pub time_servers: Option<Vec<Ipv4Addr>>,                  // 4
    pub ntp_servers: Option<Vec<Ipv4Addr>>,                   // 42
    pub hostname: Option<String>,                             // 12
    pub ip_address_lease_time_sec: Option<u32>,               // 51
    pub message: Option<String>,                              // 56
    pub renewal_time_sec: Option<u32>,                        // 58
    pub rebinding_time_sec: Option<u32>,                      // 59
    pub boot_file_name: Option<String>,                       // 67
}

/// One DHCPv4 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// 1: BOOTREQUEST, 2: BOOTREPLY.
    pub op: u8,
    pub htype: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// The client hardware address, `hlen` bytes (at most 16).
    pub chaddr: Vec<u8>,
    pub sname: String,
    pub file: String,
    pub options: Options,
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn ips(b: &[u8]) -> Vec<Ipv4Addr> {
    b.chunks_exact(4).map(ip).collect()
}

fn one_ip(b: &[u8]) -> Option<Ipv4Addr> {
    (b.len() == 4).then(|| ip(b))
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

/// A NUL-terminated (or full-length) text field.
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches('\0')
        .to_string()
}

/// Parses one DHCPv4 message.
pub fn parse(b: &[u8]) -> Result<Message, Error> {
    if b.len() < FIXED + MAGIC.len() {
        return Err(Error::Short);
    }
    if b[FIXED..FIXED + 4] != MAGIC {
        return Err(Error::NoMagic);
    }
    let op = b[0];
    if op != 1 && op != 2 {
        return Err(Error::OpCode(op));
    }
    let hlen = usize::from(b[2]).min(16);
    let mut m = Message {
        op,
        htype: b[1],
        hops: b[3],
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        secs: u16::from_be_bytes([b[8], b[9]]),
        broadcast: b[10] & 0x80 != 0,
        ciaddr: ip(&b[12..16]),
        yiaddr: ip(&b[16..20]),
        giaddr: ip(&b[24..28]),
        chaddr: b[28..28 + hlen].to_vec(),
        sname: cstr(&b[44..108]),
        file: cstr(&b[108..236]),
        options: Options::default(),
    };
    let mut at = FIXED + 4;
    while at < b.len() {
        let code = b[at];
        match code {
            0 => {
                at += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = usize::from(*b.get(at + 1).ok_or(Error::Option(code))?);
        let v = b.get(at + 2..at + 2 + len).ok_or(Error::Option(code))?;
        at += 2 + len;
        let o = &mut m.options;
        match code {
            1 => o.subnet_mask = one_ip(v),
            2 => o.utc_time_offset_sec = u32_of(v).map(|x| x as i32),
            3 => o.router = Some(ips(v)),
            4 => o.time_servers = Some(ips(v)),
            6 => o.dns_servers = Some(ips(v)),
            12 => o.hostname = Some(text(v)),
            15 => o.domain_name = Some(text(v)),
            28 => o.broadcast_address = one_ip(v),
            42 => o.ntp_servers = Some(ips(v)),
            50 => o.requested_ip_address = one_ip(v),
            51 => o.ip_address_lease_time_sec = u32_of(v),
            53 => o.message_type = v.first().copied(),
            54 => o.server_identifier = one_ip(v),
            55 => o.parameter_request_list = Some(v.to_vec()),
            56 => o.message = Some(text(v)),
            57 => {
                o.max_dhcp_message_size = v.try_into().ok().map(u16::from_be_bytes);
            }
            58 => o.renewal_time_sec = u32_of(v),
            59 => o.rebinding_time_sec = u32_of(v),
            60 => o.class_identifier = Some(text(v)),
            67 => o.boot_file_name = Some(text(v)),
            124 => o.vendor_identifying_options = Some(vendor_classes(v)),
            _ => {}
        }
    }
    Ok(m)
}

/// Option 124: (enterprise number u32, length u8, data) repeated; a cut entry ends it.
fn vendor_classes(mut v: &[u8]) -> Vec<VendorClass> {
    let mut out = Vec::new();
    while v.len() >= 5 {
        let enterprise = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        let n = usize::from(v[4]);
        let Some(data) = v.get(5..5 + n) else {
            break;
        };
        out.push(VendorClass {
            enterprise,
            data: data.to_vec(),
        });
        v = &v[5 + n..];
    }
    out
}

/// The name of a message type (option 53), as Packetbeat writes it.
pub fn message_type_name(t: u8) -> String {
    match t {
        1 => "discover".into(),
        2 => "offer".into(),
        3 => "request".into(),
        4 => "decline".into(),
        5 => "ack".into(),
        6 => "nak".into(),
        7 => "release".into(),
        8 => "inform".into(),
        n => format!("unknown ({n})"),
    }
}

/// The name of an option code (for `parameter_request_list`), as Packetbeat writes it.
pub fn option_name(code: u8) -> String {
    let s = match code {
        1 => "Subnet Mask",
        2 => "Time Offset",
        3 => "Router",
        4 => "Time Server",
        5 => "Name Server",
        6 => "Domain Name Server",
        7 => "Log Server",
        8 => "Quote Server",
        9 => "LPR Server",
        10 => "Impress Server",
        11 => "Resource Location Server",
        12 => "Host Name",
        13 => "Boot File Size",
        14 => "Merit Dump File",
        15 => "Domain Name",
        16 => "Swap Server",
        17 => "Root Path",
        18 => "Extensions Path",
        19 => "IP Forwarding enable/disable",
        20 => "Non-local Source Routing enable/disable",
        21 => "Policy Filter",
        22 => "Maximum Datagram Reassembly Size",
        23 => "Default IP Time-to-live",
        24 => "Path MTU Aging Timeout",
        25 => "Path MTU Plateau Table",
        26 => "Interface MTU",
        27 => "All Subnets Are Local",
        28 => "Broadcast Address",
        29 => "Perform Mask Discovery",
        30 => "Mask Supplier",
        31 => "Perform Router Discovery",
        32 => "Router Solicitation Address",
        33 => "Static Routing Table",
        34 => "Trailer Encapsulation",
        35 => "ARP Cache Timeout",
        36 => "Ethernet Encapsulation",
        37 => "Default TCP TTL",
        38 => "TCP Keepalive Interval",
        39 => "TCP Keepalive Garbage",
        40 => "Network Information Service Domain",
        41 => "Network Information Servers",
        42 => "NTP Servers",
        43 => "Vendor Specific Information",
        44 => "NetBIOS over TCP/IP Name Server",
        45 => "NetBIOS over TCP/IP Datagram Distribution Server",
        46 => "NetBIOS over TCP/IP Node Type",
        47 => "NetBIOS over TCP/IP Scope",
        48 => "X Window System Font Server",
        49 => "X Window System Display Manager",
        50 => "Requested IP Address",
        51 => "IP Addresses Lease Time",
        52 => "Option Overload",
        53 => "DHCP Message Type",
        54 => "Server Identifier",
        55 => "Parameter Request List",
        56 => "Message",
        57 => "Maximum DHCP Message Size",
        58 => "Renew Time Value",
        59 => "Rebinding Time Value",
        60 => "Class Identifier",
        61 => "Client identifier",
        66 => "TFTP Server Name",
        67 => "Bootfile Name",
        81 => "Client FQDN",
        119 => "Domain Search",
        121 => "Classless Static Route",
        124 => "Vendor-Identifying Vendor Class",
        125 => "Vendor-Identifying Vendor-Specific Information",
        252 => "Web Proxy Auto-Discovery",
        n => return format!("unknown ({n})"),
    };
    s.to_string()
}

/// The name of a hardware type (IANA ARP parameters).
pub fn hardware_type_name(t: u8) -> String {
    let s = match t {
        1 => "Ethernet",
        2 => "Experimental Ethernet",
        3 => "Amateur Radio AX.25",
        4 => "Proteon ProNET Token Ring",
        5 => "Chaos",
        6 => "IEEE 802",
        7 => "ARCNET",
        15 => "Frame Relay",
        16 => "ATM",
        20 => "Serial Line",
        32 => "InfiniBand",
        n => return format!("unknown ({n})"),
    };
    s.to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A DHCP message: op, xid, client MAC, yiaddr, then the options' bytes.
    pub fn message(op: u8, xid: u32, mac: [u8; 6], yiaddr: [u8; 4], options: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; FIXED];
        b[0] = op;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&xid.to_be_bytes());
        b[16..20].copy_from_slice(&yiaddr);
        b[28..34].copy_from_slice(&mac);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(options);
        b.push(255);
        b
    }

    #[test]
    fn an_offer_with_its_options() {
        let opts = [
            53, 1, 2, 54, 4, 192, 168, 0, 1, 51, 4, 0, 0, 0x0e, 0x10, 1, 4, 255, 255, 255, 0, 3, 8,
            192, 168, 0, 1, 192, 168, 0, 2, 6, 4, 8, 8, 8, 8, 12, 3, b'p', b'c', b'1', 0, 0, 124,
            7, 0, 0, 0, 9, 2, 0xab, 0xcd,
        ];
        let m = parse(&message(
            2,
            0x3d1d,
            [0, 0x0b, 0x82, 1, 0xfc, 0x42],
            [192, 168, 0, 10],
            &opts,
        ))
        .unwrap();
        assert_eq!((m.op, m.xid, m.htype), (2, 0x3d1d, 1));
        assert_eq!(m.yiaddr, Ipv4Addr::new(192, 168, 0, 10));
        let o = &m.options;
        assert_eq!(o.message_type, Some(2));
        assert_eq!(o.server_identifier, Some(Ipv4Addr::new(192, 168, 0, 1)));
        assert_eq!(o.ip_address_lease_time_sec, Some(3600));
        assert_eq!(o.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(o.router.as_ref().map(Vec::len), Some(2));
        assert_eq!(o.hostname.as_deref(), Some("pc1"));
        assert_eq!(
            o.vendor_identifying_options,
            Some(vec![VendorClass {
                enterprise: 9,
                data: vec![0xab, 0xcd]
            }])
        );
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let good = message(1, 1, [1; 6], [0; 4], &[53, 1, 1, 55, 2, 1, 3]);
        assert!(parse(&good).is_ok());
        assert_eq!(parse(&good[..200]), Err(Error::Short));
        let mut bad = good.clone();
        bad[FIXED] = 0;
        assert_eq!(parse(&bad), Err(Error::NoMagic));
        let mut cut = good.clone();
        cut.truncate(cut.len() - 2);
        assert_eq!(parse(&cut), Err(Error::Option(55)));
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
    }
}
