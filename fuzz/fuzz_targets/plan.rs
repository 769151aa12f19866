//! Saved plans: any bytes load or are refused naming the file; what loads
//! renders in every format and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("plan.json");
    match psk::planfile::PlanFile::parse(path, data) {
        Ok(file) => {
            let again = psk::planfile::PlanFile::parse(path, &file.to_bytes())
                .expect("psk's own plan bytes parse");
            assert_eq!(again, file);
            let mut out = Vec::new();
            psk::render::human_styled(&file.plan, &mut out, true).expect("renders");
            psk::render::json(&file.plan, &mut out).expect("renders");
            psk::render::markdown::markdown(&file.plan, &file.state_diff, &mut out)
                .expect("renders");
        }
        Err(e) => assert!(e.to_string().contains("plan.json")),
    }
});
