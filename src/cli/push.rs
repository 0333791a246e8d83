//! `imgbuild push [IMAGE...]`: publish the last builds.

use super::global::Global;
use crate::publish;
use crate::registry;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Image names from imgbuild.toml (default: all)
    images: Vec<String>,
    /// Tag to push (repeatable; default: the repository's tag, else `latest`)
    #[arg(long = "tag", value_name = "T")]
    tags: Vec<String>,
    /// Print one JSON summary per image on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: &PushArgs) -> Result<i32> {
    let project = g.project()?;
    let names = project.images(&a.images)?;
    let opts = registry::options_for_project(&project.spec, &g.insecure);
    let store = project.store()?;
    for name in &names {
        let summary = publish::push_last(&project, name, &a.tags, &opts, &store)?;
        if a.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            g.progress.note(&summary.push_note());
            println!("{}", summary.reference);
        }
    }
    Ok(0)
}
