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
    g.progress.note(&format!(
        "next: `umoci unpack --image {0}/.imgbuild/oci:frontend bundle` to look inside, or `cd {0} && imgbuild verify frontend`",
        dir.display()
    ));
    Ok(0)
}
