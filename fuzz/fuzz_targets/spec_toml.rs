//! imgbuild.toml parsing: any text gives a spec or a usage error, never a panic.
#![no_main]
use imgbuild::spec::Spec;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Spec::parse(text, Path::new("imgbuild.toml"));
    }
});
