//! The frames of the Beats protocol (lumberjack v2), client side, pure: a window
//! (`2W` + count), events as JSON frames (`2J` + sequence + length + JSON), optionally
//! wrapped in zlib-compressed frames (`2C` + length + data), and the server's
//! acknowledgement (`2A` + the sequence number of the last event it has taken; sequences
//! restart at 1 in every window).
//!
//! A window's events may come in several compressed frames (Logstash's beats input and
//! go-lumber count the events of a window across frames): that lets the output send one
//! part of a window while it compresses the next.

use flate2::{Compress, Compression, FlushCompress, Status};

pub const VERSION: u8 = b'2';
/// An ACK frame's size.
pub const ACK_LEN: usize = 6;

/// Appends a window frame announcing `n` events.
pub fn window(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[VERSION, b'W']);
    out.extend_from_slice(&n.to_be_bytes());
}

/// Appends one event's JSON frame, its payload appended by `write` (no copy in between).
pub fn json(out: &mut Vec<u8>, seq: u32, write: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(&[VERSION, b'J']);
    out.extend_from_slice(&seq.to_be_bytes());
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// A zlib compressor kept from one frame to the next (its tables are allocated once).
pub struct Compressor {
    z: Compress,
}

impl Compressor {
    /// At `level`, 1 (fastest) to 9.
    pub fn new(level: u32) -> Compressor {
        Compressor {
            z: Compress::new(Compression::new(level), true),
        }
    }

    /// Appends `frames` compressed as one compressed frame (a whole zlib stream).
    pub fn frame(&mut self, out: &mut Vec<u8>, frames: &[u8]) {
        self.z.reset();
        out.extend_from_slice(&[VERSION, b'C', 0, 0, 0, 0]);
        let start = out.len();
        let base = self.z.total_in();
        loop {
            // zlib's bound for stored blocks, so that one call usually suffices.
            let left = frames.len() - (self.z.total_in() - base) as usize;
            out.reserve(left + left / 1000 + 64);
            let from = frames.len() - left;
            match self
                .z
                .compress_vec(&frames[from..], out, FlushCompress::Finish)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) => unreachable!("compressing to memory: {e}"),
            }
        }
        let len = (out.len() - start) as u32;
        out[start - 4..start].copy_from_slice(&len.to_be_bytes());
    }
}

/// Why bytes from the server are not an ACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a lumberjack v2 ACK frame: {0:02x?} (is this a Beats input?)")]
pub struct NotAck(pub [u8; 2]);

/// The sequence number of an ACK frame.
pub fn ack(frame: &[u8; ACK_LEN]) -> Result<u32, NotAck> {
    if frame[0] != VERSION || frame[1] != b'A' {
        return Err(NotAck([frame[0], frame[1]]));
    }
    Ok(u32::from_be_bytes([frame[2], frame[3], frame[4], frame[5]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    fn inflate(c: &[u8]) -> Vec<u8> {
        assert_eq!(&c[..2], b"2C");
        let len = u32::from_be_bytes([c[2], c[3], c[4], c[5]]) as usize;
        assert_eq!(len, c.len() - 6);
        let mut back = Vec::new();
        ZlibDecoder::new(&c[6..]).read_to_end(&mut back).unwrap();
        back
    }

    #[test]
    fn frames_as_on_the_wire() {
        let mut out = Vec::new();
        window(&mut out, 2);
        json(&mut out, 1, |o| o.extend_from_slice(b"{}"));
        assert_eq!(out, b"2W\0\0\0\x022J\0\0\0\x01\0\0\0\x02{}");
        let mut c = Vec::new();
        Compressor::new(3).frame(&mut c, &out);
        assert_eq!(inflate(&c), out);
    }

    #[test]
    fn a_kept_compressor_makes_whole_streams_of_any_size() {
        let mut z = Compressor::new(3);
        // Incompressible bytes larger than the first reservation, then small and empty.
        let mut big = Vec::new();
        let mut x = 1u32;
        for _ in 0..300_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            big.push((x >> 24) as u8);
        }
        for data in [&big[..], b"2J\0\0\0\x01\0\0\0\x02{}", b""] {
            let mut c = b"prefix".to_vec();
            z.frame(&mut c, data);
            assert_eq!(&c[..6], b"prefix");
            assert_eq!(inflate(&c[6..]), data);
        }
    }

    #[test]
    fn acks() {
        assert_eq!(ack(b"2A\0\0\x01\x00"), Ok(256));
        assert_eq!(ack(b"HTTP/1"), Err(NotAck(*b"HT")));
    }
}
