//! `imgbuild test IMAGE`: run the image's `smoke` commands in its last build (runc).

use super::global::Global;
use crate::smoke;
use anyhow::Result;

pub fn run(g: &Global, image: &str) -> Result<i32> {
    let project = g.project()?;
    match smoke::run(&project, image, &g.progress) {
        Ok(o) if o.failed.is_empty() => {
            g.progress
                .note(&format!("{image}: {} smoke command(s) passed", o.passed));
            Ok(0)
        }
        Ok(o) => {
            let names: Vec<&str> = o.failed.iter().map(|(c, _)| c.as_str()).collect();
            eprintln!(
                "error: {image}: {} of {} smoke command(s) failed: {}",
                o.failed.len(),
                o.failed.len() + o.passed,
                names.join("; ")
            );
            Ok(1)
        }
        Err(e) if e.is::<smoke::NoRuntime>() => {
            eprintln!("error: {e}\nhint: the smoke commands did not run, so nothing was proven; run them where runc works");
            Ok(2)
        }
        Err(e) => Err(e),
    }
}
