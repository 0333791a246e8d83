//! `imgbuild test IMAGE [--platform P]...`: run the image's `smoke` commands in its last
//! build (runc) — of an image index, on every platform this machine can run.

use super::global::Global;
use crate::image::Platform;
use crate::smoke;
use anyhow::Result;

pub fn run(g: &Global, image: &str, platforms: &[Platform]) -> Result<i32> {
    let project = g.project()?;
    match smoke::run_platforms(&project, image, platforms, &g.progress) {
        Ok((outs, skipped)) => {
            let mut code = 0;
            for o in &outs {
                let what = match &o.platform {
                    Some(p) => format!("{image} ({p})"),
                    None => image.to_string(),
                };
                if o.failed.is_empty() {
                    g.progress
                        .note(&format!("{what}: {} smoke command(s) passed", o.passed));
                } else {
                    let names: Vec<&str> = o.failed.iter().map(|(c, _)| c.as_str()).collect();
                    eprintln!(
                        "error: {what}: {} of {} smoke command(s) failed: {}",
                        o.failed.len(),
                        o.failed.len() + o.passed,
                        names.join("; ")
                    );
                    code = 1;
                }
            }
            for (p, _) in &skipped {
                g.progress.note(&format!(
                    "{image} ({p}): not tested on this machine (see above)"
                ));
            }
            Ok(code)
        }
        Err(e) if e.is::<smoke::NoRuntime>() => {
            eprintln!("error: {e}\nhint: the smoke commands did not run, so nothing was proven; run them where runc works");
            Ok(2)
        }
        Err(e) => Err(e),
    }
}
