//! `imgbuild sample DIR`: write the embedded sample project and build its images there.

use super::global::Global;
use crate::build::{self, Options};
use crate::project::Project;
use anyhow::Result;
use std::path::Path;

pub fn run(g: &Global, dir: &Path) -> Result<i32> {
    let dir = g.cwd.join(dir);
    crate::sample::write(&dir)?;
    g.progress
        .note(&format!("sample project in {}", dir.display()));
    let project = Project::load(&dir, None)?;
    let opts = Options {
        verbose: g.verbose,
        ..Default::default()
    };
    build::build_all(&project, &[], &opts, &g.progress, |built, summary| {
        g.progress
            .note(&format!("built {} → {}", summary.image, summary.reference));
        println!("{} {}", summary.image, built.digest);
        Ok(())
    })?;
    // Where a runtime can run containers: the smoke lines of each image.
    for name in project.images(&[])? {
        match crate::smoke::run(&project, &name, &g.progress) {
            Ok(o) if o.failed.is_empty() => g
                .progress
                .note(&format!("{name}: {} smoke command(s) passed", o.passed)),
            Ok(o) => anyhow::bail!("{name}: {} smoke command(s) failed", o.failed.len()),
            Err(e) if e.is::<crate::smoke::NoRuntime>() => {
                g.progress.note(&format!("smoke tests skipped: {e}"));
                break;
            }
            Err(e) => return Err(e),
        }
    }
    g.progress.note(&format!(
        "next: `umoci unpack --image {0}/.imgbuild/oci:frontend bundle` to look inside, or `cd {0} && imgbuild verify frontend`",
        dir.display()
    ));
    Ok(0)
}
