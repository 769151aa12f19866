//! The state file: any bytes parse or are refused naming the file; what
//! parses writes back to bytes that parse to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("psk.state.json");
    match psk::state::parse(path, data) {
        Ok(state) => {
            let again = psk::state::parse(path, &state.to_bytes()).expect("psk's own bytes parse");
            assert_eq!(again, state);
        }
        Err(e) => assert!(e.to_string().contains("psk.state.json")),
    }
});
