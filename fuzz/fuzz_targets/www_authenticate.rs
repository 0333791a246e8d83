//! WWW-Authenticate parsing: no panics on any header value.
#![no_main]
use imgbuild::registry::auth::parse_www_authenticate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = std::str::from_utf8(data) {
        for c in parse_www_authenticate(h) {
            let _ = format!("{c:?}");
        }
    }
});
