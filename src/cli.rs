//! The command line: `imgbuild [build] IMAGE`, `verify`, `base import`, `presets`.

use crate::base::{self, Import};
use crate::build::{self, Options};
use crate::compress::Compression;
use crate::error::{exit_code, UsageError};
use crate::image::Platform;
use crate::layout::{self, Layout};
use crate::plan::Project;
use crate::progress::Progress;
use crate::publish::Output;
use crate::store::Store;
use crate::usage;
use crate::verify;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Examples:
  imgbuild api                          build image `api` from ./imgbuild.toml into .imgbuild/oci
  imgbuild build api --output docker-archive:api.tar
  imgbuild verify oci:.imgbuild/oci:api re-check every blob, diff_id and layer check
  imgbuild base import rootfs/ --output oci:base:latest

Exit codes: 0 success, 1 build or verification failure, 2 usage or configuration error.
Environment: IMGBUILD_CACHE (blob store and caches), SOURCE_DATE_EPOCH (timestamps).";

#[derive(Parser, Debug)]
#[command(name = "imgbuild", version, about = "Build reproducible, verified OCI images for Python and Node projects — no Docker engine needed.", after_help = AFTER_HELP)]
pub struct Cli {
    /// imgbuild.toml to use (default: ./imgbuild.toml or the nearest parent's)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Explain cache hits and misses
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Print nothing on stderr but errors
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build images from imgbuild.toml (`imgbuild IMAGE` is short for this)
    Build(BuildArgs),
    /// Re-check an image: blobs, diff_ids, and every layer check
    Verify(VerifyArgs),
    /// Base images
    #[command(subcommand)]
    Base(BaseCommand),
    /// List the built-in layer presets
    Presets,
}

#[derive(Args, Debug)]
struct BuildArgs {
    /// Image names from imgbuild.toml (default: all)
    images: Vec<String>,
    /// Where to write: oci:DIR[:TAG] or docker-archive:FILE (default: oci:.imgbuild/oci:IMAGE)
    #[arg(long, value_name = "DEST")]
    output: Option<String>,
    /// Layer compression (overrides imgbuild.toml)
    #[arg(long, value_parser = ["gzip", "zstd", "none"])]
    compression: Option<String>,
    /// Print one JSON summary per image on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// An image name from imgbuild.toml, oci:DIR[:TAG], or docker-archive:FILE
    target: String,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum BaseCommand {
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

const SUBCOMMANDS: &[&str] = &["build", "verify", "base", "presets", "help"];

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let mut args: Vec<String> = std::env::args().collect();
    // `imgbuild api` means `imgbuild build api`.
    if let Some(first) = args
        .iter()
        .skip(1)
        .position(|a| !a.starts_with('-'))
        .map(|i| i + 1)
    {
        let prev_takes_value = args[first - 1] == "--config";
        if !prev_takes_value && !SUBCOMMANDS.contains(&args[first].as_str()) {
            args.insert(first, "build".into());
        }
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            exit_code(&e)
        }
    }
}

fn report(e: &anyhow::Error) {
    if let Some(u) = e.downcast_ref::<UsageError>() {
        eprintln!("error: {u}");
        return;
    }
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

fn run(cli: Cli) -> Result<i32> {
    let cwd = std::env::current_dir()?;
    let progress = Progress::new(cli.quiet);
    match cli.command {
        Command::Build(a) => {
            let project = Project::load(&cwd, cli.config.as_deref())?;
            let names: Vec<String> = if a.images.is_empty() {
                project.spec.images.keys().cloned().collect()
            } else {
                a.images.clone()
            };
            if names.is_empty() {
                return Err(usage!("{} defines no images", project.spec_path.display()));
            }
            if a.output.is_some() && names.len() > 1 {
                return Err(usage!(
                    "--output takes one image; name it, e.g. `imgbuild build {} --output ...`",
                    names[0]
                ));
            }
            let opts = Options {
                output: a.output.clone(),
                compression: a.compression.as_deref().and_then(Compression::parse),
                verbose: cli.verbose,
            };
            for name in &names {
                let (built, summary) = build::build(&project, name, &opts, &progress)?;
                if a.json {
                    println!("{}", serde_json::to_string(&summary)?);
                } else {
                    let cached = summary.layers.iter().filter(|l| l.cached).count();
                    progress.note(&format!(
                        "built {name}: {} layers ({cached} cached) → {} in {:.2}s",
                        summary.layers.len(),
                        summary.reference,
                        summary.timings.get("total").copied().unwrap_or(0.0)
                    ));
                    println!("{}", built.digest);
                }
            }
            Ok(0)
        }
        Command::Verify(a) => verify_cmd(&cwd, cli.config.as_deref(), &a, &progress),
        Command::Base(BaseCommand::Import {
            rootfs,
            output,
            env,
            platform,
            compression,
        }) => {
            let platform = match platform {
                Some(p) => Platform::parse(&p).ok_or_else(|| {
                    usage!("--platform `{p}`: expected os/arch, e.g. linux/amd64")
                })?,
                None => base::host_platform(),
            };
            let env = env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| usage!("--env `{kv}`: expected KEY=VALUE"))
                })
                .collect::<Result<Vec<_>>>()?;
            let mtime = match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| usage!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"))?,
                Err(_) => 0,
            };
            let store = Store::open(
                std::env::var_os("IMGBUILD_CACHE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| cwd.join(".imgbuild/cache")),
            )?;
            let out = Output::parse(&output, "latest", &cwd)?;
            let imp = Import {
                source: cwd.join(&rootfs),
                env,
                platform,
                mtime,
                compression: Compression::parse(&compression).unwrap(),
            };
            let (built, note) = base::import(&imp, out, &store)?;
            if !note.is_empty() {
                progress.note(&format!("note: {note}"));
            }
            progress.note(&format!("imported {} → {output}", rootfs.display()));
            println!("{}", built.digest);
            Ok(0)
        }
        Command::Presets => {
            for n in crate::preset::names() {
                println!("{n:20} {}", crate::preset::get(n)?.description);
            }
            Ok(0)
        }
    }
}

fn verify_cmd(
    cwd: &std::path::Path,
    config: Option<&std::path::Path>,
    a: &VerifyArgs,
    progress: &Progress,
) -> Result<i32> {
    let t = &a.target;
    let (checked, what) = if let Some(rest) = t.strip_prefix("oci:") {
        let (dir, tag) = layout::split_ref(rest);
        let l = Layout::open(&cwd.join(&dir))?;
        let platform = base::host_platform();
        let index = l.index()?;
        let (_, manifest) = l.resolve(tag.as_deref(), &platform).or_else(|e| {
            // A single-platform image for another architecture is still verifiable.
            match index.manifests.iter().find(|m| {
                tag.is_none() || m.annotations.get(crate::image::ANN_REF_NAME) == tag.as_ref()
            }) {
                Some(d) if d.media_type == crate::image::MT_MANIFEST => Ok((
                    d.clone(),
                    serde_json::from_slice(&l.read_blob(&d.digest, Some(d.size))?)?,
                )),
                _ => Err(e),
            }
        })?;
        (verify::check_image(&l, &manifest, None)?, t.clone())
    } else if let Some(rest) = t.strip_prefix("docker-archive:") {
        let ar = verify::Archive::open(&cwd.join(rest))?;
        let m = ar.manifest.clone();
        (verify::check_image(&ar, &m, None)?, t.clone())
    } else {
        let project = Project::load(cwd, config)?;
        project.spec.image(t, &project.spec_path)?;
        let (rec, built) = build::last_build(&project, t)?;
        let store = project.store()?;
        (
            verify::check_image(&store, &built.manifest, None).context("the last build")?,
            format!("{t} ({})", rec.digest),
        )
    };
    let problems = crate::python::check_rootfs(&checked.fs, &checked.config);
    if !problems.is_empty() {
        let mut msg = format!(
            "{what} failed verification ({} problem{}):",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        for p in &problems {
            msg.push_str(&format!("\n  - {}: {}", p.layer, p.message));
        }
        anyhow::bail!(msg);
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({"image": what, "ok": true, "layers": checked.layers, "bytes": checked.bytes})
        );
    } else {
        progress.note(&format!(
            "verified {what}: {} layers, {} bytes, every digest and diff_id checks",
            checked.layers, checked.bytes
        ));
    }
    Ok(0)
}
