//! Stable-toolchain replay: runs a target over the files named on the command line (a
//! crash or corpus file from cargo-fuzz), so a finding can be reproduced without nightly.

pub fn replay(target: &str) {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        connbeat::fuzzing::run(target, &data);
        println!("{target}: {path}: ok");
    }
}

/// The same for a target outside deep inspection.
pub fn replay_with(target: &str, run: fn(&[u8])) {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        run(&data);
        println!("{target}: {path}: ok");
    }
}
