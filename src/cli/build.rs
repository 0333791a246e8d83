//! `imgbuild build [IMAGE...]` (and `imgbuild IMAGE`).

use super::global::Global;
use crate::build::{self, Options};
use crate::compress::Compression;
use crate::registry;
use crate::usage;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Image names from imgbuild.toml (default: all)
    images: Vec<String>,
    /// Where to write: oci:DIR[:TAG] or docker-archive:FILE (default: oci:.imgbuild/oci:IMAGE)
    #[arg(long, value_name = "DEST")]
    output: Option<String>,
    /// Layer compression (overrides imgbuild.toml)
    #[arg(long, value_parser = ["gzip", "zstd", "none"])]
    compression: Option<String>,
    /// gzip level, 1 (fastest) to 9 (smallest); default 5 (overrides imgbuild.toml)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=9))]
    gzip_level: Option<u32>,
    /// Also publish each image to its `repository` from imgbuild.toml
    #[arg(long)]
    push: bool,
    /// Tag to push (repeatable; default: the repository's tag, else `latest`)
    #[arg(long = "tag", value_name = "T", requires = "push")]
    tags: Vec<String>,
    /// Print one JSON summary per image on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: &BuildArgs) -> Result<i32> {
    let project = g.project()?;
    let names = project.images(&a.images)?;
    if a.output.is_some() && names.len() > 1 {
        return Err(usage!(
            "--output takes one image; name it, e.g. `imgbuild build {} --output ...`",
            names[0]
        ));
    }
    let opts = Options {
        output: a.output.clone(),
        compression: a.compression.as_deref().and_then(Compression::parse),
        gzip_level: a.gzip_level,
        verbose: g.verbose,
        push: a.push,
        tags: a.tags.clone(),
        registry: registry::options_for_project(&project.spec, &g.insecure),
    };
    build::build_all(&project, &names, &opts, &g.progress, |built, summary| {
        let name = &summary.image;
        if a.json {
            println!("{}", serde_json::to_string(summary)?);
        } else {
            let cached = summary.layers.iter().filter(|l| l.cached).count();
            g.progress.note(&format!(
                "built {name}: {} layers ({cached} cached) → {} in {:.2}s",
                summary.layers.len(),
                summary.reference,
                summary.timings.get("total").copied().unwrap_or(0.0)
            ));
            if a.push {
                g.progress.note(&summary.push_note());
                println!("{}", summary.reference);
            } else {
                println!("{}", built.digest);
            }
        }
        Ok(())
    })?;
    Ok(0)
}
