//! From `imgbuild.toml` to a build plan: the project, its build context, and one recipe per layer.

use crate::base::BaseImage;
use crate::cache::StatCache;
use crate::compress::Compression;
use crate::error::Hint;
use crate::files::{self, Collector, Mapping};
use crate::image::{ImageConfig, Platform};
use crate::layer::Entry;
use crate::preset;
use crate::rootfs::Rootfs;
use crate::spec::{ImageSpec, LayerSpec, Spec};
use crate::store::Store;
use crate::usage;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A project: the directory holding `imgbuild.toml`, and the parsed spec.
pub struct Project {
    pub root: PathBuf,
    pub spec_path: PathBuf,
    pub spec: Spec,
}

impl Project {
    /// Loads `config` if given, else the `imgbuild.toml` in `cwd` or its ancestors.
    pub fn load(cwd: &Path, config: Option<&Path>) -> Result<Project> {
        let spec_path = match config {
            Some(c) => cwd.join(c),
            None => crate::spec::find(cwd).ok_or_else(|| {
                usage!(
                    "no imgbuild.toml in {} or its parent directories",
                    cwd.display()
                )
                .context("create one (see `imgbuild --help` and the README), or pass --config FILE")
            })?,
        };
        let spec = Spec::load(&spec_path)?;
        let root = spec_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| cwd.to_path_buf());
        let root = root.canonicalize().unwrap_or(root);
        Ok(Project {
            root,
            spec_path,
            spec,
        })
    }

    /// `.imgbuild/` in the project: default output layout and last-build records.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".imgbuild")
    }

    /// The blob store: `$IMGBUILD_CACHE`, else `.imgbuild/cache` in the project.
    pub fn store(&self) -> Result<Store> {
        let dir = std::env::var_os("IMGBUILD_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.state_dir().join("cache"));
        Store::open(dir)
    }
}

/// Facts shared by every layer of one build.
pub struct Ctx {
    pub root: PathBuf,
    pub store: Store,
    pub stat: StatCache,
    pub source_date: u64,
    pub revision: Option<String>,
    pub compression: Compression,
    pub gzip_level: u32,
    pub platform: Platform,
    pub image: ImageSpec,
    pub image_name: String,
}

/// The base as layers see it: its config and (computed on demand) its merged filesystem.
pub struct BaseView<'a> {
    pub base: &'a BaseImage,
    pub store: &'a Store,
    fs: std::cell::OnceCell<Rootfs>,
}

impl<'a> BaseView<'a> {
    pub fn new(base: &'a BaseImage, store: &'a Store) -> BaseView<'a> {
        BaseView {
            base,
            store,
            fs: std::cell::OnceCell::new(),
        }
    }
    pub fn config(&self) -> &ImageConfig {
        &self.base.config
    }
    pub fn rootfs(&self) -> Result<&Rootfs> {
        if let Some(fs) = self.fs.get() {
            return Ok(fs);
        }
        let mut fs = Rootfs::default();
        for (i, (d, diff)) in self
            .base
            .layers
            .iter()
            .zip(&self.base.config.rootfs.diff_ids)
            .enumerate()
        {
            fs.apply(i, &crate::base::listing(self.store, d, diff)?);
        }
        Ok(self.fs.get_or_init(|| fs))
    }

    /// The contents of a regular file of the base (symlinks followed), read from the one layer
    /// that holds it, without extracting anything to disk. `None` when it is not a file.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read_files(&[path])?.remove(path))
    }

    /// Several files at once: each owning layer is streamed at most once. Keys are the paths
    /// as asked; paths that are missing or not regular files are left out.
    pub fn read_files(&self, paths: &[&str]) -> Result<BTreeMap<String, Vec<u8>>> {
        let fs = self.rootfs()?;
        // layer index → (path in that layer's tar → the paths asked for)
        let mut want: BTreeMap<usize, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for &asked in paths {
            let Some((real, node)) = fs.resolve(asked) else {
                continue;
            };
            if node.kind != crate::rootfs::Kind::File {
                continue;
            }
            let (n, layer) = &fs.files[&real];
            let inner = match n.kind {
                crate::rootfs::Kind::Link => n.target.clone().unwrap_or_default(),
                _ => real,
            };
            want.entry(*layer)
                .or_default()
                .entry(inner)
                .or_default()
                .push(asked.to_string());
        }
        let mut out = BTreeMap::new();
        for (layer, mut names) in want {
            let d = &self.base.layers[layer];
            let c = crate::compress::Compression::from_media_type(&d.media_type)
                .ok_or_else(|| anyhow::anyhow!("layer {} has an unknown media type", d.digest))?;
            let blob = std::io::BufReader::new(self.store.open_blob(&d.digest)?);
            let mut ar = tar::Archive::new(crate::compress::decoder(c, blob)?);
            for e in ar.entries()? {
                let mut e = e?;
                let p = crate::rootfs::clean_tar_path(&e.path_bytes())?;
                if let Some(asked) = names.remove(&p) {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut e, &mut buf)
                        .with_context(|| format!("reading /{p} from base layer {}", d.digest))?;
                    for a in asked {
                        out.insert(a, buf.clone());
                    }
                    if names.is_empty() {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// One problem found by verification, with where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub layer: String,
    pub message: String,
}

/// How a layer is made. The key of a layer is a hash of what `inputs` returns.
pub trait Recipe {
    fn name(&self) -> &str;
    /// Everything that determines the layer's bytes, as `what → fingerprint` pairs.
    fn inputs(&mut self, cx: &Ctx, base: &BaseView) -> Result<BTreeMap<String, String>>;
    /// The layer's entries (not yet normalised).
    fn entries(&mut self, cx: &Ctx, base: &BaseView) -> Result<Vec<Entry>>;
    /// Checks on the final merged filesystem; `me` is this layer's index in it.
    fn check(&self, fs: &Rootfs, config: &ImageConfig, me: usize, problems: &mut Vec<Problem>);
    /// The history line for the image config.
    fn created_by(&self) -> String;
    /// When `inputs` could not fingerprint everything cheaply (it then has the key `UNHASHED`),
    /// completes `inputs` from the written layer's listing; true when it did.
    fn inputs_after(
        &mut self,
        _cx: &Ctx,
        _listing: &crate::rootfs::Listing,
        _inputs: &mut BTreeMap<String, String>,
    ) -> bool {
        false
    }
}

/// Marks inputs that are not fully known until the layer is written: the cache is not consulted.
pub const UNHASHED: &str = "[unhashed]";

/// Up to this many bytes of files the stat cache does not know are hashed before the layer is
/// built (to find a cache hit); beyond it the layer is written at once, hashing in the same pass.
pub const PREHASH_LIMIT: u64 = 32 << 20;

/// Builds the recipe for each layer of an image.
pub fn recipes(cx: &Ctx) -> Result<Vec<Box<dyn Recipe>>> {
    let workdir = cx.image.workdir.clone().unwrap_or_else(|| "/".into());
    cx.image
        .layers
        .iter()
        .map(|l| -> Result<Box<dyn Recipe>> {
            match &l.python {
                Some(_) if l.files.is_some() || l.preset.is_some() => Err(usage!(
                    "layer `{}`: `python` cannot be combined with `files` or `preset` in one layer",
                    l.name
                )),
                Some(_) => crate::python::recipe(cx, l),
                None => Ok(Box::new(FilesRecipe::new(cx, l, &workdir)?)),
            }
        })
        .collect()
}

/// A layer of project files (optionally from a preset).
pub struct FilesRecipe {
    spec: LayerSpec,
    mappings: Vec<Mapping>,
    exclude: Vec<String>,
    ensure_dirs: Vec<String>,
    expect: Vec<String>,
    owner: Option<(u32, u32)>,
    hint: Option<String>,
    collected: Option<Collector>,
}

impl FilesRecipe {
    pub fn new(cx: &Ctx, l: &LayerSpec, workdir: &str) -> Result<FilesRecipe> {
        let p = match &l.preset {
            Some(name) => Some(preset::get(name).with_context(|| format!("layer `{}`", l.name))?),
            None => None,
        };
        let exp = |v: &Vec<String>| {
            v.iter()
                .map(|s| preset::expand(s, workdir))
                .collect::<Vec<_>>()
        };
        let files = l
            .files
            .clone()
            .or_else(|| p.as_ref().and_then(|p| p.files.clone()))
            .unwrap_or_default();
        let exclude = l
            .exclude
            .clone()
            .or_else(|| p.as_ref().and_then(|p| p.exclude.clone()))
            .unwrap_or_default();
        let ensure_dirs = exp(&l
            .ensure_dirs
            .clone()
            .or_else(|| p.as_ref().and_then(|p| p.ensure_dirs.clone()))
            .unwrap_or_default());
        let expect = exp(&l
            .expect
            .clone()
            .or_else(|| p.as_ref().and_then(|p| p.expect.clone()))
            .unwrap_or_default());
        let hint = l
            .hint
            .clone()
            .or_else(|| p.as_ref().and_then(|p| p.hint.clone()));
        let owner = l.owner.as_deref().map(files::parse_owner).transpose()?;
        if files.is_empty() && ensure_dirs.is_empty() {
            return Err(usage!("layer `{}` has nothing to add: give it `files`, `ensure_dirs`, `preset` or `python`", l.name));
        }
        let base = match &l.root {
            Some(r) => cx.root.join(r),
            None => cx.root.clone(),
        };
        let mut mappings = Vec::new();
        for f in &files {
            let to = preset::expand(&f.to, workdir);
            let to = if to.starts_with('/') {
                to
            } else {
                format!("{}/{to}", workdir.trim_end_matches('/'))
            };
            let to = files::image_path(&to).with_context(|| format!("layer `{}`", l.name))?;
            let from = files::resolve_from(&cx.root, &base, &f.from)
                .with_context(|| format!("layer `{}`", l.name))?;
            let from = match from {
                Some(p) => p,
                None if f.optional => continue,
                None => {
                    let mut e = usage!(
                        "layer `{}`: `from = \"{}\"` does not exist ({})",
                        l.name,
                        f.from,
                        base.join(&f.from).display()
                    );
                    if let Some(h) = &hint {
                        e = e.hint(h.clone());
                    }
                    return Err(e);
                }
            };
            mappings.push(Mapping {
                from,
                to,
                mode: f.mode.as_deref().map(files::parse_mode).transpose()?,
                owner: f
                    .owner
                    .as_deref()
                    .map(files::parse_owner)
                    .transpose()?
                    .or(owner),
                optional: f.optional,
                written: f.from.clone(),
            });
        }
        for d in &ensure_dirs {
            files::image_path(d).with_context(|| format!("layer `{}`: ensure_dirs", l.name))?;
        }
        Ok(FilesRecipe {
            spec: l.clone(),
            mappings,
            exclude,
            ensure_dirs,
            expect,
            owner,
            hint,
            collected: None,
        })
    }

    fn collect(&mut self, cx: &Ctx) -> Result<&Collector> {
        if self.collected.is_none() {
            let mut c = Collector::new(files::globs(&self.exclude)?);
            for m in &self.mappings {
                c.add(m, &cx.stat)
                    .with_context(|| format!("layer `{}`: {}", self.spec.name, m.written))?;
            }
            for d in &self.ensure_dirs {
                c.ensure_dir(d, self.owner)?;
            }
            if c.unhashed_bytes() <= PREHASH_LIMIT {
                c.hash_unhashed(&cx.stat)?;
            }
            self.collected = Some(c);
        }
        Ok(self.collected.as_ref().unwrap())
    }
}

impl Recipe for FilesRecipe {
    fn name(&self) -> &str {
        &self.spec.name
    }
    fn inputs(&mut self, cx: &Ctx, _base: &BaseView) -> Result<BTreeMap<String, String>> {
        let c = self.collect(cx)?;
        let mut m = c.summary();
        if !c.unhashed.is_empty() {
            m.insert(UNHASHED.into(), c.unhashed.len().to_string());
        }
        m.insert("[layer]".into(), serde_json::to_string(&self.spec)?);
        Ok(m)
    }
    fn entries(&mut self, cx: &Ctx, _base: &BaseView) -> Result<Vec<Entry>> {
        self.collect(cx)?;
        Ok(std::mem::take(
            &mut self.collected.as_mut().unwrap().entries,
        ))
    }
    fn inputs_after(
        &mut self,
        cx: &Ctx,
        listing: &crate::rootfs::Listing,
        inputs: &mut BTreeMap<String, String>,
    ) -> bool {
        let Some(c) = self.collected.as_mut() else {
            return false;
        };
        for (path, size, sha) in c.hashes_from(&cx.stat, listing) {
            if let Some(v) = inputs.get_mut(&path) {
                *v = v.replacen(&format!("file {size}  "), &format!("file {size} {sha} "), 1);
            }
        }
        inputs.remove(UNHASHED);
        c.unhashed.is_empty()
    }
    fn check(&self, fs: &Rootfs, _config: &ImageConfig, _me: usize, problems: &mut Vec<Problem>) {
        for e in &self.expect {
            if !fs.exists(e) {
                let mut message = format!("expected path {e} is missing from the image");
                if let Some(h) = &self.hint {
                    message.push_str(&format!(" (hint: {h})"));
                }
                problems.push(Problem {
                    layer: self.spec.name.clone(),
                    message,
                });
            }
        }
    }
    fn created_by(&self) -> String {
        let what: Vec<String> = self
            .mappings
            .iter()
            .map(|m| format!("{} → /{}", m.written, m.to))
            .collect();
        format!("imgbuild layer {} ({})", self.spec.name, what.join(", "))
    }
}

/// SOURCE_DATE_EPOCH, else the git HEAD commit time of `root`, else 0.
pub fn source_date(root: &Path) -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .map_err(|_| usage!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"));
    }
    Ok(git(root, &["log", "-1", "--format=%ct"])
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// The git HEAD commit of `root`, when it is a git checkout.
pub fn revision(root: &Path) -> Option<String> {
    git(root, &["rev-parse", "HEAD"])
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}
