//! The frames of the Beats protocol (lumberjack v2), client side, pure: a window
//! (`2W` + count), events as JSON frames (`2J` + sequence + length + JSON), optionally
//! wrapped in one zlib-compressed frame (`2C` + length + data), and the server's
//! acknowledgement (`2A` + the sequence number of the last event it has taken; sequences
//! restart at 1 in every window).

use flate2::Compression;
use flate2::write::ZlibEncoder;
use std::io::Write;

pub const VERSION: u8 = b'2';
/// An ACK frame's size.
pub const ACK_LEN: usize = 6;

/// Appends a window frame announcing `n` events.
pub fn window(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[VERSION, b'W']);
    out.extend_from_slice(&n.to_be_bytes());
}

/// Appends one event's JSON frame.
pub fn json(out: &mut Vec<u8>, seq: u32, payload: &[u8]) {
    out.extend_from_slice(&[VERSION, b'J']);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends `frames` compressed at `level` (1-9) as one compressed frame.
pub fn compressed(out: &mut Vec<u8>, frames: &[u8], level: u32) {
    let mut z = ZlibEncoder::new(
        Vec::with_capacity(frames.len() / 4),
        Compression::new(level),
    );
    z.write_all(frames).expect("writing to memory");
    let data = z.finish().expect("writing to memory");
    out.extend_from_slice(&[VERSION, b'C']);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&data);
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

    #[test]
    fn frames_as_on_the_wire() {
        let mut out = Vec::new();
        window(&mut out, 2);
        json(&mut out, 1, b"{}");
        assert_eq!(out, b"2W\0\0\0\x022J\0\0\0\x01\0\0\0\x02{}");
        let mut c = Vec::new();
        compressed(&mut c, &out, 3);
        assert_eq!(&c[..2], b"2C");
        let len = u32::from_be_bytes([c[2], c[3], c[4], c[5]]) as usize;
        assert_eq!(len, c.len() - 6);
        let mut back = Vec::new();
        ZlibDecoder::new(&c[6..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, out);
    }

    #[test]
    fn acks() {
        assert_eq!(ack(b"2A\0\0\x01\x00"), Ok(256));
        assert_eq!(ack(b"HTTP/1"), Err(NotAck(*b"HT")));
    }
}
