#![cfg_attr(fuzzing, no_main)]
//! Processors on arbitrary events: the input, when it is a JSON object, goes through a chain
//! that uses every processor and condition; the raw bytes go through MIME sniffing.

use connbeat::processors::{Chain, mime};
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

fn chain() -> &'static Chain {
    static C: OnceLock<Chain> = OnceLock::new();
    C.get_or_init(|| {
        let list = connbeat::config::expand_dotted(json!([
            {"detect_mime_type": {"field": "a", "target": "a_type"}},
            {"rename": {"fields": [{"from": "a", "to": "b.c"}], "ignore_missing": true}},
            {"add_tags": {"tags": ["t"], "when.or": [
                {"equals.x": 1}, {"contains.y": "z"}, {"regexp.y": "^a+b"},
                {"range.x.gte": 2}, {"network.ip": ["private", "10.0.0.0/8"]},
                {"has_fields": ["b"]}, {"not.and": [{"equals.x": "s"}, {"equals.w": true}]}]}},
            {"if.contains.tags": "t", "then": [{"drop_fields": {"fields": ["/^b/", "x"]}}],
             "else": [{"add_fields": {"target": "k", "fields": {"v": 1}}}]},
            {"include_fields": {"fields": ["k", "tags", "y", "a_type"]}},
            {"drop_event.when.equals.y": "drop"},
        ]));
        Chain::compile(list.as_array().unwrap(), "processors", &mut Vec::new()).unwrap()
    })
}

fn run(data: &[u8]) {
    let _ = mime::detect(data);
    if let Ok(mut m) = serde_json::from_slice::<Map<String, Value>>(data) {
        chain().run(&mut m);
    }
}

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

#[cfg(not(fuzzing))]
fn main() {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        run(&data);
        println!("processors: {path}: ok");
    }
}
