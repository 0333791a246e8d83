//! The command line: one file per command, each parsing its arguments and printing what the
//! library it calls decided. `imgbuild IMAGE` is `imgbuild build IMAGE`.

mod base;
mod build;
mod global;
mod lock;
mod login;
mod pin;
mod presets;
mod push;
mod sample;
mod sbom;
mod store;
mod test;
mod verify;

use crate::error::exit_code;
use crate::progress::Progress;
use anyhow::Result;
use clap::{Parser, Subcommand};
use global::Global;
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Examples:
  imgbuild api                          build image `api` from ./imgbuild.toml into .imgbuild/oci
  imgbuild build api --output docker-archive:api.tar
  imgbuild verify oci:.imgbuild/oci:api re-check every blob, diff_id and layer check
  imgbuild build api --push --tag 1.4   build, then publish to the image's repository
  imgbuild push api                     publish the last build of `api`
  imgbuild verify registry.example.com/acme/api@sha256:…   pull by digest and verify
  imgbuild sbom api --format cyclonedx  print the SBOM of the last build of `api`
  imgbuild test api                     run the image's `smoke` commands in it (runc)
  imgbuild pin docker-compose.prod.yml  set `image:` to the digests of the last pushes
  imgbuild pin --check docker-compose.prod.yml   exit 1 if the file is not pinned to them
  imgbuild lock --update                re-resolve the registry bases pinned in imgbuild.lock
  imgbuild login registry.example.com --username ci --password-stdin < pw.txt
  imgbuild base import rootfs/ --output oci:base:latest

Exit codes: 0 success, 1 build or verification failure, 2 usage or configuration error.
Environment: IMGBUILD_CACHE (blob store and caches), SOURCE_DATE_EPOCH (timestamps),
IMGBUILD_REGISTRY_USER/IMGBUILD_REGISTRY_PASSWORD (registry login; IMGBUILD_REGISTRY_HOST limits
them to one registry), REGISTRY_AUTH_FILE, DOCKER_CONFIG, IMGBUILD_REGISTRY_ATTEMPTS (tries per
request, default 5), IMGBUILD_REGISTRY_CHUNK_SIZE (upload chunk bytes, default 4 MiB).";

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
    /// A registry reached over plain HTTP (loopback hosts always are); repeatable
    #[arg(long, global = true, value_name = "HOST")]
    insecure: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build images from imgbuild.toml (`imgbuild IMAGE` is short for this)
    Build(build::BuildArgs),
    /// Publish the last build of images to their repositories
    Push(push::PushArgs),
    /// Re-check an image: blobs, diff_ids, and every layer check
    Verify(verify::VerifyArgs),
    /// Print an image's SBOM (SPDX 2.3, or CycloneDX 1.6) or its SLSA provenance
    Sbom(sbom::SbomArgs),
    /// Resolve registry bases and pin them in imgbuild.lock
    Lock(lock::LockArgs),
    /// Store credentials for a registry (in docker's config.json or its credential helper)
    Login(login::LoginArgs),
    /// Remove stored credentials for a registry
    Logout {
        /// Registry host, e.g. registry.example.com or 127.0.0.1:5000
        host: String,
    },
    /// Base images
    #[command(subcommand)]
    Base(base::BaseCommand),
    /// Run the image's `smoke` commands inside it with runc (its env, workdir and user; no network)
    Test {
        /// An image name from imgbuild.toml (its last build is tested)
        image: String,
        /// Only this platform of an image index (repeatable; default: every platform this
        /// machine can run, natively or through a registered qemu-user-static handler)
        #[arg(long = "platform", value_name = "OS/ARCH")]
        platforms: Vec<String>,
    },
    /// The blob store and caches: check, repair, collect garbage
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Pin compose services to the digests imgbuild pushed (`image: repo@sha256:…`)
    Pin(pin::PinArgs),
    /// List the built-in layer presets
    Presets,
    /// Write the embedded sample project to DIR and build its images there (no registry needed)
    Sample {
        #[arg(default_value = "imgbuild-sample")]
        dir: PathBuf,
    },
}

/// Index of the first argument that is neither a global flag nor a flag's value.
fn first_positional(args: &[String]) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--config" | "--insecure" => i += 2,
            a if a.starts_with('-') => i += 1,
            _ => return Some(i),
        }
    }
    None
}

fn is_subcommand(word: &str) -> bool {
    use clap::CommandFactory;
    word == "help"
        || Cli::command()
            .get_subcommands()
            .any(|c| c.get_name() == word)
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let mut args: Vec<String> = std::env::args().collect();
    // `imgbuild api` means `imgbuild build api`.
    if let Some(first) = first_positional(&args) {
        if !is_subcommand(&args[first]) {
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
    eprintln!("error: {}", crate::error::render(e));
}

fn run(cli: Cli) -> Result<i32> {
    let g = Global {
        cwd: std::env::current_dir()?,
        config: cli.config,
        verbose: cli.verbose,
        insecure: cli.insecure,
        progress: Progress::new(cli.quiet),
    };
    match &cli.command {
        Command::Build(a) => build::run(&g, a),
        Command::Push(a) => push::run(&g, a),
        Command::Verify(a) => verify::run(&g, a),
        Command::Sbom(a) => sbom::run(&g, a),
        Command::Lock(a) => lock::run(&g, a),
        Command::Login(a) => login::login(&g, a),
        Command::Logout { host } => login::logout(&g, host),
        Command::Base(c) => base::run(&g, c),
        Command::Test { image, platforms } => test::run(&g, image, &global::platforms(platforms)?),
        Command::Store(c) => store::run(&g, c),
        Command::Pin(a) => pin::run(&g, a),
        Command::Presets => presets::run(),
        Command::Sample { dir } => sample::run(&g, dir),
    }
}
