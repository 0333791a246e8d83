//! `imgbuild lock [IMAGE...] [--update]`: pin registry bases in imgbuild.lock.

use super::global::Global;
use crate::base;
use crate::registry;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct LockArgs {
    /// Image names from imgbuild.toml (default: all)
    images: Vec<String>,
    /// Re-resolve the tags even where imgbuild.lock pins them
    #[arg(long)]
    update: bool,
}

pub fn run(g: &Global, a: &LockArgs) -> Result<i32> {
    let project = g.project()?;
    let mut opts = registry::options_for_project(&project.spec, &g.insecure);
    opts.update_lock = a.update;
    base::lock(&project, &a.images, &opts, |written, platform, base| {
        g.progress.note(&format!(
            "{written} ({platform}) → {}",
            base.digest
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or_default()
        ));
    })?;
    Ok(0)
}
