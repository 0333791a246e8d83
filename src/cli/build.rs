//! `imgbuild build [IMAGE...]` (and `imgbuild IMAGE`).

use super::global::Global;
use crate::build::{self, Options};
use crate::compress::Compression;
use crate::registry;
use crate::sharedcache;
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
    /// Share layer records through this registry repository (over `cache` in imgbuild.toml and
    /// IMGBUILD_CACHE_REPO; "" turns the shared cache off)
    #[arg(long = "cache", value_name = "REPO")]
    cache: Option<String>,
    /// Build for this platform instead of imgbuild.toml's `platforms` (repeatable; several
    /// give an image index), e.g. linux/arm64
    #[arg(long = "platform", value_name = "OS/ARCH")]
    platforms: Vec<String>,
    /// `read`: look layers up in the shared cache but never write to it (untrusted jobs)
    #[arg(long, value_name = "MODE", value_parser = ["read", "read-write"])]
    cache_mode: Option<String>,
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
        shared: sharedcache::settings(
            a.cache.as_deref(),
            a.cache_mode.as_deref(),
            &project.spec,
            &project.spec_path,
        )?,
        platforms: super::global::platforms(&a.platforms)?,
    };
    build::build_all(&project, &names, &opts, &g.progress, |built, summary| {
        let name = &summary.image;
        if a.json {
            println!("{}", serde_json::to_string(summary)?);
        } else {
            let platforms = if summary.platforms.is_empty() {
                String::new()
            } else {
                format!(
                    " for {}",
                    summary
                        .platforms
                        .iter()
                        .map(|p| p.platform.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let all: Vec<&crate::record::LayerReport> = summary
                .layers
                .iter()
                .chain(summary.platforms.iter().flat_map(|p| &p.layers))
                .collect();
            let cached = all.iter().filter(|l| l.cached).count();
            let shared = all
                .iter()
                .filter(|l| l.source.as_deref() == Some("shared cache"))
                .count();
            let from = if shared > 0 {
                format!("{cached} cached, {shared} of them from the shared cache")
            } else {
                format!("{cached} cached")
            };
            g.progress.note(&format!(
                "built {name}{platforms}: {} layers ({from}) → {} in {:.2}s",
                all.len(),
                if summary.reference.is_empty() {
                    "the registry"
                } else {
                    &summary.reference
                },
                summary.timings.get("total").copied().unwrap_or(0.0)
            ));
            if let Some(c) = &summary.shared_cache {
                g.progress.note(&format!(
                    "shared cache {} ({}): {} layer hits, {} base layer hits, {} other hits, {} bytes downloaded, {} bytes uploaded, {} records written",
                    c.repository, c.mode, c.hits, c.base_hits, c.record_hits, c.downloaded_bytes, c.uploaded_bytes, c.records_written
                ));
            }
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
