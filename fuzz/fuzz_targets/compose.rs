//! Compose files: parsing and pinning never panic, and a pinned file still parses.
#![no_main]
use imgbuild::pin::{apply, plan, Compose, Pins};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(c) = Compose::parse(Path::new("fuzz.yml"), text.to_string()) else { return };
    let mut pins = Pins::new();
    pins.insert("docker.io/library/app".into(), format!("app@sha256:{}", "a".repeat(64)));
    let files = [c];
    let actions = plan(&files, &pins);
    for (_, new) in apply(&files, &actions) {
        Compose::parse(Path::new("fuzz.yml"), new).expect("a pinned file parses");
    }
});
