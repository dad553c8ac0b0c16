//! Decoding of the kernel's `struct tcp_info` (the `INET_DIAG_INFO` attribute).
//!
//! Written by hand because the struct grows with every kernel: an older kernel sends fewer
//! bytes (the `rich_nlas` decoder of netlink-packet-sock-diag rejects anything shorter than
//! its own idea of the struct), a newer one sends more. Reading fixed offsets from a
//! zero-padded copy accepts both: fields the kernel did not send read as zero.

/// The `tcp_info` fields connbeat reports or uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: u8,
    pub retransmits: u8,
    /// Milliseconds since the last data was sent.
    pub last_data_sent_ms: u32,
    /// Milliseconds since the last data was received.
    pub last_data_recv_ms: u32,
    /// Milliseconds since the last ACK was received.
    pub last_ack_recv_ms: u32,
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub snd_cwnd: u32,
    pub total_retrans: u32,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_out: u32,
    pub segs_in: u32,
}

/// Byte offsets in `struct tcp_info` (include/uapi/linux/tcp.h).
mod off {
    pub const STATE: usize = 0;
    pub const RETRANSMITS: usize = 2;
    pub const LAST_DATA_SENT: usize = 44;
    pub const LAST_DATA_RECV: usize = 52;
    pub const LAST_ACK_RECV: usize = 56;
    pub const RTT: usize = 68;
    pub const RTTVAR: usize = 72;
    pub const SND_CWND: usize = 80;
    pub const TOTAL_RETRANS: usize = 100;
    pub const BYTES_ACKED: usize = 120;
    pub const BYTES_RECEIVED: usize = 128;
    pub const SEGS_OUT: usize = 136;
    pub const SEGS_IN: usize = 140;
    /// Everything up to and including `segs_in`.
    pub const KNOWN_LEN: usize = 144;
}

impl TcpInfo {
    /// Decodes whatever prefix of the struct the kernel sent; missing fields are zero.
    pub fn parse(raw: &[u8]) -> TcpInfo {
        let mut b = [0u8; off::KNOWN_LEN];
        let n = raw.len().min(off::KNOWN_LEN);
        b[..n].copy_from_slice(&raw[..n]);
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        TcpInfo {
            state: b[off::STATE],
            retransmits: b[off::RETRANSMITS],
            last_data_sent_ms: u32_at(off::LAST_DATA_SENT),
            last_data_recv_ms: u32_at(off::LAST_DATA_RECV),
            last_ack_recv_ms: u32_at(off::LAST_ACK_RECV),
            rtt_us: u32_at(off::RTT),
            rttvar_us: u32_at(off::RTTVAR),
            snd_cwnd: u32_at(off::SND_CWND),
            total_retrans: u32_at(off::TOTAL_RETRANS),
            bytes_acked: u64_at(off::BYTES_ACKED),
            bytes_received: u64_at(off::BYTES_RECEIVED),
            segs_out: u32_at(off::SEGS_OUT),
            segs_in: u32_at(off::SEGS_IN),
        }
    }

    /// The oldest activity the idle timers prove, in milliseconds: a lower bound on the
    /// connection's age, used when a connection was never seen by a poll.
    pub fn min_age_ms(&self) -> u32 {
        self.last_data_sent_ms
            .max(self.last_data_recv_ms)
            .max(self.last_ack_recv_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_at_their_offsets_and_pads_short_structs() {
        let mut raw = vec![0u8; 232];
        raw[0] = 1; // ESTABLISHED
        raw[68..72].copy_from_slice(&210u32.to_ne_bytes());
        raw[120..128].copy_from_slice(&1520u64.to_ne_bytes());
        raw[128..136].copy_from_slice(&8211u64.to_ne_bytes());
        raw[140..144].copy_from_slice(&7u32.to_ne_bytes());
        let t = TcpInfo::parse(&raw);
        assert_eq!(t.state, 1);
        assert_eq!(t.rtt_us, 210);
        assert_eq!(t.bytes_acked, 1520);
        assert_eq!(t.bytes_received, 8211);
        assert_eq!(t.segs_in, 7);
        // An old kernel's 104-byte struct: the later fields are zero, nothing fails.
        let old = TcpInfo::parse(&raw[..104]);
        assert_eq!(old.rtt_us, 210);
        assert_eq!(old.bytes_acked, 0);
        assert_eq!(TcpInfo::parse(&[]), TcpInfo::default());
    }
}
