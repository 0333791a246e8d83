//! `imgbuild base list` and `imgbuild base import ROOTFS --output DEST`.

use super::global::Global;
use crate::base::{self, Import};
use crate::compress::Compression;
use crate::image::Platform;
use crate::project::{self, store_dir};
use crate::store::Store;
use crate::target::Output;
use crate::usage;
use anyhow::Result;
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum BaseCommand {
    /// List the catalog of well-known bases, usable by name as `base = "NAME"`
    List,
    /// Make a base image from a root filesystem directory or tar (.tar, .tar.gz, .tar.zst)
    Import {
        rootfs: PathBuf,
        /// oci:DIR[:TAG] or docker-archive:FILE
        #[arg(long, value_name = "DEST")]
        output: String,
        /// Environment for the image config, e.g. --env PATH=/bin (default PATH is docker's)
        #[arg(long, value_name = "K=V")]
        env: Vec<String>,
        /// os/arch of the root filesystem (default: this machine's)
        #[arg(long)]
        platform: Option<String>,
        #[arg(long, value_parser = ["gzip", "zstd", "none"], default_value = "gzip")]
        compression: String,
    },
}

pub fn run(g: &Global, c: &BaseCommand) -> Result<i32> {
    match c {
        BaseCommand::List => {
            for n in crate::catalog::names() {
                let e = crate::catalog::get(n).expect("listed")?;
                println!("{n:22} {:45} {}", e.reference, e.description);
            }
            Ok(0)
        }
        BaseCommand::Import {
            rootfs,
            output,
            env,
            platform,
            compression,
        } => import(g, rootfs, output, env, platform.as_deref(), compression),
    }
}

fn import(
    g: &Global,
    rootfs: &Path,
    output: &str,
    env: &[String],
    platform: Option<&str>,
    compression: &str,
) -> Result<i32> {
    let platform = match platform {
        Some(p) => Platform::parse_named(p, &format!("--platform `{p}`"))?,
        None => Platform::host(),
    };
    let env = env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| usage!("--env `{kv}`: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    // A base is not part of any project's history: no git date, only SOURCE_DATE_EPOCH.
    let mtime = project::source_date(None)?;
    let store = Store::open(store_dir(g.project().ok().as_ref(), &g.cwd))?;
    let out = Output::parse(output, "latest", &g.cwd)?;
    let imp = Import {
        source: g.cwd.join(rootfs),
        env,
        platform,
        mtime,
        compression: Compression::parse(compression).unwrap(),
    };
    let (digest, note) = base::import(&imp, out, &store)?;
    if !note.is_empty() {
        g.progress.note(&format!("note: {note}"));
    }
    g.progress
        .note(&format!("imported {} → {output}", rootfs.display()));
    println!("{digest}");
    Ok(0)
}
