//! The command line: `imgbuild [build] IMAGE`, `verify`, `base import`, `presets`.

use crate::base::{self, Import};
use crate::build::{self, Options};
use crate::compress::Compression;
use crate::error::exit_code;
use crate::error::Hint;
use crate::image::Platform;
use crate::layout::{self, Layout};
use crate::plan::Project;
use crate::progress::Progress;
use crate::publish::Output;
use crate::registry;
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
  imgbuild build api --push --tag 1.4   build, then publish to the image's repository
  imgbuild push api                     publish the last build of `api`
  imgbuild verify registry.example.com/acme/api@sha256:…   pull by digest and verify
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
    Build(BuildArgs),
    /// Publish the last build of images to their repositories
    Push(PushArgs),
    /// Re-check an image: blobs, diff_ids, and every layer check
    Verify(VerifyArgs),
    /// Resolve registry bases and pin them in imgbuild.lock
    Lock(LockArgs),
    /// Store credentials for a registry (in docker's config.json or its credential helper)
    Login(LoginArgs),
    /// Remove stored credentials for a registry
    Logout {
        /// Registry host, e.g. registry.example.com or 127.0.0.1:5000
        host: String,
    },
    /// Base images
    #[command(subcommand)]
    Base(BaseCommand),
    /// Run the image's `smoke` commands inside it with runc (its env, workdir and user; no network)
    Test {
        /// An image name from imgbuild.toml (its last build is tested)
        image: String,
    },
    /// The blob store and caches: check, repair, collect garbage
    #[command(subcommand)]
    Store(StoreCommand),
    /// Pin compose services to the digests imgbuild pushed (`image: repo@sha256:…`)
    Pin(PinArgs),
    /// List the built-in layer presets
    Presets,
    /// Write the embedded sample project to DIR and build its images there (no registry needed)
    Sample {
        #[arg(default_value = "imgbuild-sample")]
        dir: PathBuf,
    },
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

#[derive(Args, Debug)]
struct PushArgs {
    /// Image names from imgbuild.toml (default: all)
    images: Vec<String>,
    /// Tag to push (repeatable; default: the repository's tag, else `latest`)
    #[arg(long = "tag", value_name = "T")]
    tags: Vec<String>,
    /// Print one JSON summary per image on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct LockArgs {
    /// Image names from imgbuild.toml (default: all)
    images: Vec<String>,
    /// Re-resolve the tags even where imgbuild.lock pins them
    #[arg(long)]
    update: bool,
}

#[derive(Args, Debug)]
struct LoginArgs {
    /// Registry host, e.g. registry.example.com or 127.0.0.1:5000
    host: String,
    /// User name (default: $IMGBUILD_REGISTRY_USER)
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// Read the password (or token) from standard input
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// An image name from imgbuild.toml, a registry reference (host/repo@sha256:… or :tag),
    /// oci:DIR[:TAG], or docker-archive:FILE
    target: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PinArgs {
    /// Compose files, in `docker compose -f` order (later ones override earlier ones)
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Write `VAR=repo@sha256:…` here for services whose image is `${VAR}`
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// Change nothing; exit 1 when a service is not pinned to the current digest (for CI)
    #[arg(long)]
    check: bool,
    /// Take digests from `imgbuild build --json` / `push --json` output instead of the last pushes
    #[arg(long, value_name = "FILE")]
    from_json: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Re-hash every blob and check every cache record; exit 1 on problems (see --repair)
    Fsck {
        /// Remove corrupt blobs and records that point at missing blobs (the next build remakes them)
        #[arg(long)]
        repair: bool,
    },
    /// Remove blobs that no build root or cache record names
    Gc {
        /// First forget build roots and cache entries not written for this many days
        #[arg(long, value_name = "DAYS")]
        max_age_days: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum BaseCommand {
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
                gzip_level: a.gzip_level,
                verbose: cli.verbose,
                push: a.push,
                tags: a.tags.clone(),
                registry: registry::options_for_project(&project.spec, &cli.insecure),
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
                    if a.push {
                        progress.note(&push_note(&summary));
                        println!("{}", summary.reference);
                    } else {
                        println!("{}", built.digest);
                    }
                }
            }
            Ok(0)
        }
        Command::Push(ref a) => push_cmd(&cwd, &cli, a, &progress),
        Command::Lock(ref a) => lock_cmd(&cwd, &cli, a, &progress),
        Command::Login(ref a) => login_cmd(&cli, a, &progress),
        Command::Logout { host } => {
            let registry = login_host(&host)?;
            let env = registry::credentials::Env::default();
            if registry::credentials::erase(&env, &registry)? {
                progress.note(&format!("removed the stored credentials for {registry}"));
            } else {
                progress.note(&format!("no stored credentials for {registry}"));
            }
            Ok(0)
        }
        Command::Verify(a) => verify_cmd(&cwd, cli.config.as_deref(), &cli.insecure, &a, &progress),
        Command::Base(BaseCommand::List) => {
            for n in crate::catalog::names() {
                let e = crate::catalog::get(n).expect("listed")?;
                println!("{n:22} {:45} {}", e.reference, e.description);
            }
            Ok(0)
        }
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
        Command::Sample { dir } => {
            let dir = cwd.join(dir);
            crate::sample::write(&dir)?;
            progress.note(&format!("sample project in {}", dir.display()));
            let project = Project::load(&dir, None)?;
            for name in project.spec.images.keys() {
                let (built, summary) = build::build(
                    &project,
                    name,
                    &Options {
                        verbose: cli.verbose,
                        ..Default::default()
                    },
                    &progress,
                )?;
                progress.note(&format!("built {name} → {}", summary.reference));
                println!("{name} {}", built.digest);
            }
            progress.note(&format!(
                "next: `umoci unpack --image {0}/.imgbuild/oci:frontend bundle` to look inside, or `imgbuild verify oci:{0}/.imgbuild/oci:frontend`",
                dir.display()
            ));
            Ok(0)
        }
        Command::Test { image } => {
            let project = Project::load(&cwd, cli.config.as_deref())?;
            match crate::smoke::run(&project, &image, &progress) {
                Ok(o) if o.failed.is_empty() => {
                    progress.note(&format!("{image}: {} smoke command(s) passed", o.passed));
                    Ok(0)
                }
                Ok(o) => {
                    let names: Vec<&str> = o.failed.iter().map(|(c, _)| c.as_str()).collect();
                    eprintln!(
                        "error: {image}: {} of {} smoke command(s) failed: {}",
                        o.failed.len(),
                        o.failed.len() + o.passed,
                        names.join("; ")
                    );
                    Ok(1)
                }
                Err(e) if e.is::<crate::smoke::NoRuntime>() => {
                    eprintln!("error: {e}\nhint: the smoke commands did not run, so nothing was proven; run them where runc works");
                    Ok(2)
                }
                Err(e) => Err(e),
            }
        }
        Command::Store(sc) => {
            let dir = store_dir(&cwd, cli.config.as_deref());
            match sc {
                StoreCommand::Fsck { repair } => {
                    let store = if repair {
                        Store::open_exclusive(&dir)?
                    } else {
                        Store::open(&dir)?
                    };
                    let r = crate::store::fsck(&store, repair)?;
                    for c in &r.corrupt {
                        progress.note(&format!(
                            "corrupt blob sha256:{c}{}",
                            if repair { " (removed)" } else { "" }
                        ));
                    }
                    for d in r.dangling.iter().chain(&r.bad_records) {
                        progress.note(&format!(
                            "bad cache record {d}{}",
                            if repair { " (removed)" } else { "" }
                        ));
                    }
                    progress.note(&format!(
                        "{}: {} blobs, {} bytes checked; {} problem(s); {} stale temp file(s) removed",
                        dir.display(),
                        r.blobs,
                        r.bytes,
                        r.problems(),
                        r.temps_removed
                    ));
                    Ok(if r.problems() > 0 && !repair { 1 } else { 0 })
                }
                StoreCommand::Gc { max_age_days } => {
                    let store = Store::open_exclusive(&dir)?;
                    let r = crate::store::gc(
                        &store,
                        max_age_days.map(|d| std::time::Duration::from_secs(d * 86400)),
                    )?;
                    progress.note(&format!(
                        "{}: kept {} blobs, removed {} ({} bytes), expired {} records",
                        dir.display(),
                        r.kept,
                        r.removed,
                        r.freed,
                        r.records_expired
                    ));
                    Ok(0)
                }
            }
        }
        Command::Pin(a) => pin_cmd(&cwd, cli.config.as_deref(), &a, &progress),
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
    insecure: &[String],
    a: &VerifyArgs,
    progress: &Progress,
) -> Result<i32> {
    let t = &a.target;
    let (checked, what, problems) = if let Some(rest) = t.strip_prefix("oci:") {
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
        (verify::check_image(&l, &manifest, None)?, t.clone(), vec![])
    } else if let Some(rest) = t.strip_prefix("docker-archive:") {
        let ar = verify::Archive::open(&cwd.join(rest))?;
        let m = ar.manifest.clone();
        (verify::check_image(&ar, &m, None)?, t.clone(), vec![])
    } else if looks_like_reference(t)
        && !Project::load(cwd, config).is_ok_and(|p| p.spec.images.contains_key(t))
    {
        let project = Project::load(cwd, config).ok();
        let spec_insecure = project
            .as_ref()
            .map(|p| p.spec.insecure_registries.clone())
            .unwrap_or_default();
        let opts = registry::options_for(&spec_insecure, insecure);
        let store = match &project {
            Some(p) => p.store()?,
            None => Store::open(default_store_dir(cwd))?,
        };
        let platform = match project
            .as_ref()
            .and_then(|p| p.spec.defaults.platform.clone())
        {
            Some(p) => Platform::parse(&p)
                .ok_or_else(|| usage!("platform `{p}`: expected os/arch, e.g. linux/amd64"))?,
            None => base::host_platform(),
        };
        let (r, digest, manifest) = registry::pull_image(t, &platform, &store, &opts)?;
        (
            verify::check_image(&store, &manifest, None)?,
            r.with_digest(&digest),
            vec![],
        )
    } else {
        let project = Project::load(cwd, config)?;
        project.spec.image(t, &project.spec_path)?;
        let (rec, built) = build::last_build(&project, t)?;
        let store = project.store()?;
        let checked =
            verify::check_image(&store, &built.manifest, None).context("the last build")?;
        // An image of this project: its layers' own checks too (expect, require, scripts).
        let problems = build::recheck(&project, t, &checked.fs, &checked.config, progress)?;
        (checked, format!("{t} ({})", rec.digest), problems)
    };
    let mut problems = problems;
    for p in crate::python::check_rootfs(&checked.fs, &checked.config) {
        if !problems.contains(&p) {
            problems.push(p);
        }
    }
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
        let dists = crate::python::distributions(&checked.fs);
        let python = if dists > 0 {
            format!("; {dists} Python distributions match their RECORD")
        } else {
            String::new()
        };
        progress.note(&format!(
            "verified {what}: {} layers, {} bytes, every digest and diff_id checks{python}",
            checked.layers, checked.bytes
        ));
    }
    Ok(0)
}

/// A registry reference rather than an image name: it has a `/`, `:` or `@`.
fn looks_like_reference(t: &str) -> bool {
    t.contains(['/', ':', '@'])
}

/// Where blobs go when there is no project: `$IMGBUILD_CACHE`, else the user's cache directory.
fn default_store_dir(cwd: &std::path::Path) -> PathBuf {
    if let Some(c) = std::env::var_os("IMGBUILD_CACHE") {
        return PathBuf::from(c);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("imgbuild");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/imgbuild");
    }
    cwd.join(".imgbuild/cache")
}

fn push_note(s: &build::Summary) -> String {
    let mounted = if s.mounted_blobs > 0 {
        format!(", {} mounted from other repositories", s.mounted_blobs)
    } else {
        String::new()
    };
    format!(
        "pushed {} → {}: {} bytes uploaded, {} blobs already there{mounted}",
        s.image, s.reference, s.uploaded_bytes, s.skipped_blobs
    )
}

fn image_names(project: &Project, given: &[String]) -> Result<Vec<String>> {
    let names: Vec<String> = if given.is_empty() {
        project.spec.images.keys().cloned().collect()
    } else {
        given.to_vec()
    };
    if names.is_empty() {
        return Err(usage!("{} defines no images", project.spec_path.display()));
    }
    for n in &names {
        project.spec.image(n, &project.spec_path)?;
    }
    Ok(names)
}

fn push_cmd(cwd: &std::path::Path, cli: &Cli, a: &PushArgs, progress: &Progress) -> Result<i32> {
    let project = Project::load(cwd, cli.config.as_deref())?;
    let names = image_names(&project, &a.images)?;
    let opts = registry::options_for_project(&project.spec, &cli.insecure);
    let store = project.store()?;
    for name in &names {
        let t0 = std::time::Instant::now();
        let (_, mut built) = build::last_build(&project, name)?;
        // The repository configured now is where the user means to push.
        if let Some(r) = &project.spec.image(name, &project.spec_path)?.repository {
            built.repository = Some(r.clone());
        }
        let written = build::push(&project, &built, &a.tags, &opts, &store)?;
        let mut timings = std::collections::BTreeMap::new();
        timings.insert("push".to_string(), t0.elapsed().as_secs_f64());
        timings.insert("total".to_string(), t0.elapsed().as_secs_f64());
        let summary = build::Summary {
            image: name.clone(),
            digest: Some(built.digest.clone()),
            repository: built.repository.clone(),
            reference: written.reference.clone(),
            layers: layer_reports(&project, name, &built, &store),
            uploaded_bytes: written.uploaded_bytes,
            skipped_blobs: written.skipped_blobs,
            mounted_blobs: written.mounted_blobs,
            timings,
        };
        if a.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            progress.note(&push_note(&summary));
            println!("{}", written.reference);
        }
    }
    Ok(0)
}

/// The layers of a stored image for the summary: the image's own layers by their names in
/// imgbuild.toml, the ones below them named `base`.
fn layer_reports(
    project: &Project,
    name: &str,
    built: &crate::publish::Built,
    store: &Store,
) -> Vec<build::LayerReport> {
    let diff_ids: Vec<crate::digest::Digest> = store
        .read(&built.manifest.config.digest)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::image::ImageConfig>(&b).ok())
        .map(|c| c.rootfs.diff_ids)
        .unwrap_or_default();
    let own: Vec<String> = project
        .spec
        .images
        .get(name)
        .map(|i| i.layers.iter().map(|l| l.name.clone()).collect())
        .unwrap_or_default();
    let n = built.manifest.layers.len();
    let first_own = n.saturating_sub(own.len());
    built
        .manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| build::LayerReport {
            name: if i >= first_own {
                own[i - first_own].clone()
            } else {
                "base".into()
            },
            digest: l.digest.clone(),
            diff_id: diff_ids.get(i).cloned().unwrap_or_else(|| l.digest.clone()),
            size: l.size,
            cached: true,
        })
        .collect()
}

fn lock_cmd(cwd: &std::path::Path, cli: &Cli, a: &LockArgs, progress: &Progress) -> Result<i32> {
    let project = Project::load(cwd, cli.config.as_deref())?;
    let names = image_names(&project, &a.images)?;
    let mut opts = registry::options_for_project(&project.spec, &cli.insecure);
    opts.update_lock = a.update;
    let store = project.store()?;
    let mut done = std::collections::HashSet::new();
    for name in &names {
        let img = project.spec.image(name, &project.spec_path)?;
        let Some(b) = img.base.clone() else { continue };
        if base::registry_reference(&b)?.is_none() {
            continue;
        }
        let platform = build::image_platform(&project, img)?;
        if !done.insert((b.clone(), platform.to_string())) {
            continue;
        }
        let base = base::resolve_with(&b, &project.root, &platform, &store, &opts)
            .with_context(|| format!("image `{name}`"))?;
        progress.note(&format!(
            "{b} ({platform}) → {}",
            base.digest.map(|d| d.to_string()).unwrap_or_default()
        ));
    }
    if a.update && a.images.is_empty() {
        // Entries no image uses any more go.
        let used: std::collections::HashSet<String> = project
            .spec
            .images
            .values()
            .filter_map(|i| i.base.as_deref())
            .filter_map(|b| base::registry_reference(b).ok().flatten())
            .collect();
        let mut l = registry::lock::LockFile::load(&project.root)?;
        let before = l.base.len();
        l.base.retain(|k, _| used.contains(k));
        if l.base.len() != before {
            l.save(&project.root)?;
        }
    }
    Ok(0)
}

/// The registry named on `imgbuild login`, normalised as in references (`docker.io`, …).
fn login_host(h: &str) -> Result<String> {
    let h = h
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let h = h.strip_suffix("/v1").or(h.strip_suffix("/v2")).unwrap_or(h);
    let r = registry::reference::Reference::parse(&format!("{h}/x")).map_err(|_| {
        usage!("`{h}` is not a registry host (expected e.g. registry.example.com:5000)")
    })?;
    if r.repository != "x" {
        return Err(usage!(
            "`{h}` is not a registry host (expected e.g. registry.example.com:5000)"
        ));
    }
    Ok(r.registry)
}

fn login_cmd(cli: &Cli, a: &LoginArgs, progress: &Progress) -> Result<i32> {
    use std::io::Read;
    let registry = login_host(&a.host)?;
    let username = a
        .username
        .clone()
        .or_else(|| std::env::var("IMGBUILD_REGISTRY_USER").ok())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            usage!("imgbuild login needs --username USER (or IMGBUILD_REGISTRY_USER)")
        })?;
    if !a.password_stdin {
        return Err(usage!(
            "pass the password on standard input with --password-stdin, e.g. \
             `echo \"$PASSWORD\" | imgbuild login {registry} --username {username} --password-stdin`"
        ));
    }
    let mut secret = String::new();
    std::io::stdin()
        .read_to_string(&mut secret)
        .context("reading the password from standard input")?;
    let secret = secret.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(usage!("no password on standard input"));
    }
    let opts = registry::options_for(&[], &cli.insecure);
    let cred = registry::credentials::Credential {
        username: username.clone(),
        secret: secret.clone(),
        identity_token: false,
        source: "--password-stdin".into(),
    };
    registry::client::Client::new(&registry, &opts)?
        .with_credential(cred)
        .check_login()?;
    let env = registry::credentials::Env::default();
    let place = registry::credentials::store(&env, &registry, &username, &secret)?;
    progress.note(&format!(
        "logged in to {registry} as {username}; credentials stored in {place}"
    ));
    Ok(0)
}

fn pin_cmd(
    cwd: &std::path::Path,
    config: Option<&std::path::Path>,
    a: &PinArgs,
    progress: &Progress,
) -> Result<i32> {
    use crate::pin::{self, Action};
    let mut pins = pin::Pins::new();
    let mut unpushed = Vec::new();
    if let Some(j) = &a.from_json {
        let text = std::fs::read_to_string(cwd.join(j))
            .map_err(|e| usage!("cannot read {}: {e}", j.display()))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let s: build::Summary = serde_json::from_str(line).map_err(|e| {
                usage!(
                    "{}:{}: not an imgbuild --json summary: {e}",
                    j.display(),
                    n + 1
                )
            })?;
            if let (Some(repo), Some(d)) = (s.repository, s.digest) {
                // A build that was not pushed names a digest the registry may not have: the
                // server would find out when it pulls. `--check` may still compare against it.
                let pushed = s.reference.ends_with(&format!("@{d}"))
                    && pin::repository_of(&s.reference) == pin::normalise_repository(&repo);
                if !pushed && !a.check {
                    return Err(usage!(
                        "{}:{}: image `{}` was built ({d}) but not pushed (its reference is `{}`); pinning it would name a digest the registry may not have",
                        j.display(),
                        n + 1,
                        s.image,
                        s.reference
                    )
                    .hint(format!(
                        "pin from the output of `imgbuild build {0} --push --json` or `imgbuild push {0} --json`",
                        s.image
                    )));
                }
                pins.insert(pin::normalise_repository(&repo), format!("{repo}@{d}"));
            }
        }
    } else {
        let project = Project::load(cwd, config)?;
        for name in project.spec.images.keys() {
            // Only the record is needed: the image itself may live in another store.
            let Ok(rec) = build::last_record(&project, name) else {
                continue;
            };
            let Some(repo) = rec.repository.clone() else {
                continue;
            };
            if rec.pushed.is_empty() {
                unpushed.push((name.clone(), repo, rec.digest.to_string()));
            } else {
                pins.insert(
                    pin::normalise_repository(&repo),
                    format!("{repo}@{}", rec.digest),
                );
            }
        }
    }
    let files: Vec<PathBuf> = a.files.iter().map(|f| cwd.join(f)).collect();
    // An image whose last build was not pushed: the compose file would be pinned to an older
    // push (or left on its tag) while the build says otherwise. Refuse, naming the services.
    if !unpushed.is_empty() {
        let composes = files
            .iter()
            .map(|p| pin::Compose::load(p))
            .collect::<Result<Vec<_>>>()?;
        for (name, repo, digest) in &unpushed {
            let want = pin::normalise_repository(repo);
            let mut users: Vec<String> = Vec::new();
            for (i, c) in composes.iter().enumerate() {
                for (service, (site, _)) in c.services(i) {
                    if site.is_some_and(|s| pin::repository_of(&s.value) == want)
                        && !users.contains(&service)
                    {
                        users.push(service);
                    }
                }
            }
            if !users.is_empty() {
                return Err(usage!(
                    "the last build of `{name}` ({digest}) has not been pushed, and {} use{} {repo}; pinning now would not pin that build",
                    users.join(", "),
                    if users.len() == 1 { "s" } else { "" }
                )
                .hint(format!(
                    "run `imgbuild push {name}` (or build with `--push`), then pin"
                )));
            }
        }
    }
    if pins.is_empty() {
        let mut e = usage!("nothing to pin: no image has been pushed yet");
        if !unpushed.is_empty() {
            let list: Vec<String> = unpushed
                .iter()
                .map(|(n, r, _)| format!("{n} ({r})"))
                .collect();
            e = e.hint(format!(
                "built but not pushed: {}; run `imgbuild push IMAGE` first",
                list.join(", ")
            ));
        }
        return Err(e);
    }
    let out = pin::pin_files(
        &files,
        &pins,
        a.env_file.as_ref().map(|f| cwd.join(f)).as_deref(),
        a.check,
    )?;
    // Paths as the user named them (relative to the working directory).
    let shown = |f: &std::path::Path| f.strip_prefix(cwd).unwrap_or(f).display().to_string();
    let mut stale = 0;
    for act in &out.actions {
        match act {
            Action::Pin {
                service,
                from,
                to,
                file,
                line,
            } => {
                stale += 1;
                let verb = if a.check { "not pinned" } else { "pinned" };
                progress.note(&format!(
                    "{verb}: {service} ({}:{line}) {from} → {to}",
                    shown(file)
                ));
            }
            Action::AlreadyPinned { service, .. } => {
                progress.note(&format!("up to date: {service}"))
            }
            Action::Variable {
                service,
                image,
                var,
            } => progress.note(&format!(
                "variable: {service} uses `{image}`; {}",
                if a.env_file.is_some() {
                    format!("{var} set in the env file")
                } else {
                    format!("pass --env-file FILE to set {var}")
                }
            )),
            Action::NotBuilt { service, image } => progress.note(&format!(
                "skipped: {service} ({image}) is not an image imgbuild pushed"
            )),
            Action::BuildOnly { service } => progress.note(&format!(
                "skipped: {service} has only `build:`, no image to pin"
            )),
        }
    }
    if a.check && (stale > 0 || !out.changed.is_empty()) {
        let files: Vec<String> = out.changed.iter().map(|f| shown(f)).collect();
        let files = if files.is_empty() {
            "the compose files".to_string()
        } else {
            files.join(", ")
        };
        let what = if stale > 0 {
            format!("{stale} service(s) in {files} are")
        } else {
            format!("{files} is")
        };
        progress.note(&format!(
            "{what} not pinned to the current digests; run `imgbuild pin` without --check"
        ));
        return Ok(1);
    }
    Ok(0)
}

/// `$IMGBUILD_CACHE`, else the project's `.imgbuild/cache`, else `./.imgbuild/cache`.
fn store_dir(cwd: &std::path::Path, config: Option<&std::path::Path>) -> PathBuf {
    if let Some(d) = std::env::var_os("IMGBUILD_CACHE") {
        return PathBuf::from(d);
    }
    match Project::load(cwd, config) {
        Ok(p) => p.state_dir().join("cache"),
        Err(_) => cwd.join(".imgbuild/cache"),
    }
}
