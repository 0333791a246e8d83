//! Python layers: a lock file's wheels installed straight into one site-packages layer for the
//! interpreter of the base image, and verified by RECORD on the final merged filesystem.
//!
//! Data flow: `target` (detected from the base) → `lock` (+ `markers`) → `select` (`tags`) →
//! `index` (downloads into the store) → `wheel` (entries, `scripts`, `record`) → `check`.
//! Packages without a usable wheel (or named in `no_binary`) are built from their sdist by
//! `sdist` (PEP 517 in a container of the target) before installing. With `bytecode`, the
//! assembled install's `.py` files are compiled by the target's interpreter (`bytecode`).

pub mod bytecode;
pub mod check;
pub mod filename;
mod hint;
pub mod index;
pub mod lock;
pub mod markers;
pub mod record;
pub mod scripts;
pub mod sdist;
pub mod select;
pub mod supply;
pub mod tags;
pub mod target;
pub mod version;
pub mod wheel;

#[cfg(test)]
mod testutil;

pub use check::{check_rootfs, distributions};

use crate::image::ImageConfig;
use crate::layer::Entry;
use crate::recipe::{BaseView, Ctx, Problem, Recipe};
use crate::rootfs::Rootfs;
use crate::spec::{LayerSpec, PythonSpec};
use crate::usage;
use anyhow::{anyhow, bail, Context, Result};
use filename::WheelName;
use hint::hinted;
use select::{Origin, Pick};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use target::Target;

pub fn recipe(cx: &Ctx, l: &LayerSpec) -> Result<Box<dyn Recipe>> {
    let py = l.python.clone().expect("a python layer");
    for (key, set) in [
        ("root", l.root.is_some()),
        ("exclude", l.exclude.is_some()),
        ("ensure_dirs", l.ensure_dirs.is_some()),
    ] {
        if set {
            return Err(usage!(
                "layer `{}`: `{key}` is for file layers; a python layer takes its options inside `python = {{ ... }}` (e.g. `exclude` there names packages)",
                l.name
            ));
        }
    }
    let lock = cx.root.join(&py.lock);
    if !lock.is_file() {
        return Err(hinted(
            format!("layer `{}`: lock file {} does not exist", l.name, lock.display()),
            "generate it (`uv lock`, `uv export --format pylock.toml`, or `uv pip compile --generate-hashes`) or fix `lock`",
        ));
    }
    let owner = py
        .owner
        .as_deref()
        .or(l.owner.as_deref())
        .map(crate::files::parse_owner)
        .transpose()?
        .unwrap_or((0, 0));
    let find_links = py
        .find_links
        .iter()
        .map(|f| select::find_links_dir(&cx.root, f))
        .collect::<Result<Vec<_>>>()?;
    for i in py.index_url.iter() {
        if !(i.starts_with("https://") || i.starts_with("http://")) {
            return Err(usage!(
                "layer `{}`: index_url `{i}` must be an http(s) URL",
                l.name
            ));
        }
    }
    Ok(Box::new(PythonRecipe {
        spec: l.clone(),
        py,
        lock,
        owner,
        find_links,
        state: None,
    }))
}

/// Part of every python layer's cache key: bump when installing (its checks included) changes,
/// so layers installed by an older imgbuild are installed (and checked) again.
const INSTALLER_FORMAT: u32 = 2;

/// A python layer.
pub struct PythonRecipe {
    spec: LayerSpec,
    py: PythonSpec,
    lock: PathBuf,
    owner: (u32, u32),
    find_links: Vec<PathBuf>,
    state: Option<State>,
}

/// What `inputs` worked out: enough to build the layer and to check it.
struct State {
    target: Target,
    /// `build.base`, resolved by the build.
    build_base: Option<crate::image::BaseImage>,
    /// What each pick built from source was identified by before its wheel replaced it in
    /// `picks` (sdist sha256, tree or commit identity; the locked version, empty when dynamic),
    /// by pick: the layer's inputs keep it, so the key after a build is the key the next build
    /// computes.
    source_ids: BTreeMap<usize, (String, String)>,
    picks: Vec<Pick>,
    indexes: Vec<String>,
    registries: BTreeSet<String>,
}

/// Whether every pick is a wheel for any platform (`…-none-any.whl`) taken as it is (none
/// built from an sdist or a source tree).
fn pure(st: &State) -> bool {
    !st.picks.is_empty()
        && st.picks.iter().all(|p| {
            !matches!(p.origin, Origin::Sdist(_) | Origin::Source(_))
                && p.filename.ends_with("-none-any.whl")
        })
}

/// The target of `py` in `base`, remembered in the store by the base's layers and settings,
/// and shared through the shared cache (taken from it only when the build does not need the
/// base's bytes: else detected here).
pub fn target_of(cx: &Ctx, base: &BaseView, py: &PythonSpec) -> Result<Target> {
    let cfg = base.config();
    let key = crate::key::python_target(target::FORMAT, cfg, &cx.platform, py);
    let remote = cx.remote.as_deref().filter(|r| r.trusts_base_facts());
    if let Some(t) = target::shared(&cx.store, remote, &key, base) {
        return Ok(t);
    }
    let fs = base.rootfs().context("reading the base image's layers")?;
    let mut config = cfg.clone();
    config.architecture = cx.platform.architecture.clone();
    config.variant = cx.platform.variant.clone();
    let t = target::detect(fs, &config, &|paths| base.read_files(paths), py)?;
    crate::cache::put_shared(
        &cx.store,
        cx.remote.as_deref(),
        "python-target",
        &key,
        &t,
        vec![],
    )?;
    Ok(t)
}

impl PythonRecipe {
    fn lock_name(&self) -> String {
        self.lock
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn prepare(&mut self, cx: &Ctx, base: &BaseView) -> Result<&State> {
        if self.state.is_none() {
            let target = target_of(cx, base, &self.py)?;
            lock::check_requires_python(&self.lock, &target.version, &target.interpreter)?;
            let choice = lock::Choice {
                groups: self.py.groups.clone(),
                extras: self.py.extras.clone(),
                exclude: self.py.exclude.clone(),
                install_project: self.py.install_project.unwrap_or(true),
                install_workspace: self.py.install_workspace.unwrap_or(true),
                packages: self.py.packages.clone(),
                all_packages: self.py.all_packages,
            };
            let locked = lock::load(&self.lock, &target.marker_env(), &choice)?;
            let notes: Vec<String> = locked
                .notes
                .iter()
                .map(|n| format!("layer `{}`: {n}", self.spec.name))
                .collect();
            if locked.packages.is_empty() {
                let why = if locked.notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", locked.notes.join("; "))
                };
                return Err(hinted(
                    format!(
                        "layer `{}`: {} installs nothing for {}{why}; a layer with no distribution is refused",
                        self.spec.name,
                        self.lock_name(),
                        target.describe()
                    ),
                    "for a uv workspace, `all_packages = true` or `packages = [\"NAME\"]` in the layer's `python` table installs its members (uv sync --all-packages / --package); check `groups`, `extras` and `exclude`",
                ));
            }
            cx.notes.lock().unwrap().extend(notes);
            let mut dirs = self.find_links.clone();
            let lock_dir = self.lock.parent().unwrap_or(&cx.root).to_path_buf();
            for f in &locked.find_links {
                dirs.push(select::find_links_dir(&lock_dir, f)?);
            }
            let local = select::scan_find_links(&dirs, &cx.stat)?;
            let root = cx.root.clone();
            let hash_local =
                |path: &std::path::Path| -> std::result::Result<Option<String>, String> {
                    let md =
                        std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
                    let sha = cx
                        .stat
                        .hash(path, &crate::cache::FileId::of(&md))
                        .map_err(|e| format!("{}: {e:#}", path.display()))?;
                    let key = path
                        .strip_prefix(&root)
                        .unwrap_or(path)
                        .display()
                        .to_string();
                    match cx.pins.check(&key, &sha) {
                    Ok(()) => Ok(Some(sha)),
                    Err(pinned) => Err(format!(
                        "{key} changed since imgbuild.lock pinned it (sha256 {pinned}, now {sha}); the lock gives no hash for it, so imgbuild pinned it at first use: restore the file, or accept the new one with `imgbuild lock --update`"
                    )),
                }
                };
            let mut picks =
                select::select_with(&locked, &target, &local, &self.lock_name(), &hash_local)?;
            self.apply_no_binary(&locked, &mut picks)?;
            for p in picks.iter_mut() {
                match &mut p.origin {
                    Origin::Source(select::SourceRef::Dir(d)) => {
                        *d = lock_dir.join(&*d);
                        p.sha256 = sdist::source::tree_hash(
                            sdist::FORMAT,
                            d,
                            &[cx.store.root().to_path_buf()],
                            &cx.stat,
                        )
                        .with_context(|| {
                            format!("hashing the source of {} {}", p.name, p.version)
                        })?;
                    }
                    Origin::Source(select::SourceRef::Git {
                        url,
                        commit,
                        subdirectory,
                    }) => {
                        p.sha256 = crate::key::git_source(
                            sdist::FORMAT,
                            url,
                            commit,
                            subdirectory.as_deref(),
                        );
                    }
                    _ => {}
                }
            }
            let build_base = match self.py.build.as_ref().and_then(|b| b.base.as_ref()) {
                Some(w) => Some(base.build_bases.get(w).cloned().ok_or_else(|| {
                    anyhow!(
                        "layer `{}`: build base `{w}` was not resolved",
                        self.spec.name
                    )
                })?),
                None => None,
            };
            self.state = Some(State {
                target,
                build_base,
                source_ids: BTreeMap::new(),
                picks,
                indexes: locked.indexes,
                registries: locked.registries,
            });
        }
        Ok(self.state.as_ref().unwrap())
    }

    /// `no_binary`: the named packages are built from their sdist even when a wheel fits.
    fn apply_no_binary(&self, locked: &lock::Locked, picks: &mut [Pick]) -> Result<()> {
        for n in &self.py.no_binary {
            let want = filename::normalize(n);
            let Some(pick) = picks
                .iter_mut()
                .find(|p| filename::normalize(&p.name) == want)
            else {
                return Err(usage!(
                    "layer `{}`: no_binary `{n}`: {} installs no package of that name for this target",
                    self.spec.name,
                    self.lock_name()
                ));
            };
            let pkg = locked
                .packages
                .iter()
                .find(|p| filename::normalize(&p.name) == want)
                .expect("every pick is a locked package");
            let sdist = match &pkg.artifacts {
                lock::Artifacts::Files {
                    sdist: Some(s),
                    other: None,
                    ..
                } => s,
                _ => {
                    return Err(usage!(
                        "layer `{}`: no_binary `{n}`: {} gives no sdist of {} {} to build",
                        self.spec.name,
                        self.lock_name(),
                        pkg.name,
                        pkg.version
                    ))
                }
            };
            *pick = select::sdist_pick(pkg, sdist, &self.lock_name()).map_err(|e| anyhow!(e))?;
        }
        Ok(())
    }

    /// The indexes build requirements come from: `index_url`, the environment's index, the
    /// lock's registries or `--index-url` lines.
    fn build_indexes(&self) -> Result<Vec<String>> {
        let st = self.state.as_ref().unwrap();
        if let Some(m) = index::mirror(self.py.index_url.as_deref()) {
            return Ok(vec![m]);
        }
        let mut out: Vec<String> = st
            .registries
            .iter()
            .filter(|r| r.starts_with("https://") || r.starts_with("http://"))
            .cloned()
            .collect();
        out.extend(st.indexes.iter().cloned());
        if out.is_empty() {
            let only_sdists = !st
                .picks
                .iter()
                .any(|p| matches!(p.origin, Origin::Source(_)));
            let sdists: Vec<String> = st
                .picks
                .iter()
                .filter(|p| matches!(p.origin, Origin::Sdist(_) | Origin::Source(_)))
                .map(|p| format!("{} {}", p.name, p.version))
                .collect();
            return Err(hinted(
                format!(
                    "building {} from {} needs a package index for the build requirements, and none is configured",
                    sdists.join(", "),
                    match (sdists.len() == 1, only_sdists) {
                        (true, true) => "its sdist",
                        (false, true) => "their sdists",
                        (true, false) => "its source",
                        (false, false) => "their sources",
                    }
                ),
                "set `index_url` in the layer's `python` table, or PIP_INDEX_URL / UV_INDEX_URL",
            ));
        }
        Ok(out)
    }

    /// The interpreter of `build.base`, which must build wheels the target can use: the same
    /// Python minor version and architecture, a libc of the same kind no newer than the
    /// target's (a wheel linked against a newer glibc does not load on an older one).
    fn build_target(&self, cx: &Ctx, b: &crate::image::BaseImage) -> Result<Target> {
        let view = BaseView::new(b, &cx.store);
        let t = target_of(cx, &view, &PythonSpec::default())
            .with_context(|| format!("layer `{}`: build base `{}`", self.spec.name, b.name))?;
        let me = &self.state.as_ref().unwrap().target;
        let mut why = Vec::new();
        if t.minor_version() != me.minor_version() {
            why.push(format!(
                "its Python is {} ({}), the image's {} ({})",
                t.version, t.interpreter, me.version, me.interpreter
            ));
        }
        if t.arch != me.arch {
            why.push(format!("it is for {}, the image for {}", t.arch, me.arch));
        }
        use tags::Libc;
        let newer = match (&t.libc, &me.libc) {
            (Libc::Glibc { major, minor }, Libc::Glibc { major: a, minor: b })
            | (Libc::Musl { major, minor }, Libc::Musl { major: a, minor: b }) => {
                (major, minor) > (a, b)
            }
            _ => {
                why.push(format!("its libc is {}, the image's {}", t.libc, me.libc));
                false
            }
        };
        if newer {
            why.push(format!(
                "its libc ({}) is newer than the image's ({}): what it compiles may not load in the image",
                t.libc, me.libc
            ));
        }
        if !why.is_empty() {
            return Err(crate::error::UsageError::new(format!(
                "layer `{}`: build base `{}` cannot build wheels for this image: {}",
                self.spec.name,
                b.name,
                why.join("; ")
            ))
            .hint("use a build image of the same Debian release (or Python image tag) as the base, with the compilers and headers added")
            .into());
        }
        Ok(t)
    }

    fn build_env(&self) -> BTreeMap<String, String> {
        self.py
            .build
            .as_ref()
            .map(|b| b.env.clone())
            .unwrap_or_default()
    }

    /// Builds (or finds built) the wheel of every sdist pick; pins the build requirements in
    /// `imgbuild.lock` when they were resolved.
    fn build_sdists(&mut self, cx: &Ctx, base: &BaseView) -> Result<()> {
        let st = self.state.as_ref().unwrap();
        if !st
            .picks
            .iter()
            .any(|p| matches!(p.origin, Origin::Sdist(_) | Origin::Source(_)))
        {
            return Ok(());
        }
        let indexes = self.build_indexes()?;
        let env = self.build_env();
        let lockfile = crate::registry::lock::LockFile::load(&cx.root)?;
        let build_target = match &self.state.as_ref().unwrap().build_base {
            Some(b) => Some(self.build_target(cx, b)?),
            None => None,
        };
        // `build.debian`: a layer of Debian packages on top of the build root's image (the
        // build base, else the layer's base), for the build root only.
        let mut root_layers = match &self.state.as_ref().unwrap().build_base {
            Some(b) => b.layers.clone(),
            None => base.base.layers.clone(),
        };
        if let Some(b) = self.py.build.as_ref().filter(|b| !b.debian.is_empty()) {
            let own;
            let view = match &self.state.as_ref().unwrap().build_base {
                Some(bb) => {
                    own = BaseView::new(bb, &cx.store);
                    &own
                }
                None => base,
            };
            root_layers.push(crate::debian::layer::build_root_layer(
                cx,
                view,
                &self.spec.name,
                &b.debian,
            )?);
        }
        let st = self.state.as_mut().unwrap();
        let build = build_target.as_ref().unwrap_or(&st.target);
        let setup = || sdist::Setup {
            store: &cx.store,
            remote: cx.remote.as_deref(),
            base_layers: &root_layers,
            target: &st.target,
            build,
            indexes: &indexes,
            env: &env,
        };
        // Every pick built from source, in lock order, with its pins' identity.
        let todo: Vec<(usize, sdist::Src, String)> = st
            .picks
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                src_of(&p.origin).map(|src| (i, src, sdist::pins_id(src, &p.sha256)))
            })
            .collect();
        // Builds run side by side, each worker in its own build root (one process each: most
        // backends compile on one core). IMGBUILD_CONCURRENT_BUILDS caps them, like uv's
        // UV_CONCURRENT_BUILDS; the default is the number of cores.
        let workers = concurrent_builds().min(todo.len()).max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let results: Vec<std::sync::Mutex<Option<Result<sdist::Built>>>> =
            todo.iter().map(|_| std::sync::Mutex::new(None)).collect();
        let picks = &st.picks;
        let target = &st.target;
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    let mut builder = sdist::Builder::new(setup());
                    loop {
                        use std::sync::atomic::Ordering::SeqCst;
                        let k = next.fetch_add(1, SeqCst);
                        if k >= todo.len() || failed.load(SeqCst) {
                            break;
                        }
                        let (i, src, pins_id) = &todo[k];
                        let p = &picks[*i];
                        let job = sdist::Job {
                            name: &p.name,
                            version: &p.version,
                            src: *src,
                            sha256: &p.sha256,
                            pins_id,
                        };
                        let key = sdist::pins_key(&p.name, &p.version, target);
                        let r = builder.wheel(&job, lockfile.python_build.get(&key));
                        match &r {
                            Ok(b) if b.fresh => {
                                let from = match &p.origin {
                                    Origin::Sdist(_) => "the sdist",
                                    Origin::Source(select::SourceRef::Dir(_)) => "the source",
                                    _ => "the git commit",
                                };
                                eprintln!(
                                    "built {} from {from} of {} {} in {:.1} s ({} build requirements; {})",
                                    b.filename,
                                    p.name,
                                    p.version,
                                    b.seconds,
                                    b.pins.requires.len(),
                                    b.phases
                                );
                            }
                            Ok(_) => {}
                            Err(_) => failed.store(true, SeqCst),
                        }
                        *results[k].lock().unwrap() = Some(r);
                    }
                });
            }
        });
        let mut new_pins = BTreeMap::new();
        let mut built = Vec::new();
        for ((i, _, _), r) in todo.iter().zip(results) {
            // The first failure in lock order is the one reported; builds not started after
            // it have no result.
            match r.into_inner().unwrap() {
                Some(r) => built.push((*i, r?)),
                None => continue,
            }
        }
        for (i, b) in built {
            let p = &mut st.picks[i];
            st.source_ids
                .entry(i)
                .or_insert_with(|| (p.sha256.clone(), p.version.clone()));
            let key = sdist::pins_key(&p.name, &p.version, &st.target);
            if lockfile.python_build.get(&key) != Some(&b.pins) {
                new_pins.insert(key, b.pins.clone());
            }
            if p.version.is_empty() {
                // A project whose version is dynamic (setuptools-scm, hatch-vcs): uv.lock records
                // none; the wheel says what it became.
                if let Some(w) = WheelName::parse(&b.filename) {
                    p.version = w.version;
                }
            }
            p.filename = b.filename;
            p.sha256 = b.sha256;
        }
        if !new_pins.is_empty() {
            crate::registry::lock::LockFile::update(&cx.root, |l| l.python_build.extend(new_pins))?;
        }
        Ok(())
    }

    /// Finds the wheels of requirements.txt packages through the index (remembered in the store).
    fn resolve_index(&mut self, cx: &Ctx) -> Result<()> {
        let st = self.state.as_mut().unwrap();
        if !st
            .picks
            .iter()
            .any(|p| matches!(p.origin, Origin::Index { .. }))
        {
            return Ok(());
        }
        let indexes = index::indexes(self.py.index_url.as_deref(), &st.indexes)?;
        let tags = st.target.tags();
        let lock_name = self
            .lock
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let errors = std::sync::Mutex::new(Vec::new());
        let target = &st.target;
        std::thread::scope(|s| {
            for chunk in st.picks.chunks_mut(4) {
                let (indexes, tags, errors, lock_name) = (&indexes, &tags, &errors, &lock_name);
                s.spawn(move || {
                    for p in chunk {
                        let Origin::Index { hashes, fallback } = &p.origin else {
                            continue;
                        };
                        let res =
                            index::hashed_files(&cx.store, indexes, &p.name, &p.version, hashes)
                                .and_then(|files| {
                                    let best = files
                                        .iter()
                                        .filter(|f| !f.yanked || files.len() == 1)
                                        .filter_map(|f| {
                                            Some((
                                                tags.best(&WheelName::parse(&f.filename)?.tags)?,
                                                f,
                                            ))
                                        })
                                        .min_by_key(|(r, _)| *r);
                                    let (filename, sha256, origin) = match (best, fallback) {
                                        (Some((_, f)), _) => (
                                            f.filename.clone(),
                                            f.sha256.clone().unwrap_or_default(),
                                            Origin::Lock {
                                                url: Some(f.url.clone()),
                                                path: None,
                                            },
                                        ),
                                        (None, Some(l)) => (
                                            l.filename.clone(),
                                            l.sha256.clone(),
                                            Origin::Local(l.path.clone()),
                                        ),
                                        (None, None) => {
                                            let wheels: Vec<String> = files
                                                .iter()
                                                .map(|f| f.filename.clone())
                                                .filter(|f| f.ends_with(".whl"))
                                                .collect();
                                            let sdist = files
                                                .iter()
                                                .find(|f| filename::is_sdist(&f.filename))
                                                .map(|f| f.filename.as_str());
                                            let pkg = lock::Package {
                                                name: p.name.clone(),
                                                version: p.version.clone(),
                                                artifacts: lock::Artifacts::Hashes(vec![]),
                                            };
                                            bail!(select::no_wheel(
                                                &pkg, lock_name, &wheels, sdist, None, target
                                            ));
                                        }
                                    };
                                    Ok((filename, sha256, origin))
                                });
                        match res {
                            Ok((f, h, o)) => {
                                p.filename = f;
                                p.sha256 = h;
                                p.origin = o;
                            }
                            Err(e) => errors.lock().unwrap().push(format!("{e:#}")),
                        }
                    }
                });
            }
        });
        let errors = errors.into_inner().unwrap();
        if !errors.is_empty() {
            bail!(
                "finding the wheels of {} package{} through {}:\n    {}",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" },
                indexes.join(", "),
                errors.join("\n    ")
            );
        }
        Ok(())
    }

    /// `prefer`, normalised; each name must be a distribution this layer installs.
    fn prefer(&self, picks: &[Pick]) -> Result<BTreeMap<String, String>> {
        let have: BTreeSet<String> = picks.iter().map(|p| filename::normalize(&p.name)).collect();
        let mut out = BTreeMap::new();
        for (win, lose) in &self.py.prefer {
            for n in [win, lose] {
                if !have.contains(&filename::normalize(n)) {
                    return Err(usage!(
                        "layer `{}`: prefer `{win}` = `{lose}`: {} installs no package `{n}` for this target",
                        self.spec.name,
                        self.lock_name()
                    ));
                }
            }
            out.insert(filename::normalize(win), filename::normalize(lose));
        }
        Ok(out)
    }

    /// Where each chosen wheel comes from (with its pick's index), for `index::ensure_each`;
    /// wheels built from sdists are not among them.
    fn wants(&self, cx: &Ctx) -> Result<Vec<(usize, index::Want)>> {
        let st = self.state.as_ref().unwrap();
        let mirror = index::mirror(self.py.index_url.as_deref())
            .map(|m| m.trim_end_matches('/').to_string());
        let uses_mirror = mirror
            .as_ref()
            .is_some_and(|m| !st.registries.iter().any(|r| r.trim_end_matches('/') == m));
        let mut out = Vec::new();
        for (i, p) in st.picks.iter().enumerate() {
            let mut w = index::Want {
                filename: p.filename.clone(),
                sha256: p.sha256.clone(),
                urls: vec![],
                path: None,
                pinned_by: self.lock_name(),
            };
            match &p.origin {
                Origin::Lock {
                    path: Some(path), ..
                } => w.path = Some(path.clone()),
                Origin::Lock { url: Some(url), .. } => {
                    let d = crate::digest::Digest::parse(&format!("sha256:{}", p.sha256))
                        .map_err(|e| anyhow!(e))?;
                    if uses_mirror && !cx.store.has(&d) && !st.registries.is_empty() {
                        let m = mirror.clone().unwrap();
                        // The mirror first; the lock's own URL stays as the fallback.
                        let files = index::hashed_files(
                            &cx.store,
                            &[m],
                            &p.name,
                            &p.version,
                            std::slice::from_ref(&p.sha256),
                        )
                        .unwrap_or_default();
                        w.urls.extend(
                            files
                                .into_iter()
                                .filter(|f| f.filename == p.filename)
                                .map(|f| f.url),
                        );
                    }
                    w.urls.push(url.clone());
                }
                Origin::Lock { .. } => bail!(
                    "{} {}: {} names neither a URL nor a path for {}",
                    p.name,
                    p.version,
                    self.lock_name(),
                    p.filename
                ),
                Origin::Local(path) => {
                    w.path = Some(path.clone());
                    w.pinned_by = "find_links".into();
                }
                Origin::Index { .. } => unreachable!("resolved before"),
                // Built into the store by `build_sdists`, checked there.
                Origin::Sdist(_) | Origin::Source(_) => continue,
            }
            out.push((i, w));
        }
        Ok(out)
    }
}

/// What a pick's wheel is built from, if it is built.
/// How many sdist builds run at once: `IMGBUILD_CONCURRENT_BUILDS`, else the number of cores.
fn concurrent_builds() -> usize {
    std::env::var("IMGBUILD_CONCURRENT_BUILDS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn src_of(o: &Origin) -> Option<sdist::Src<'_>> {
    Some(match o {
        Origin::Sdist(s) => sdist::Src::Sdist(s),
        Origin::Source(select::SourceRef::Dir(d)) => sdist::Src::Dir(d),
        Origin::Source(select::SourceRef::Git {
            url,
            commit,
            subdirectory,
        }) => sdist::Src::Git {
            url,
            commit,
            subdirectory: subdirectory.as_deref(),
        },
        _ => return None,
    })
}

impl PythonRecipe {
    /// The layer's inputs from the prepared state (`prepare` has run).
    fn inputs_now(&self, cx: &Ctx) -> Result<BTreeMap<String, String>> {
        let owner = self.owner;
        let build_env = self.build_env();
        let st = self.state.as_ref().expect("prepared");
        let lockfile = if st
            .picks
            .iter()
            .any(|p| matches!(p.origin, Origin::Sdist(_) | Origin::Source(_)))
        {
            Some(crate::registry::lock::LockFile::load(&cx.root)?)
        } else {
            None
        };
        let mut t = st.target.clone();
        t.found.clear();
        if pure(st) {
            // Only `none-any` wheels: the layer's bytes are the same on every platform (the
            // interpreter path, site directory and Python version still count).
            t.arch = "any".into();
        }
        let mut m = BTreeMap::new();
        m.insert(
            "[python]".into(),
            serde_json::json!({ "format": INSTALLER_FORMAT, "owner": owner, "target": t })
                .to_string(),
        );
        if let Some(b) = &self.py.bytecode {
            m.insert(
                "[bytecode]".into(),
                serde_json::json!({ "format": bytecode::FORMAT, "settings": b }).to_string(),
            );
        }
        let mut unpinned = Vec::new();
        for (i, p) in st.picks.iter().enumerate() {
            let what = match &p.origin {
                Origin::Index { hashes, fallback } => {
                    let mut h = hashes.clone();
                    h.sort();
                    format!(
                        "{} one of {} (else {:?})",
                        p.version,
                        h.join(","),
                        fallback.as_ref().map(|f| &f.sha256)
                    )
                }
                Origin::Sdist(_) | Origin::Source(_) => {
                    let (id, version) = st
                        .source_ids
                        .get(&i)
                        .map_or((&p.sha256, &p.version), |(s, v)| (s, v));
                    let key = sdist::pins_key(&p.name, version, &st.target);
                    let pins_id = sdist::pins_id(src_of(&p.origin).unwrap(), id);
                    let pins = lockfile
                        .as_ref()
                        .and_then(|l| l.python_build.get(&key))
                        .filter(|b| b.sdist == pins_id);
                    if pins.is_none() {
                        // Resolved while building: never cache the layer under an unpinned key.
                        unpinned.push(p.name.clone());
                    }
                    let mut v = serde_json::json!({
                        "version": version,
                        "sdist": id,
                        "builder": sdist::FORMAT,
                        "build_pins": pins.map(|b| &b.requires),
                        "build_env": build_env,
                    });
                    if let Some(b) = &st.build_base {
                        let layers: Vec<String> =
                            b.layers.iter().map(|d| d.digest.to_string()).collect();
                        v["build_base"] = serde_json::json!(layers);
                    }
                    v.to_string()
                }
                _ => format!("{} {} sha256:{}", p.version, p.filename, p.sha256),
            };
            m.insert(format!("wheel {}", filename::normalize(&p.name)), what);
        }
        if !unpinned.is_empty() {
            m.insert(
                crate::recipe::UNHASHED.into(),
                format!(
                    "build requirements of {} not pinned yet",
                    unpinned.join(", ")
                ),
            );
        }
        Ok(m)
    }
}

impl Recipe for PythonRecipe {
    fn name(&self) -> &str {
        &self.spec.name
    }

    /// A layer of pure-Python wheels (`*-none-any.whl`, nothing built from source) is one
    /// layer for every platform of an index.
    fn platform_bound(&self) -> bool {
        !self.state.as_ref().is_some_and(pure)
    }

    fn build_bases(&self) -> Vec<String> {
        self.py
            .build
            .as_ref()
            .and_then(|b| b.base.clone())
            .into_iter()
            .collect()
    }

    fn inputs(&mut self, cx: &Ctx, base: &BaseView) -> Result<BTreeMap<String, String>> {
        self.prepare(cx, base)?;
        self.inputs_now(cx)
    }

    /// After the layer is written the sdists' build requirements are pinned in imgbuild.lock:
    /// the inputs are complete now, and the layer is cached under the key the next build will
    /// compute (else the second build would write the layer again).
    fn inputs_after(
        &mut self,
        cx: &Ctx,
        _listing: &crate::rootfs::Listing,
        inputs: &mut BTreeMap<String, String>,
    ) -> bool {
        match self.inputs_now(cx) {
            Ok(now) if !now.contains_key(crate::recipe::UNHASHED) => {
                *inputs = now;
                true
            }
            _ => false,
        }
    }

    fn entries(&mut self, cx: &Ctx, base: &BaseView) -> Result<Vec<Entry>> {
        self.prepare(cx, base)?;
        self.resolve_index(cx)?;
        // The lock's wheels download, are checked and are installed (each as soon as it is
        // there) while the sdists build beside them; the wheels built from sdists are installed
        // after. Installing reads only a wheel's metadata: the files are read when the layer is
        // written, in the picks' order, so the layer does not depend on which download ends first.
        let (at, wants): (Vec<usize>, Vec<index::Want>) = self.wants(cx)?.into_iter().unzip();
        let (store, owner) = (&cx.store, self.owner);
        let st = self.state.as_ref().unwrap();
        let target = st.target.clone();
        let labels: Vec<String> = at
            .iter()
            .map(|&i| format!("{} {}", st.picks[i].name, st.picks[i].version))
            .collect();
        // By pick: filled on the download workers; the picks built from sdists stay empty.
        let slots: Vec<Mutex<Option<wheel::Installed>>> =
            st.picks.iter().map(|_| Mutex::new(None)).collect();
        let stop = AtomicBool::new(false);
        let install = |k: usize| -> Result<()> {
            let w = &wants[k];
            let blob = wheel::blob(store, &w.sha256)?;
            let done = wheel::install(&blob, &w.filename, &target, owner)
                .with_context(|| format!("installing {}", labels[k]))?;
            *slots[at[k]].lock().unwrap() = Some(done);
            Ok(())
        };
        let (built, fetched) = std::thread::scope(|s| {
            let fetch = s.spawn(|| index::ensure_each(store, &wants, &stop, &install));
            let built = self.build_sdists(cx, base);
            if built.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            (built, fetch.join().expect("the download worker"))
        });
        built?;
        fetched?;
        let st = self.state.as_ref().unwrap();
        let mut installed = Vec::new();
        for (p, slot) in st.picks.iter().zip(slots) {
            if let Some(done) = slot.into_inner().unwrap() {
                installed.push(done);
                continue;
            }
            let blob = wheel::blob(&cx.store, &p.sha256)?;
            installed.push(
                wheel::install(&blob, &p.filename, &st.target, self.owner)
                    .with_context(|| format!("installing {} {}", p.name, p.version))?,
            );
        }
        let prefer = self.prefer(&st.picks)?;
        let merged = wheel::merge(installed, &prefer)?;
        for line in &merged.left_out {
            eprintln!("warning: layer `{}`: {line}", self.spec.name);
        }
        let entries = merged.entries;
        let Some(spec) = &self.py.bytecode else {
            return Ok(entries);
        };
        let job = bytecode::Job {
            store: &cx.store,
            base_layers: &base.base.layers,
            target: &st.target,
            spec,
            owner: self.owner,
        };
        let (entries, outcome) = bytecode::add(&job, entries)
            .with_context(|| format!("layer `{}`: bytecode", self.spec.name))?;
        if let Some(n) = outcome.note(&self.spec.name, &st.target) {
            eprintln!("{n}");
        }
        Ok(entries)
    }

    fn check(&self, fs: &Rootfs, config: &ImageConfig, me: usize, problems: &mut Vec<Problem>) {
        let Some(st) = &self.state else {
            problems.push(Problem {
                layer: self.spec.name.clone(),
                message: "was not prepared".into(),
            });
            return;
        };
        let dists: Vec<(String, String)> = st
            .picks
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect();
        let e = check::Expect {
            layer: &self.spec.name,
            me,
            target: &st.target,
            dists: &dists,
            require: &self.py.require,
            scripts: &self.py.scripts,
        };
        check::check_layer(fs, config, &e, problems);
        for x in self.spec.expect.iter().flatten() {
            if !fs.exists(x) {
                problems.push(Problem {
                    layer: self.spec.name.clone(),
                    message: format!("expected path {x} is missing from the image"),
                });
            }
        }
    }

    fn supply(&self, cx: &Ctx) -> Result<crate::sbom::Supply> {
        Ok(match &self.state {
            Some(st) => supply::supply(&cx.root, &self.lock, &st.picks),
            None => crate::sbom::Supply::default(),
        })
    }

    fn created_by(&self) -> String {
        match &self.state {
            Some(st) => format!(
                "imgbuild layer {} (python {}: {} wheels for CPython {} into {}{})",
                self.spec.name,
                self.lock_name(),
                st.picks.len(),
                st.target.version,
                st.target.site_dir,
                match &self.py.bytecode {
                    Some(b) => format!(
                        ", {} bytecode at optimisation level {:?}",
                        b.invalidation.as_str(),
                        b.optimize
                    ),
                    None => String::new(),
                }
            ),
            None => format!(
                "imgbuild layer {} (python {})",
                self.spec.name,
                self.lock_name()
            ),
        }
    }
}
