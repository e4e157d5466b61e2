//! Any bytes through the whole parse: it must return, never panic, and a successful parse
//! must describe a frame no longer than the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = xlb::wire::parse_frame(data) {
        assert!(p.l3_offset <= data.len());
    }
});
