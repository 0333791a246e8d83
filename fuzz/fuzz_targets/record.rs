//! RECORD parsing: no panics; what parses writes back to text that parses to the same rows.
#![no_main]
use imgbuild::python::record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(rows) = record::parse(text) {
        let again = record::parse(&record::write(&rows)).expect("written RECORD parses");
        assert_eq!(rows.len(), again.len());
        for r in &rows {
            let _ = record::installed_path("usr/local/lib/python3.11/site-packages", &r.path);
        }
    }
});
