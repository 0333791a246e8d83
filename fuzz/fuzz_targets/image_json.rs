//! Manifest, index and config parsing: no panics, and what parses re-serialises to bytes that
//! parse to the same document.
#![no_main]
use imgbuild::image::{self, ImageConfig, Index, Manifest};
use libfuzzer_sys::fuzz_target;

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(doc) = serde_json::from_slice::<T>(data) {
        let again: T = serde_json::from_slice(&image::to_bytes(&doc)).expect("re-parse");
        assert_eq!(doc, again);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Manifest>(data);
    round_trip::<Index>(data);
    round_trip::<ImageConfig>(data);
});
