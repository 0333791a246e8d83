//! `imgbuild presets`: the built-in layer presets.

use anyhow::Result;

pub fn run() -> Result<i32> {
    for n in crate::preset::names() {
        println!("{n:20} {}", crate::preset::get(n)?.description);
    }
    Ok(0)
}
