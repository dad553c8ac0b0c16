#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| connbeat::fuzzing::run("icmp", data));

#[cfg(not(fuzzing))]
fn main() {
    connbeat_fuzz::replay("icmp");
}
