//! Shared helpers of the deep-inspection tests: the test configuration, running the
//! library on a capture, asking tshark, and a tiny pcap reader/writer to make damaged
//! captures from good ones.
#![allow(dead_code)]

pub mod synth;

use connbeat::config::{Config, from_yaml_str};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The protocols on the test ports used by tests/data/record.sh and tests/services.
pub const PROTOCOLS_YAML: &str = r#"
output.console: {enabled: true}
connbeat.protocols:
  - {type: http, ports: [18080], send_headers: ["User-Agent"], real_ip_header: X-Forwarded-For, hide_keywords: [password, pass], redact_authorization: true}
  - {type: dns, ports: [15353]}
  - {type: redis, ports: [16379]}
  - {type: mysql, ports: [13306]}
  - {type: pgsql, ports: [15432]}
  - {type: tls, ports: [18443]}
  - {type: memcache, ports: [11311]}
  - {type: mongodb, ports: [27117]}
  - {type: smtp, ports: [10025]}
"#;

/// tshark's "decode as" for the same ports.
pub const DECODE_AS: &[&str] = &[
    "tcp.port==18080,http",
    "udp.port==15353,dns",
    "tcp.port==15353,dns",
    "tcp.port==16379,resp",
    "tcp.port==13306,mysql",
    "tcp.port==15432,pgsql",
    "tcp.port==18443,tls",
    "tcp.port==11311,memcache",
    "udp.port==11311,memcache",
    "tcp.port==27117,mongo",
    "tcp.port==10025,smtp",
];

pub fn config() -> Config {
    from_yaml_str(PROTOCOLS_YAML, &[], &|_| None).expect("test config")
}

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Runs deep inspection on a capture through the library; returns the event bodies.
pub fn inspect(path: &Path) -> (Vec<Value>, connbeat::inspect::OfflineSummary) {
    let mut events = Vec::new();
    let mut sink = |e: connbeat::event::Event| events.push(e.to_value());
    let s =
        connbeat::inspect::run_offline_with(&config(), path, &mut sink, None).expect("offline run");
    (events, s)
}

/// Events of one type.
pub fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

/// True when tshark is installed; prints a loud SKIP line otherwise.
pub fn have_tshark(test: &str) -> bool {
    let ok = Command::new("tshark")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED {test}: tshark is not installed (apt-get install tshark)");
    }
    ok
}

/// `tshark -r FILE -Y FILTER -T fields -e F...`, one Vec of fields per packet.
pub fn tshark(path: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(path).arg("-n");
    for d in DECODE_AS {
        cmd.arg("-d").arg(d);
    }
    cmd.args([
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
    ]);
    for f in fields {
        cmd.arg("-e").arg(f);
    }
    let out = cmd.output().expect("running tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Decodes tshark's hex rendering of a bytes field.
pub fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A pcap file in memory: global header, link type, and records (header + data).
#[derive(Clone)]
pub struct Pcap {
    pub header: Vec<u8>,
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Pcap {
    /// Reads a classic little-endian microsecond pcap (what tcpdump writes here).
    pub fn read(path: &Path) -> Pcap {
        let b = std::fs::read(path).expect("read pcap");
        assert_eq!(
            &b[..4],
            &[0xd4, 0xc3, 0xb2, 0xa1],
            "{} is not a little-endian pcap",
            path.display()
        );
        let mut records = Vec::new();
        let mut at = 24;
        while at + 16 <= b.len() {
            let caplen = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
            let hdr = b[at..at + 16].to_vec();
            let data = b[at + 16..(at + 16 + caplen).min(b.len())].to_vec();
            records.push((hdr, data));
            at += 16 + caplen;
        }
        Pcap {
            header: b[..24].to_vec(),
            records,
        }
    }

    pub fn write(&self, path: &Path) {
        let mut out = self.header.clone();
        for (h, d) in &self.records {
            let mut h = h.clone();
            h[8..12].copy_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(d);
        }
        std::fs::write(path, out).expect("write pcap");
    }

    /// TCP payload length of a record (Ethernet, IPv4), 0 when not TCP.
    pub fn tcp_payload_len(&self, i: usize) -> usize {
        let d = &self.records[i].1;
        if d.len() < 34 || d[12..14] != [0x08, 0x00] || d[23] != 6 {
            return 0;
        }
        let ihl = usize::from(d[14] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([d[16], d[17]]));
        let off = usize::from(d[14 + ihl + 12] >> 4) * 4;
        total.saturating_sub(ihl + off)
    }

    /// Offset of the TCP payload in an Ethernet/IPv4 record.
    pub fn tcp_payload_offset(&self, i: usize) -> usize {
        let d = &self.records[i].1;
        let ihl = usize::from(d[14] & 0x0f) * 4;
        14 + ihl + usize::from(d[14 + ihl + 12] >> 4) * 4
    }

    /// Destination port of an Ethernet/IPv4 TCP record.
    pub fn dst_port(&self, i: usize) -> u16 {
        let d = &self.records[i].1;
        let ihl = usize::from(d[14] & 0x0f) * 4;
        u16::from_be_bytes([d[14 + ihl + 2], d[14 + ihl + 3]])
    }
}

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("connbeat-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
