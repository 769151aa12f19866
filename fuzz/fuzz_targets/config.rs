//! psk.yaml: any bytes either validate or give located diagnostics; never
//! a panic, and (with the parser's depth guard) never a slow input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("psk.yaml");
        if let Err(e) = psk::config::Config::parse(path, text) {
            assert!(!e.diagnostics.is_empty());
            assert!(e.to_string().contains("psk.yaml"));
        }
    }
});
