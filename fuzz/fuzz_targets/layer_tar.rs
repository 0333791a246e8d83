//! The tar reader used on base layers: any bytes give a listing or an error, never a panic,
//! and no listed path is absolute or climbs out with `..`.
#![no_main]
use imgbuild::rootfs::{Listing, ReadLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(l) = Listing::from_tar(data, &ReadLimits { refuse_devices: true }) {
        for n in &l.nodes {
            assert!(!n.path.starts_with('/'), "absolute path listed: {}", n.path);
            assert!(!n.path.split('/').any(|c| c == ".."), "`..` listed: {}", n.path);
        }
    }
});
