//! The vocabulary every layer recipe shares: the build context (`Ctx`, resolved once per
//! image), the base as layers see it (`BaseView`), the `Recipe` trait, and verification
//! `Problem`s with the one way they are reported.

use crate::cache::StatCache;
use crate::compress::Compression;
use crate::image::{BaseImage, ImageConfig, Platform};
use crate::layer::Entry;
use crate::rootfs::{Listing, Rootfs};
use crate::spec::ImageSpec;
use crate::store::Store;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Hashes of local files a lock names without one (uv records none for a find-links
/// registry): pinned in imgbuild.lock at first use. `locked` is what imgbuild.lock says,
/// `new` what this build saw first (saved after it); keys are paths relative to the project.
#[derive(Debug, Default)]
pub struct FilePins {
    pub locked: BTreeMap<String, String>,
    pub new: std::sync::Mutex<BTreeMap<String, String>>,
}

impl FilePins {
    /// Checks the sha256 (hex) of the file `key` against its pin, or pins it.
    /// `Err` carries the pinned sha256 when the file changed.
    pub fn check(&self, key: &str, sha256: &str) -> Result<(), String> {
        let want = format!("sha256:{sha256}");
        match self.locked.get(key) {
            Some(pin) if *pin == want => Ok(()),
            Some(pin) => Err(pin.trim_start_matches("sha256:").to_string()),
            None => {
                self.new.lock().unwrap().insert(key.to_string(), want);
                Ok(())
            }
        }
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
    /// Local files' hashes pinned in imgbuild.lock (filled in by the build).
    pub pins: FilePins,
    /// What recipes tell the user (not errors): printed by the build after the layers.
    pub notes: std::sync::Mutex<Vec<String>>,
    /// `debian_mirror` of imgbuild.toml's [defaults].
    pub debian_mirror: Option<String>,
    /// Whether imgbuild.toml builds this image for several platforms: then what a layer pins
    /// in imgbuild.lock is kept per platform (`lock_key`).
    pub multi_platform: bool,
    /// The shared cache behind the store (`cache = "REPO"`), set by the build.
    pub remote: Option<std::sync::Arc<dyn crate::cache::Remote>>,
}

impl Ctx {
    /// The key of what layer `what` of this image pins in imgbuild.lock: `IMAGE/LAYER`, with
    /// ` PLATFORM` after it when the image is built for several platforms (each resolves its
    /// own packages).
    pub fn lock_key(&self, what: &str) -> String {
        if self.multi_platform {
            format!("{}/{what} {}", self.image_name, self.platform)
        } else {
            format!("{}/{what}", self.image_name)
        }
    }
}

/// The base as layers see it: its config and (computed on demand) its merged filesystem.
pub struct BaseView<'a> {
    pub base: &'a BaseImage,
    pub store: &'a Store,
    fs: std::cell::OnceCell<Rootfs>,
    /// The other images recipes run their builds in ([`Recipe::build_bases`]), resolved by the
    /// build, by the name they are written with.
    pub build_bases: BTreeMap<String, BaseImage>,
}

impl<'a> BaseView<'a> {
    pub fn new(base: &'a BaseImage, store: &'a Store) -> BaseView<'a> {
        BaseView {
            base,
            store,
            fs: std::cell::OnceCell::new(),
            build_bases: BTreeMap::new(),
        }
    }
    pub fn with_build_bases(mut self, bases: BTreeMap<String, BaseImage>) -> BaseView<'a> {
        self.build_bases = bases;
        self
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
            fs.apply(i, &crate::cache::listing(self.store, d, diff)?);
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
        crate::layer::read::files(
            fs,
            &self.base.layers,
            &|d| Ok(Box::new(self.store.open_blob(&d.digest)?)),
            paths,
        )
    }
}

/// One problem found by verification, with where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub layer: String,
    pub message: String,
}

/// How a layer is made. The key of a layer is a hash of what `inputs` returns.
pub trait Recipe: Send {
    fn name(&self) -> &str;
    /// Images (written like `base`) this recipe's builds run in; the build resolves them into
    /// [`BaseView::build_bases`] before `inputs`.
    fn build_bases(&self) -> Vec<String> {
        Vec::new()
    }
    /// Everything that determines the layer's bytes, as `what → fingerprint` pairs.
    fn inputs(&mut self, cx: &Ctx, base: &BaseView) -> Result<BTreeMap<String, String>>;
    /// Whether the layer's bytes depend on the platform beyond what its inputs say (`false`:
    /// one layer, one key, for every platform of an image index — e.g. the app's files).
    fn platform_bound(&self) -> bool {
        true
    }
    /// The layer's entries (not yet normalised).
    fn entries(&mut self, cx: &Ctx, base: &BaseView) -> Result<Vec<Entry>>;
    /// Checks on the final merged filesystem; `me` is this layer's index in it.
    fn check(&self, fs: &Rootfs, config: &ImageConfig, me: usize, problems: &mut Vec<Problem>);
    /// The history line for the image config.
    fn created_by(&self) -> String;
    /// What the layer installs and what it resolved, for the SBOM and the provenance
    /// (`inputs` has run): packages with their hashes and origins, lock files, sources.
    /// Called only when the image gets an SBOM or a provenance; an error (a lock the SBOM
    /// reads that cannot be read) fails the build before the image is written.
    fn supply(&self, _cx: &Ctx) -> Result<crate::sbom::Supply> {
        Ok(crate::sbom::Supply::default())
    }
    /// Inputs too many to hold as strings, left out of `inputs`' map and streamed into the key
    /// beside it: before the layer is written (`written` is `None`), or from the written
    /// layer's normalised entries and listing. A files layer's one row per path.
    fn rows<'a>(
        &'a self,
        _written: Option<(&'a [Entry], &'a Listing)>,
    ) -> Option<Box<dyn crate::key::Rows + 'a>> {
        None
    }
    /// Called once the layer is written and recorded and its entries are gone: what the recipe
    /// learns from the listing (a files layer: the hashes of files the stat cache did not know).
    fn written(&mut self, _cx: &Ctx, _listing: &Listing) {}
    /// When `inputs` could not fingerprint everything cheaply (it then has the key `UNHASHED`),
    /// completes `inputs` from the written layer's listing; true when it did.
    fn inputs_after(
        &mut self,
        _cx: &Ctx,
        _listing: &Listing,
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

/// The one report of failed verification: `{what} failed verification (N problems):` and a
/// line per problem, `  - {prefix}{layer}{suffix}: message`.
pub fn report(
    what: &str,
    problems: &[Problem],
    layer_label: impl Fn(&str) -> String,
) -> anyhow::Error {
    let mut msg = format!(
        "{what} failed verification ({} problem{}):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        msg.push_str(&format!("\n  - {}: {}", layer_label(&p.layer), p.message));
    }
    anyhow::anyhow!(msg)
}
