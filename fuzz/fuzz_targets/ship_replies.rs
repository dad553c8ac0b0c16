#![cfg_attr(fuzzing, no_main)]
//! What servers answer the shipping outputs, on arbitrary bytes: RESP replies (the Redis
//! output reads a pipeline's replies one by one from a buffer, as here, with tight limits
//! so that the bounds are reached) and Beats-protocol ACK frames (the Logstash output).

use connbeat::output::logstash::parse_ack;
use connbeat::output::resp::{Limits, parse};

fn run(data: &[u8]) {
    let limits = Limits {
        max_len: 4096,
        max_depth: 3,
    };
    let mut at = 0;
    while let Ok(Some((_, n))) = parse(&data[at..], limits) {
        assert!(n > 0 && at + n <= data.len());
        at += n;
    }
    for frame in data.chunks_exact(6) {
        let _ = parse_ack(frame.try_into().expect("6 bytes"));
    }
}

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

#[cfg(not(fuzzing))]
fn main() {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        run(&data);
        println!("ship_replies: {path}: ok");
    }
}
