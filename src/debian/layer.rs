//! The recipe of a `debian = { packages = [...] }` layer: the packages resolved against the
//! base's release (its `/etc/os-release`) and dpkg status (what it has is left out), pinned in
//! `imgbuild.lock` under `[debian."IMAGE/LAYER"]`, fetched into the store (sha256-checked),
//! unpacked deterministically with the dpkg database updated.
//!
//! The pins are used as they are while the request, the release, the architecture and the
//! base's status are unchanged; otherwise (or after `imgbuild lock --update` dropped them)
//! the request is resolved again against the signed index and the pins rewritten.

use super::archive::{self, Archive, Wanted};
use super::{deb, index, mirror, resolve, unpack};
use crate::image::ImageConfig;
use crate::layer::Entry;
use crate::recipe::{BaseView, Ctx, Problem, Recipe};
use crate::registry::lock::{DebianPin, DebianPins, LockFile};
use crate::rootfs::Rootfs;
use crate::spec::{DebianSpec, LayerSpec};
use crate::usage;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Bump when the bytes written for the same packages change; part of the layer's key.
const FORMAT: u32 = 1;

pub struct DebianLayer {
    name: String,
    key: String,
    spec: DebianSpec,
    layer_json: String,
    keyring: PathBuf,
    /// The pins and the base's status text, once resolved.
    resolved: Option<(DebianPins, String)>,
    /// The packages being written (their data stays on disk until the layer is written).
    debs: Vec<deb::Deb>,
}

/// A Debian package name (Policy §5.6.1): lower-case letters, digits, `+`, `-`, `.`.
pub fn check_name(n: &str) -> Result<(), String> {
    let ok = n.len() >= 2
        && n.as_bytes()[0].is_ascii_alphanumeric()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{n}` is not a Debian package name (lower-case letters, digits, `+`, `-`, `.`)"
        ))
    }
}

/// The keyring a `keyring = "FILE"` names (relative to the project), else the host's.
pub fn keyring_path(root: &std::path::Path, written: Option<&str>) -> PathBuf {
    match written {
        Some(k) => root.join(k),
        None => archive::default_keyring().to_path_buf(),
    }
}

impl DebianLayer {
    pub fn new(cx: &Ctx, l: &LayerSpec, d: &DebianSpec) -> Result<DebianLayer> {
        if d.packages.is_empty() {
            return Err(usage!(
                "layer `{}`: `debian.packages` is empty: name the packages to install",
                l.name
            ));
        }
        for p in &d.packages {
            check_name(p).map_err(|e| usage!("layer `{}`: debian.packages: {e}", l.name))?;
        }
        Ok(DebianLayer {
            name: l.name.clone(),
            key: cx.lock_key(&l.name),
            spec: d.clone(),
            layer_json: serde_json::to_string(l)?,
            keyring: keyring_path(&cx.root, d.keyring.as_deref()),
            resolved: None,
            debs: Vec::new(),
        })
    }

    fn resolve(&mut self, cx: &Ctx, base: &BaseView) -> Result<&(DebianPins, String)> {
        if self.resolved.is_none() {
            let not_debian = |why: String| {
                usage!("the base `{}` is not a Debian image: {why}", base.base.name).hint_debian()
            };
            let files = base.read_files(&["etc/os-release", super::status::STATUS])?;
            let os = files
                .get("etc/os-release")
                .ok_or_else(|| not_debian("it has no /etc/os-release".into()))?;
            let release = super::release_of(&String::from_utf8_lossy(os)).map_err(not_debian)?;
            let status = files
                .get(super::status::STATUS)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or_else(|| not_debian(format!("it has no /{}", super::status::STATUS)))?;
            let arch = super::architecture(&cx.platform)?;
            let want = Want {
                key: &self.key,
                release: &release,
                arch: &arch,
                request: &self.spec.packages,
                base_status: &status,
                keyring: &self.keyring,
                what: String::new(),
            };
            let pins = pinned(cx, &want)?;
            self.resolved = Some((pins, status));
        }
        Ok(self.resolved.as_ref().unwrap())
    }
}

trait HintDebian {
    fn hint_debian(self) -> anyhow::Error;
}
impl HintDebian for anyhow::Error {
    fn hint_debian(self) -> anyhow::Error {
        crate::error::Hint::hint(
            self,
            "a `debian` layer needs a Debian base (one with /etc/os-release and dpkg's /var/lib/dpkg/status), e.g. `base = { debian = \"bookworm\" }`",
        )
    }
}

/// What to pin: a request of packages for one release and architecture, on a base with that
/// dpkg status (empty for none).
pub struct Want<'a> {
    pub key: &'a str,
    pub release: &'a str,
    pub arch: &'a str,
    pub request: &'a [String],
    pub base_status: &'a str,
    pub keyring: &'a std::path::Path,
    /// What errors start with (`image \`api\`: base \`debian:bookworm\`: `; empty for a
    /// layer, whose errors the build prefixes with its name).
    pub what: String,
}

/// The pins of `w`: imgbuild.lock's when they were made for the same request, release,
/// architecture and base; else resolved now against the signed index (with `extra`, the
/// names a base from the archive adds) and written to imgbuild.lock.
pub fn pinned(cx: &Ctx, w: &Want) -> Result<DebianPins> {
    pinned_with(cx, w, |_| Vec::new())
}

/// `pinned`, where `extra` adds names to resolve given the index (the essential packages of
/// a base from the archive).
pub fn pinned_with(
    cx: &Ctx,
    w: &Want,
    extra: impl Fn(&index::Index) -> Vec<String>,
) -> Result<DebianPins> {
    let base_hash = if w.base_status.is_empty() {
        String::new()
    } else {
        crate::digest::sha256_hex(w.base_status.as_bytes())
    };
    let lock = LockFile::load(&cx.root)?;
    if let Some(p) = lock.debian.get(w.key) {
        if p.release == w.release
            && p.architecture == w.arch
            && p.request == w.request
            && p.base == base_hash
        {
            return Ok(p.clone());
        }
    }
    let archive = Archive {
        mirror: mirror::choose(cx.debian_mirror.as_deref(), w.release)?,
        release: w.release.to_string(),
        arch: w.arch.to_string(),
        keyring: w.keyring.to_path_buf(),
    };
    let ix = archive
        .index(&cx.store)
        .with_context(|| format!("{}reading the {} archive", w.what, w.release))?;
    let installed = index::installed(w.base_status)
        .map_err(|e| anyhow::anyhow!("{}the base's dpkg status: {e}", w.what))?;
    let mut names = extra(&ix);
    names.extend(w.request.iter().cloned());
    let chosen = resolve::resolve(&ix, &installed, &names).map_err(|e| {
        let mut err = crate::error::UsageError::new(format!(
            "{}{e} in Debian {} ({}, main)",
            w.what, w.release, w.arch
        ));
        if matches!(e, resolve::Unresolved::Unknown { .. }) {
            err = err.hint("package names are those of `apt-cache search` on the release; a library is usually named with its soname (libpq5, not libpq)");
        }
        anyhow::Error::new(err)
    })?;
    let pins = DebianPins {
        release: w.release.to_string(),
        architecture: w.arch.to_string(),
        request: w.request.to_vec(),
        base: base_hash,
        packages: chosen
            .iter()
            .map(|p| DebianPin {
                name: p.name.clone(),
                version: p.version.clone(),
                architecture: p.architecture.clone(),
                filename: p.filename.clone(),
                sha256: p.sha256.clone(),
                size: p.size,
            })
            .collect(),
    };
    LockFile::update(&cx.root, |l| {
        l.debian.insert(w.key.to_string(), pins.clone());
    })?;
    Ok(pins)
}

/// The pinned packages read from the store (fetched from the mirror first when missing),
/// each checked to be the package its pin names.
pub fn fetch_all(cx: &Ctx, pins: &DebianPins, keyring: &std::path::Path) -> Result<Vec<deb::Deb>> {
    let tmp = cx.store.root().join("tmp");
    let store = &cx.store;
    let mut digests = Vec::new();
    for p in &pins.packages {
        digests.push(
            crate::digest::Digest::parse(&format!("sha256:{}", p.sha256))
                .map_err(|e| usage!("imgbuild.lock: package {} {}: {e}", p.name, p.version))?,
        );
    }
    // The mirror is only needed (and only looked for) when a package is not in the store.
    let archive = if digests
        .iter()
        .all(|d| archive::in_store(store, d).is_some())
    {
        None
    } else {
        Some(Archive {
            mirror: mirror::choose(cx.debian_mirror.as_deref(), &pins.release)?,
            release: pins.release.clone(),
            arch: pins.architecture.clone(),
            keyring: keyring.to_path_buf(),
        })
    };
    let one = |i: usize| -> Result<deb::Deb> {
        let p = &pins.packages[i];
        let path = match archive::in_store(store, &digests[i]) {
            Some(path) => path,
            None => archive
                .as_ref()
                .expect("a mirror for missing packages")
                .fetch(
                    store,
                    &Wanted {
                        name: &p.name,
                        version: &p.version,
                        filename: &p.filename,
                        sha256: &p.sha256,
                    },
                )?,
        };
        let label = format!("{} {}", p.name, p.version);
        let d = deb::read(&path, &label, &tmp)?;
        if d.control.get("Package") != Some(p.name.as_str())
            || d.control.get("Version") != Some(p.version.as_str())
        {
            return Err(usage!(
                "{}: the file pinned for {label} is package {} {}",
                p.filename,
                d.control.get("Package").unwrap_or("?"),
                d.control.get("Version").unwrap_or("?")
            ));
        }
        Ok(d)
    };
    // Downloads and decompression run side by side (the order of the result is the pins').
    let n = pins.packages.len();
    let workers = FETCH_WORKERS.min(n).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<std::sync::Mutex<Option<Result<deb::Deb>>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                use std::sync::atomic::Ordering::SeqCst;
                let k = next.fetch_add(1, SeqCst);
                if k >= n || failed.load(SeqCst) {
                    break;
                }
                let r = one(k);
                if r.is_err() {
                    failed.store(true, SeqCst);
                }
                *results[k].lock().unwrap() = Some(r);
            });
        }
    });
    let results: Vec<Option<Result<deb::Deb>>> = results
        .into_iter()
        .map(|m| m.into_inner().unwrap())
        .collect();
    let mut out = Vec::with_capacity(n);
    let mut first_err = None;
    for r in results {
        match r {
            Some(Ok(d)) => out.push(d),
            Some(Err(e)) if first_err.is_none() => first_err = Some(e),
            _ => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Packages downloaded and decompressed at once.
const FETCH_WORKERS: usize = 4;

impl Recipe for DebianLayer {
    fn name(&self) -> &str {
        &self.name
    }
    fn inputs(&mut self, cx: &Ctx, base: &BaseView) -> Result<BTreeMap<String, String>> {
        let layer_json = self.layer_json.clone();
        let (pins, status) = self.resolve(cx, base)?;
        let mut m = BTreeMap::new();
        m.insert("[layer]".into(), layer_json);
        m.insert("[debian-format]".into(), FORMAT.to_string());
        m.insert(
            "[base-status]".into(),
            crate::digest::sha256_hex(status.as_bytes()),
        );
        for p in &pins.packages {
            m.insert(
                format!("deb {}", p.name),
                format!("{} {} {}", p.version, p.architecture, p.sha256),
            );
        }
        Ok(m)
    }
    fn entries(&mut self, cx: &Ctx, base: &BaseView) -> Result<Vec<Entry>> {
        let (pins, status) = self.resolve(cx, base)?.clone();
        let mut debs = fetch_all(cx, &pins, &self.keyring)?;
        let entries = unpack::entries(&mut debs, base.rootfs()?, &status)?;
        let scripts = unpack::with_scripts(&debs);
        if !scripts.is_empty() {
            cx.notes.lock().unwrap().push(format!(
                "layer `{}`: maintainer scripts were not run for {} (imgbuild writes the packages' files and dpkg's status only: check that they work without their preinst/postinst)",
                self.name,
                scripts.join(", ")
            ));
        }
        self.debs = debs;
        Ok(entries)
    }
    fn check(&self, _fs: &Rootfs, _config: &ImageConfig, _me: usize, _problems: &mut Vec<Problem>) {
    }
    /// Each package the layer added, by the sha256 of its `.deb` (from the signed index,
    /// pinned in imgbuild.lock).
    fn supply(&self, _cx: &Ctx) -> Result<crate::sbom::Supply> {
        let mut s = crate::sbom::Supply::default();
        for p in self.resolved.iter().flat_map(|(pins, _)| &pins.packages) {
            let file = p.filename.rsplit('/').next().unwrap_or(&p.filename);
            s.packages.push(crate::sbom::Package {
                ecosystem: crate::sbom::Ecosystem::Debian,
                name: p.name.clone(),
                version: p.version.clone(),
                arch: Some(p.architecture.clone()),
                sha256: Some(p.sha256.clone()),
                digests: BTreeMap::new(),
                source: Some(format!("{file} from the Debian archive")),
                license: None,
                depends_on: vec![],
            });
            let mut digest = BTreeMap::new();
            digest.insert("sha256".to_string(), p.sha256.clone());
            s.inputs.push(crate::sbom::Input {
                uri: crate::sbom::deb_purl(&p.name, &p.version, &p.architecture, None),
                digest,
            });
        }
        Ok(s)
    }
    fn created_by(&self) -> String {
        let n = self
            .resolved
            .as_ref()
            .map(|(p, _)| p.packages.len())
            .unwrap_or(0);
        format!(
            "imgbuild debian: {} ({n} packages with dependencies)",
            self.spec.packages.join(" ")
        )
    }
}

/// The layer of `packages` on top of `base` that the sdist builds of python layer `layer`
/// run on (`build = { debian = [...] }`): resolved, pinned under
/// `[debian."IMAGE/LAYER [build]"]` and written (uncompressed, cached by its inputs) like a
/// `debian` layer, but only ever unpacked into the temporary build root — never part of the
/// image.
pub fn build_root_layer(
    cx: &Ctx,
    base: &BaseView,
    layer: &str,
    packages: &[String],
) -> Result<crate::image::Descriptor> {
    let name = format!("{layer} [build]");
    let spec = DebianSpec {
        packages: packages.to_vec(),
        keyring: None,
    };
    let l = LayerSpec {
        name: name.clone(),
        debian: Some(spec.clone()),
        ..Default::default()
    };
    let mut r = DebianLayer::new(cx, &l, &spec)
        .with_context(|| format!("layer `{layer}`: build.debian"))?;
    let none = crate::compress::Compression::None;
    let inputs = r
        .inputs(cx, base)
        .with_context(|| format!("layer `{layer}`: build.debian"))?;
    let key = crate::key::layer(none, 1, 0, Some(&cx.platform), &inputs);
    let blob = crate::cache::layer_or(&cx.store, &key, || {
        let entries = crate::layer::normalise(r.entries(cx, base)?)?;
        crate::layer::write(&entries, 0, none, 1, &cx.store, &|_| {})
            .with_context(|| format!("layer `{layer}`: build.debian"))
    })?;
    Ok(crate::image::Descriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest,
        size: blob.size,
        platform: None,
        annotations: BTreeMap::new(),
        artifact_type: None,
    })
}
