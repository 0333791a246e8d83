//! uv.lock, pylock.toml and requirements.txt parsing: any text gives packages or an error.
#![no_main]
use imgbuild::python::lock::{load_text, Choice};
use imgbuild::python::markers::Env;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = Env::linux_cpython("3.11.2", "x86_64");
    for name in ["uv.lock", "pylock.toml", "requirements.txt"] {
        let _ = load_text(text, Path::new(name), &env, &Choice::default());
    }
});
