//! Wheels built from sdists with PEP 517, inside the target: a temporary root filesystem of the
//! base image's layers, the build requirements installed (by imgbuild's own wheel installer)
//! into a directory on `PYTHONPATH`, the sdist unpacked, and a small frontend
//! (`sdist/frontend.py`, embedded) run by the target's interpreter with runc — own network
//! namespace (loopback only, down), unprivileged user 65534, no capabilities.
//!
//! Build requirements are `[build-system].requires` (PEP 518's `setuptools>=40.8.0` and the
//! `setuptools.build_meta:__legacy__` backend when there is no `[build-system]`) plus what
//! `get_requires_for_build_wheel` returns, resolved once by `resolve` (greedy) and pinned in
//! `imgbuild.lock`. The built wheel is checked (name, version, tags for the target, its own
//! RECORD) and stored by its sha256; a record keyed by `key::sdist_wheel` (sdist, target, base
//! layers, pins, env) finds it again, so a rebuild builds nothing.
//!
//! Source trees are built the same way (`source`): the project itself and workspace members
//! (`Src::Dir`, copied into the build root; their identity is `key::source_tree`, their pins
//! depend only on their build system, `pins_id`) and git sources (`Src::Git`, cloned at the
//! locked commit, checked, identity `key::git_source`; PEP 610 `direct_url.json` is added to the
//! built wheel and its RECORD).

pub mod resolve;
pub mod source;

use super::filename::{normalize, WheelName};
use super::index::{self, Want};
use super::lock::WheelRef;
use super::target::Target;
use super::wheel;
use crate::digest::Digest;
use crate::image::Descriptor;
use crate::layer::{Body, Source};
use crate::registry::lock::{BuildPins, PinnedFile};
use crate::store::Store;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Bump when building changes the wheel made from the same inputs.
pub const FORMAT: u32 = 1;

const FRONTEND: &str = include_str!("sdist/frontend.py");
/// The PEP 517 fallback when an sdist has no `build-backend`.
const LEGACY_BACKEND: &str = "setuptools.build_meta:__legacy__";
const LEGACY_REQUIRES: &str = "setuptools>=40.8.0";
/// The build runs as `nobody`.
const BUILD_UID: u32 = 65534;
/// Where the build's own files are inside the build root.
const WORK: &str = "imgbuild-build";
/// Lines of the backend's output shown when a build fails.
const TAIL: usize = 20;

/// What an sdist build needs from the layer: the base, the target, where to find wheels.
pub struct Setup<'a> {
    pub store: &'a Store,
    /// The shared cache behind the store: built wheels are looked up there and shared.
    pub remote: Option<&'a dyn crate::cache::Remote>,
    /// The layers of the build root: the layer's base, or `build.base`.
    pub base_layers: &'a [Descriptor],
    /// What the wheel is for: the image's interpreter, its tags.
    pub target: &'a Target,
    /// The interpreter in the build root (the target itself unless `build.base` names another
    /// image): it runs the backend, and the build requirements are chosen for it.
    pub build: &'a Target,
    /// Indexes for the build requirements (simple API URLs).
    pub indexes: &'a [String],
    /// `build.env` of the python table.
    pub env: &'a BTreeMap<String, String>,
}

/// What a wheel is built from.
#[derive(Clone, Copy)]
pub enum Src<'a> {
    /// An sdist the lock names.
    Sdist(&'a WheelRef),
    /// A directory of the project (the project itself, a workspace member).
    Dir(&'a Path),
    /// A commit of a git repository (cloned, checked, then built like a directory).
    Git {
        url: &'a str,
        commit: &'a str,
        subdirectory: Option<&'a str>,
    },
}

/// One sdist (or source tree) to build.
pub struct Job<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub src: Src<'a>,
    /// The sdist's sha256, or the tree's identity (`key::source_tree`, `key::git_source`).
    pub sha256: &'a str,
    /// What the build requirements pinned for it in `imgbuild.lock` stand for (`pins_id`).
    pub pins_id: &'a str,
}

/// What a wheel's build requirements pinned in `imgbuild.lock` depend on: the sdist or commit
/// (`sha256`); for a directory only its build system (`[build-system]` of pyproject.toml and
/// whether there is a setup.py), so editing the project's code reuses the pins.
pub fn pins_id(src: Src, sha256: &str) -> String {
    let Src::Dir(d) = src else {
        return sha256.to_string();
    };
    let text = fs::read_to_string(d.join("pyproject.toml")).ok();
    let bs = text
        .as_deref()
        .map(|t| match toml::from_str::<toml::Table>(t) {
            Ok(v) => v
                .get("build-system")
                .map(|b| b.to_string())
                .unwrap_or_default(),
            Err(_) => t.to_string(),
        });
    let material = serde_json::json!({
        "build-system": bs,
        "setup.py": d.join("setup.py").is_file(),
    });
    format!("build-system-{}", crate::key::of(&material))
}

/// A wheel built (or found built) from an sdist.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Built {
    pub filename: String,
    pub sha256: String,
    #[serde(skip)]
    pub pins: BuildPins,
    /// False when the wheel came from the store's cache.
    #[serde(skip)]
    pub fresh: bool,
    #[serde(skip)]
    pub seconds: f64,
    /// Where the time went (`unpack 3.1 s, …`), for the note.
    #[serde(skip)]
    pub phases: String,
}

/// The `imgbuild.lock` key of an sdist's pins for `target`.
pub fn pins_key(name: &str, version: &str, target: &Target) -> String {
    format!(
        "{} {version} for cp3{} {} {}",
        normalize(name),
        target.minor(),
        target.arch,
        target.libc
    )
}

/// The cache key of the wheel built from `sha256` with `pins`.
pub fn cache_key(setup: &Setup, sha256: &str, pins: &[PinnedFile]) -> String {
    let mut t = setup.target.clone();
    t.found.clear();
    let diff_ids: Vec<String> = setup
        .base_layers
        .iter()
        .map(|d| d.digest.to_string())
        .collect();
    crate::key::sdist_wheel(
        FORMAT,
        sha256,
        &serde_json::json!({ "target": t, "base": diff_ids }),
        &pins,
        setup.env,
    )
}

/// One build worker: its build root (the base unpacked once) is reused by every build it runs;
/// a layer runs several side by side.
pub struct Builder<'a> {
    setup: Setup<'a>,
    runc: Option<PathBuf>,
    tmp: Option<tempfile::TempDir>,
    phases: Vec<(&'static str, f64)>,
}

/// The project's build system (`pyproject.toml` `[build-system]`, PEP 517/518 defaults).
#[derive(Debug, PartialEq)]
pub struct BuildSystem {
    pub requires: Vec<String>,
    pub backend: String,
    pub backend_path: Vec<String>,
}

pub fn build_system(pyproject: Option<&str>) -> Result<BuildSystem, String> {
    let legacy = BuildSystem {
        requires: vec![LEGACY_REQUIRES.into()],
        backend: LEGACY_BACKEND.into(),
        backend_path: vec![],
    };
    let Some(text) = pyproject else {
        return Ok(legacy);
    };
    let v: toml::Table = toml::from_str(text).map_err(|e| format!("pyproject.toml: {e}"))?;
    let Some(bs) = v.get("build-system") else {
        return Ok(legacy);
    };
    let bs = bs
        .as_table()
        .ok_or("pyproject.toml: [build-system] is not a table")?;
    let strings = |k: &str| -> Result<Option<Vec<String>>, String> {
        match bs.get(k) {
            None => Ok(None),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str().map(String::from).ok_or(format!(
                        "pyproject.toml: build-system.{k} holds a non-string"
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(format!("pyproject.toml: build-system.{k} is not a list")),
        }
    };
    let requires = strings("requires")?.unwrap_or_else(|| legacy.requires.clone());
    let backend_path = strings("backend-path")?.unwrap_or_default();
    for p in &backend_path {
        if p.starts_with('/') || p.split('/').any(|c| c == "..") {
            return Err(format!(
                "pyproject.toml: backend-path `{p}` is outside the source tree"
            ));
        }
    }
    let backend = match bs.get("build-backend") {
        None => legacy.backend,
        Some(b) => b
            .as_str()
            .ok_or("pyproject.toml: build-system.build-backend is not a string")?
            .to_string(),
    };
    Ok(BuildSystem {
        requires,
        backend,
        backend_path,
    })
}

/// Whether an archive member name stays inside the directory it is unpacked into.
fn safe_member(name: &str) -> Result<(), String> {
    if name.starts_with('/') || name.starts_with('\\') {
        return Err("an absolute path".into());
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Err("a `..` component".into());
    }
    Ok(())
}

/// Unpacks an sdist (`.tar.gz`, `.tar`, `.tgz`, `.zip`) into `dst`; refuses absolute and `..`
/// member names and links that leave the tree. Returns the project directory (the one
/// top-level directory, or `dst`).
pub fn unpack_sdist(archive: &Path, filename: &str, dst: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dst)?;
    let refuse = |n: &str, why: String| {
        anyhow!("sdist {filename}: refusing member `{n}`: it has {why}; nothing was built")
    };
    if filename.ends_with(".zip") {
        let mut zip = zip::ZipArchive::new(fs::File::open(archive)?)
            .with_context(|| format!("sdist {filename} is not a valid zip archive"))?;
        for i in 0..zip.len() {
            let mut f = zip.by_index(i)?;
            let name = String::from_utf8_lossy(f.name_raw()).into_owned();
            safe_member(&name).map_err(|w| refuse(&name, w))?;
            let out = dst.join(&name);
            if f.is_dir() {
                fs::create_dir_all(&out)?;
                continue;
            }
            if let Some(p) = out.parent() {
                fs::create_dir_all(p)?;
            }
            let mut w = fs::File::create(&out)?;
            std::io::copy(&mut f, &mut w)?;
            let exec = f.unix_mode().is_some_and(|m| m & 0o111 != 0);
            fs::set_permissions(
                &out,
                fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
            )?;
        }
    } else {
        let f = std::io::BufReader::new(fs::File::open(archive)?);
        let r: Box<dyn Read> = if filename.ends_with(".tar") {
            Box::new(f)
        } else if filename.ends_with(".tar.gz") || filename.ends_with(".tgz") {
            Box::new(flate2::read::GzDecoder::new(f))
        } else {
            bail!(
                "sdist {filename}: unsupported archive format (.tar.gz, .tgz, .tar and .zip are)"
            );
        };
        let mut ar = tar::Archive::new(r);
        for e in ar
            .entries()
            .with_context(|| format!("reading sdist {filename}"))?
        {
            let mut e = e.with_context(|| format!("reading sdist {filename}"))?;
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            safe_member(&name).map_err(|w| refuse(&name, w))?;
            let t = e.header().entry_type();
            if t.is_symlink() || t.is_hard_link() {
                let target = e
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                safe_member(&target)
                    .map_err(|w| refuse(&name, format!("a link target with {w}")))?;
            }
            if !(t.is_file() || t.is_dir() || t.is_symlink() || t.is_hard_link()) {
                continue; // pax headers, devices, fifos
            }
            e.set_preserve_mtime(false);
            e.unpack_in(dst)
                .with_context(|| format!("sdist {filename}: unpacking {name}"))?;
        }
    }
    let tops: Vec<PathBuf> = fs::read_dir(dst)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    Ok(match tops.as_slice() {
        [one] if one.is_dir() => one.clone(),
        _ => dst.to_path_buf(),
    })
}

/// Writes installed entries (relative to `/`) under `root`.
fn materialise(entries: &[crate::layer::Entry], root: &Path) -> Result<()> {
    for e in entries {
        let p = root.join(String::from_utf8_lossy(&e.path).as_ref());
        match &e.body {
            Body::Dir => fs::create_dir_all(&p)?,
            Body::File { src, .. } => {
                if let Some(d) = p.parent() {
                    fs::create_dir_all(d)?;
                }
                let mut w = fs::File::create(&p)?;
                match src {
                    Source::Bytes(b) => w.write_all(b)?,
                    Source::Disk(d) => {
                        std::io::copy(&mut fs::File::open(d)?, &mut w)?;
                    }
                    Source::Zip { archive, index } => {
                        let mut z = zip::ZipArchive::new(fs::File::open(archive.as_ref())?)?;
                        std::io::copy(&mut z.by_index(*index)?, &mut w)?;
                    }
                    Source::Range { .. } => bail!("unexpected tar member source"),
                }
                fs::set_permissions(&p, fs::Permissions::from_mode(e.mode & 0o7777))?;
            }
            Body::Symlink(t) => {
                let _ = fs::remove_file(&p);
                std::os::unix::fs::symlink(String::from_utf8_lossy(t).as_ref(), &p)?;
            }
            Body::Link(t) => {
                fs::hard_link(root.join(String::from_utf8_lossy(t).as_ref()), &p)?;
            }
        }
    }
    Ok(())
}

fn chown_tree(p: &Path, uid: u32) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid))
        .with_context(|| format!("chown {}", p.display()))?;
    if fs::symlink_metadata(p)?.is_dir() {
        for e in fs::read_dir(p)? {
            chown_tree(&e?.path(), uid)?;
        }
    }
    Ok(())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl<'a> Builder<'a> {
    pub fn new(setup: Setup<'a>) -> Builder<'a> {
        Builder {
            setup,
            runc: crate::runtime::runc(),
            tmp: None,
            phases: Vec::new(),
        }
    }

    fn label(job: &Job) -> String {
        match job.src {
            Src::Sdist(s) => format!("{} {} from its sdist {}", job.name, job.version, s.filename),
            Src::Dir(d) => format!(
                "{} {} from its source {}",
                job.name,
                job.version,
                d.display()
            ),
            Src::Git { url, commit, .. } => format!(
                "{} {} from git commit {commit} of {url}",
                job.name, job.version
            ),
        }
    }

    /// The wheel of `job`: from the cache when `pinned` pins are given and it was built with
    /// them, else built (resolving the build requirements when `pinned` is `None`).
    pub fn wheel(&mut self, job: &Job, pinned: Option<&BuildPins>) -> Result<Built> {
        let pinned = pinned.filter(|p| p.sdist == job.pins_id);
        if let Some(p) = pinned {
            let key = cache_key(&self.setup, job.sha256, &p.requires);
            if let Some(b) = self.cached(&key, job) {
                return Ok(Built {
                    pins: p.clone(),
                    ..b
                });
            }
        }
        let runc = self.runc.clone().ok_or_else(|| {
            crate::error::UsageError::new(format!(
                "cannot build {}: no OCI runtime: runc is not on PATH, and imgbuild builds sdists only inside a container of the target",
                Self::label(job)
            ))
            .hint(format!(
                "install runc (e.g. `apt-get install runc`), or build a wheel of {} {} for {} yourself and put it in a directory named by `find_links` in the layer's `python` table",
                job.name,
                job.version,
                self.setup.target.describe()
            ))
        })?;
        let started = std::time::Instant::now();
        self.phases.clear();
        let res = self.build(&runc, job, pinned);
        if res.is_err() {
            // Nothing half-written: a failed build's root goes (the next sdist unpacks afresh);
            // after a success it is reused (its work directory and /tmp emptied first).
            self.tmp = None;
        }
        let mut b = res.with_context(|| format!("building {}", Self::label(job)))?;
        b.seconds = started.elapsed().as_secs_f64();
        b.phases = self
            .phases
            .iter()
            .map(|(k, v)| format!("{k} {v:.1} s"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(b)
    }

    /// The wheel built before under `key`: in the store, else in the shared cache (downloaded,
    /// then checked like a wheel built here: name, version, tags, its RECORD).
    fn cached(&self, key: &str, job: &Job) -> Option<Built> {
        let store = self.setup.store;
        let b: Built = crate::cache::get_shared(
            store,
            self.setup.remote,
            "python-sdist-wheel",
            key,
            |b: &Built| {
                let d = Digest::parse(&format!("sha256:{}", b.sha256))?;
                if !store.has(&d) {
                    return Err(format!("its wheel {} was not downloaded", b.filename));
                }
                self.check_wheel(job, &b.filename, &store.blob_path(&d))
                    .map_err(|e| format!("{e:#}"))?;
                store
                    .put_record("python-wheels", &b.sha256, &b.filename)
                    .map_err(|e| format!("{e:#}"))
            },
        )?;
        let d = Digest::parse(&format!("sha256:{}", b.sha256)).ok()?;
        store.check(&d).ok()?;
        Some(b)
    }

    fn root(&mut self) -> Result<PathBuf> {
        if self.tmp.is_none() {
            let t0 = std::time::Instant::now();
            let store = self.setup.store;
            let shared = shared_root(store, self.setup.base_layers)
                .context("unpacking the base image for the build")?;
            // In the store's own directory, so that the shared root's files can be linked.
            let tmp = store.root().join("tmp");
            fs::create_dir_all(&tmp)?;
            // Named like the store's temp files (owner pid inside), so that a killed build's
            // root is swept when the store is opened next.
            let t = tempfile::Builder::new()
                .prefix(&format!(".sdist.{}.", std::process::id()))
                .suffix(".tmp")
                .tempdir_in(&tmp)?;
            link_tree(&shared, &t.path().join("rootfs")).context("linking the build root")?;
            self.tmp = Some(t);
            self.phases.push(("build root", t0.elapsed().as_secs_f64()));
        }
        Ok(self.tmp.as_ref().unwrap().path().join("rootfs"))
    }

    /// Installs `pins` into the build root's `env` directory.
    fn install(&self, rootfs: &Path, pins: &[PinnedFile]) -> Result<()> {
        let wants: Vec<Want> = pins.iter().map(resolve::want).collect();
        index::ensure(self.setup.store, &wants)?;
        let mut t = self.setup.build.clone();
        let env = format!("/{WORK}/env");
        t.site_dir = format!("{env}/site");
        t.scripts_dir = format!("{env}/bin");
        t.data_dir = env.clone();
        t.include_dir = format!("{env}/include");
        for p in pins {
            let blob = wheel::blob(self.setup.store, &p.sha256)?;
            let inst = wheel::install(&blob, &p.filename, &t, (0, 0))
                .with_context(|| format!("installing build requirement {}", p.filename))?;
            materialise(&inst.entries, rootfs)?;
        }
        Ok(())
    }

    fn build(&mut self, runc: &Path, job: &Job, pinned: Option<&BuildPins>) -> Result<Built> {
        let store = self.setup.store;
        let sdist = match job.src {
            Src::Sdist(s) => Some(index::ensure_file(
                store,
                &Want {
                    filename: s.filename.clone(),
                    sha256: job.sha256.to_string(),
                    urls: s.url.iter().cloned().collect(),
                    path: s.path.clone(),
                    pinned_by: "the lock".into(),
                },
            )?),
            _ => None,
        };
        let rootfs = self.root()?;
        let work = rootfs.join(WORK);
        for d in [&work, &rootfs.join("tmp")] {
            if d.exists() {
                fs::remove_dir_all(d)?;
            }
        }
        for d in ["src", "env", "out", "home"] {
            fs::create_dir_all(work.join(d))?;
        }
        let t0 = std::time::Instant::now();
        let (project, what) = match job.src {
            Src::Sdist(s) => (
                unpack_sdist(sdist.as_ref().unwrap(), &s.filename, &work.join("src"))?,
                format!("sdist {}", s.filename),
            ),
            Src::Dir(d) => {
                let p = work.join("src").join(normalize(job.name));
                source::copy_tree(d, &p, &[store.root().to_path_buf()])?;
                (p, format!("source {}", d.display()))
            }
            Src::Git {
                url,
                commit,
                subdirectory,
            } => {
                let clone = tempfile::Builder::new().prefix("imgbuild-git-").tempdir()?;
                source::checkout(url, commit, clone.path())?;
                let mut top = clone.path().to_path_buf();
                if let Some(s) = subdirectory {
                    if s.starts_with('/') || s.split('/').any(|c| c == "..") {
                        bail!("git commit {commit} of {url}: subdirectory `{s}` is outside the repository");
                    }
                    top = top.join(s);
                    if !top.is_dir() {
                        bail!("git commit {commit} of {url} has no directory `{s}` (the lock's subdirectory)");
                    }
                }
                let p = work.join("src").join(normalize(job.name));
                source::copy_tree(&top, &p, &[])?;
                (p, format!("git commit {commit} of {url}"))
            }
        };
        self.phases.push((
            match job.src {
                Src::Sdist(_) => "unpack",
                Src::Dir(_) => "copy",
                Src::Git { .. } => "clone",
            },
            t0.elapsed().as_secs_f64(),
        ));
        let read = |n: &str| fs::read_to_string(project.join(n)).ok();
        let pyproject = read("pyproject.toml");
        if pyproject.is_none() && !project.join("setup.py").is_file() {
            bail!("{what} has neither pyproject.toml nor setup.py at its top");
        }
        let bs = build_system(pyproject.as_deref()).map_err(|e| anyhow!("{what}: {e}"))?;
        let pins = match pinned {
            Some(p) => {
                self.install(&rootfs, &p.requires)?;
                p.requires.clone()
            }
            None => {
                let mut r = resolve::Resolver::new(store, self.setup.indexes, self.setup.build);
                r.add(&bs.requires)?;
                self.install(&rootfs, &r.pins())?;
                let out = self.run(runc, &rootfs, &project, &bs, "requires", job)?;
                let dynamic: Vec<String> = serde_json::from_slice(&fs::read(&out.requires)?)
                    .context("reading get_requires_for_build_wheel's answer")?;
                let added = r
                    .add(&dynamic)
                    .context("resolving what get_requires_for_build_wheel asked for")?;
                self.install(&rootfs, &added)?;
                let mut pins = r.pins();
                pins.sort();
                pins
            }
        };
        let bp = BuildPins {
            sdist: job.pins_id.to_string(),
            requires: pins,
        };
        let key = cache_key(&self.setup, job.sha256, &bp.requires);
        if let Some(b) = self.cached(&key, job) {
            // `imgbuild lock --update` resolved the same pins: nothing to build.
            return Ok(Built { pins: bp, ..b });
        }
        let out = self.run(runc, &rootfs, &project, &bs, "build", job)?;
        let name = fs::read_to_string(&out.wheel_name).unwrap_or_default();
        let name = name.trim();
        let path = work.join("out/wheel").join(name);
        if name.is_empty() || name.contains('/') || !path.is_file() {
            bail!(
                "the backend {} returned `{name}` from build_wheel, which is not a wheel it wrote",
                bs.backend
            );
        }
        if let Src::Git {
            url,
            commit,
            subdirectory,
        } = job.src
        {
            source::add_direct_url(&path, url, commit, subdirectory)?;
        }
        self.check_wheel(job, name, &path)?;
        let mut w = store.writer()?;
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        let mut f = fs::File::open(&path)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha2::Digest::update(&mut h, &buf[..n]);
            w.write_all(&buf[..n])?;
        }
        let sha = hex::encode(sha2::Digest::finalize(h));
        w.commit(&Digest::parse(&format!("sha256:{sha}")).map_err(|e| anyhow!(e))?)?;
        store.put_record("python-wheels", &sha, &name.to_string())?;
        let b = Built {
            filename: name.to_string(),
            sha256: sha,
            pins: bp,
            fresh: true,
            seconds: 0.0,
            phases: String::new(),
        };
        let d = Digest::parse(&format!("sha256:{}", b.sha256)).map_err(|e| anyhow!(e))?;
        crate::cache::put_shared(
            store,
            self.setup.remote,
            "python-sdist-wheel",
            &key,
            &b,
            vec![d],
        )?;
        Ok(b)
    }

    /// The built wheel must be the package, at its version, for the target, and match its RECORD.
    fn check_wheel(&self, job: &Job, name: &str, path: &Path) -> Result<()> {
        let w = WheelName::parse(name)
            .ok_or_else(|| anyhow!("the backend wrote `{name}`, which is not a wheel file name"))?;
        if normalize(&w.dist) != normalize(job.name) {
            bail!("the built wheel {name} is not of {}", job.name);
        }
        let same = match (
            super::version::Version::parse(&w.version),
            super::version::Version::parse(job.version),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => w.version == job.version,
        };
        if !same && !job.version.is_empty() {
            bail!(
                "the built wheel {name} has version {}, the lock says {}",
                w.version,
                job.version
            );
        }
        let tags = self.setup.target.tags();
        if tags.best(&w.tags).is_none() {
            bail!(
                "the built wheel {name} is for tags {}, which the target ({}) does not accept; it accepts {}",
                w.tags.join(", "),
                self.setup.target.describe(),
                tags.describe()
            );
        }
        wheel::verify_archive(path, name)
    }

    /// Runs the frontend in the build root (`mode`: `requires` or `build`).
    fn run(
        &mut self,
        runc: &Path,
        rootfs: &Path,
        project: &Path,
        bs: &BuildSystem,
        mode: &str,
        job: &Job,
    ) -> Result<RunOut> {
        let work = rootfs.join(WORK);
        let inside = |p: &Path| format!("/{}", p.strip_prefix(rootfs).unwrap().display());
        fs::write(work.join("frontend.py"), FRONTEND)?;
        let cfg = serde_json::json!({
            "source": inside(project),
            "backend": bs.backend,
            "backend_path": bs.backend_path,
            "mode": mode,
            "requires_out": format!("/{WORK}/out/requires.json"),
            "wheel_dir": format!("/{WORK}/out/wheel"),
            "wheel_name_out": format!("/{WORK}/out/wheel-name"),
        });
        fs::create_dir_all(work.join("out/wheel"))?;
        fs::write(work.join("frontend.json"), serde_json::to_vec(&cfg)?)?;
        for d in ["src", "out", "home"] {
            chown_tree(&work.join(d), BUILD_UID)?;
        }
        let tmp = rootfs.join("tmp");
        fs::create_dir_all(&tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))?;
        let mut env = vec![
            format!("PATH=/{WORK}/env/bin:{}", crate::image::DEFAULT_PATH),
            format!("PYTHONPATH=/{WORK}/env/site"),
            format!("HOME=/{WORK}/home"),
            "TMPDIR=/tmp".to_string(),
            "LANG=C.UTF-8".to_string(),
            "PYTHONDONTWRITEBYTECODE=1".to_string(),
            // Reproducible archives (zip cannot store times before 1980).
            "SOURCE_DATE_EPOCH=315532800".to_string(),
        ];
        // A source tree is copied without `.git` (and a git checkout has no `git` in the target to
        // ask): setuptools-scm and hatch-vcs, which read the version from git, are told the
        // version the lock records — what they computed when the lock was made.
        if !matches!(job.src, Src::Sdist(_)) && !job.version.is_empty() {
            env.push(format!("SETUPTOOLS_SCM_PRETEND_VERSION={}", job.version));
        }
        env.extend(self.setup.env.iter().map(|(k, v)| format!("{k}={v}")));
        let bundle = self.tmp.as_ref().unwrap().path();
        let args = [
            self.setup.build.interpreter.clone(),
            format!("/{WORK}/frontend.py"),
            format!("/{WORK}/frontend.json"),
        ];
        crate::runtime::write_config(
            bundle,
            rootfs,
            &crate::runtime::Process {
                args: &args,
                env: &env,
                cwd: &inside(project),
                uid: BUILD_UID,
                gid: BUILD_UID,
                capabilities: &[],
                nofile: (1024, 1024),
                no_new_privileges: true,
            },
            false,
            "imgbuild-build",
        )?;
        // Unique among the builders running side by side in this process (and across processes).
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("imgbuild-sdist-{}-{n}", std::process::id());
        let t0 = std::time::Instant::now();
        let res = crate::runtime::run(runc, bundle, &id);
        self.phases.push((
            if mode == "build" {
                "build_wheel"
            } else {
                "get_requires_for_build_wheel"
            },
            t0.elapsed().as_secs_f64(),
        ));
        let res = res?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
        if !res.status.success() {
            let step = if mode == "build" {
                "build_wheel"
            } else {
                "get_requires_for_build_wheel"
            };
            let msg = format!(
                "{} {}: the build backend {} failed in {step} (exit {}, in a container of the target without network); its last {TAIL} lines of output:\n{}",
                job.name,
                job.version,
                bs.backend,
                res.status.code().unwrap_or(-1),
                tail(&text, TAIL)
            );
            if let Some(h) = hint_for(&text, job) {
                return Err(crate::error::UsageError::new(msg).hint(h).into());
            }
            bail!(msg);
        }
        Ok(RunOut {
            requires: work.join("out/requires.json"),
            wheel_name: work.join("out/wheel-name"),
        })
    }
}

/// Bump when the shared build roots' layout changes.
const ROOT_FORMAT: u32 = 1;

/// The base layers unpacked once per store (`build-roots/KEY`, made in `tmp/` and renamed into
/// place), shared by every build on that base. Its files are linked into each build's root, so
/// nothing may write a file of a build root in place (the build runs as uid 65534, which cannot;
/// imgbuild only adds files); `imgbuild store gc` removes the shared roots.
pub(crate) fn shared_root(store: &Store, layers: &[Descriptor]) -> Result<PathBuf> {
    let ids: Vec<String> = layers.iter().map(|d| d.digest.to_string()).collect();
    let dir = store
        .root()
        .join("build-roots")
        .join(crate::key::build_root(ROOT_FORMAT, &ids));
    if dir.join("done").is_file() {
        return Ok(dir.join("rootfs"));
    }
    fs::create_dir_all(store.root().join("tmp"))?;
    let t = tempfile::Builder::new()
        .prefix(&format!(".build-root.{}.", std::process::id()))
        .suffix(".tmp")
        .tempdir_in(store.root().join("tmp"))?;
    crate::layer::unpack::unpack(store, layers, &t.path().join("rootfs"))?;
    fs::write(t.path().join("done"), b"")?;
    fs::create_dir_all(dir.parent().unwrap())?;
    let t = t.keep();
    if fs::rename(&t, &dir).is_err() {
        // Another build made it first: theirs is used.
        let _ = fs::remove_dir_all(&t);
    }
    Ok(dir.join("rootfs"))
}

/// `dst` made like `src`: directories and symbolic links anew (modes and owners kept), regular
/// files as hard links (a fraction of unpacking the layers again).
pub(crate) fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = fs::symlink_metadata(src)?;
    fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut stack = vec![(src.to_path_buf(), dst.to_path_buf(), md)];
    while let Some((s, d, md)) = stack.pop() {
        for e in fs::read_dir(&s)? {
            let e = e?;
            let (sp, dp) = (e.path(), d.join(e.file_name()));
            let m = fs::symlink_metadata(&sp)?;
            let ft = m.file_type();
            if ft.is_dir() {
                fs::create_dir(&dp)?;
                stack.push((sp, dp, m));
            } else if ft.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&sp)?, &dp)?;
                std::os::unix::fs::lchown(&dp, Some(m.uid()), Some(m.gid()))?;
            } else if ft.is_file() {
                fs::hard_link(&sp, &dp)?;
            }
        }
        std::os::unix::fs::lchown(&d, Some(md.uid()), Some(md.gid()))?;
        fs::set_permissions(&d, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    Ok(())
}

/// What to do about a failure the backend's output explains.
fn hint_for(output: &str, job: &Job) -> Option<String> {
    if output.contains("setuptools-scm was unable to detect version")
        || output.contains("unable to detect version for")
    {
        // setuptools-scm's own per-distribution variable, so that only this build is told; a
        // backend that does not pass the name on (hatch-vcs) reads only the general one.
        let (var, caveat) = if output.contains("No distribution name is known") {
            (
                "SETUPTOOLS_SCM_PRETEND_VERSION".to_string(),
                " (its backend reads only the general variable, which every build of the layer then sees)",
            )
        } else {
            (
                format!(
                    "SETUPTOOLS_SCM_PRETEND_VERSION_FOR_{}",
                    normalize(job.name).replace(['-', '.'], "_").to_uppercase()
                ),
                "",
            )
        };
        return Some(format!(
            "{}'s version comes from git (setuptools-scm), and a source tree is built without its `.git` (the lock records no version for it): give it one with `build = {{ env = {{ {var} = \"VERSION\" }} }}` in the layer's `python` table{caveat}",
            job.name
        ));
    }
    if let Some(cc) = missing_compiler(output) {
        // e.g. libsass on arm64: the lock has wheels for x86_64 only, so the sdist is built,
        // and the target's base has no compiler.
        return Some(format!(
            "{} is a native extension and the build root has no C/C++ compiler (`{cc}` not found): add the compilers and the Python headers to the build root only, with `build = {{ debian = [\"gcc\", \"g++\", \"python3-dev\"] }}` in the layer's `python` table (they never reach the image)",
            job.name
        ));
    }
    None
}

/// The compiler a build's output says it could not run (`gcc`, `aarch64-linux-gnu-gcc`,
/// `g++`, `cc`), if any.
fn missing_compiler(output: &str) -> Option<String> {
    for line in output.lines() {
        for (pre, post) in [
            ("No such file or directory: '", "'"),
            ("command '", "' failed"),
            ("", ": not found"),
            ("", ": command not found"),
        ] {
            let Some(i) = line.find(pre) else { continue };
            let rest = &line[i + pre.len()..];
            let Some(j) = rest.find(post) else { continue };
            let word = rest[..j].rsplit(['/', ' ']).next().unwrap_or("");
            let base = word.rsplit('-').next().unwrap_or("");
            if matches!(base, "gcc" | "g++" | "cc" | "c++" | "clang") {
                return Some(word.to_string());
            }
        }
    }
    None
}

struct RunOut {
    requires: PathBuf,
    wheel_name: PathBuf,
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_compiler_is_named_from_the_build_output() {
        use super::missing_compiler as m;
        assert_eq!(
            m("error: [Errno 2] No such file or directory: 'aarch64-linux-gnu-gcc'").as_deref(),
            Some("aarch64-linux-gnu-gcc")
        );
        assert_eq!(
            m("error: command 'x86_64-linux-gnu-gcc' failed: No such file or directory").as_deref(),
            Some("x86_64-linux-gnu-gcc")
        );
        assert_eq!(m("sh: 1: cc: not found").as_deref(), Some("cc"));
        assert_eq!(
            m("error: [Errno 2] No such file or directory: 'README.md'"),
            None
        );
        assert_eq!(m("ModuleNotFoundError: No module named 'setuptools'"), None);
    }

    use super::*;

    #[test]
    fn build_system_defaults_follow_pep_517_and_518() {
        let legacy = build_system(None).unwrap();
        assert_eq!(legacy.backend, "setuptools.build_meta:__legacy__");
        assert_eq!(legacy.requires, ["setuptools>=40.8.0"]);
        assert_eq!(build_system(Some("[project]\nname='x'\n")).unwrap(), legacy);
        let b = build_system(Some(
            "[build-system]\nrequires = ['hatchling']\nbuild-backend = 'hatchling.build'\n",
        ))
        .unwrap();
        assert_eq!(
            (b.requires[0].as_str(), b.backend.as_str()),
            ("hatchling", "hatchling.build")
        );
        let b = build_system(Some(
            "[build-system]\nrequires = []\nbuild-backend = 'be'\nbackend-path = ['.']\n",
        ))
        .unwrap();
        assert_eq!(b.backend_path, ["."]);
        assert!(
            build_system(Some("[build-system]\nbackend-path = ['../x']\n"))
                .unwrap_err()
                .contains("outside")
        );
    }

    #[test]
    fn a_build_root_links_the_shared_roots_files_and_remakes_its_directories_and_links() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("shared");
        fs::create_dir_all(src.join("usr/bin")).unwrap();
        fs::write(src.join("usr/bin/python3.11"), b"elf").unwrap();
        std::os::unix::fs::symlink("python3.11", src.join("usr/bin/python3")).unwrap();
        fs::create_dir(src.join("tmp")).unwrap();
        fs::set_permissions(src.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        let dst = t.path().join("root");
        link_tree(&src, &dst).unwrap();
        let (a, b) = (
            fs::metadata(src.join("usr/bin/python3.11")).unwrap(),
            fs::metadata(dst.join("usr/bin/python3.11")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "a hard link, not a copy");
        assert_eq!(
            fs::read_link(dst.join("usr/bin/python3")).unwrap(),
            Path::new("python3.11")
        );
        assert_eq!(
            fs::metadata(dst.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        // Removing the build root's files leaves the shared root whole.
        fs::remove_dir_all(&dst).unwrap();
        assert_eq!(fs::read(src.join("usr/bin/python3.11")).unwrap(), b"elf");
    }

    #[test]
    fn sdist_members_outside_the_tree_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for (name, link) in [
            ("../evil", None),
            ("/abs", None),
            ("p/link", Some("../../x")),
        ] {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            match link {
                Some(l) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_link_name(l).unwrap();
                }
                None => h.set_size(1),
            }
            h.set_mode(0o644);
            // Write the raw name: tar's own setters refuse `..`.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, if link.is_some() { &b""[..] } else { &b"x"[..] })
                .unwrap();
            let bytes = b.into_inner().unwrap();
            let p = d.path().join("x.tar");
            fs::write(&p, bytes).unwrap();
            let e = unpack_sdist(&p, "x.tar", &d.path().join("out"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("refusing member"), "{name}: {e}");
        }
    }
}
