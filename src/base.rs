//! Base images: `scratch`, an OCI layout on disk, or a registry reference; and
//! `imgbuild base import`, which makes a base from a root filesystem.

use crate::cache::StatCache;
use crate::compress::{self, Compression};
use crate::digest::Digest;
use crate::error::Hint;
use crate::files::{Collector, Mapping};
use crate::image::{self, BaseImage, Built, Descriptor, ImageConfig, Platform, RootFs, RunConfig};
use crate::layer::member::Member;
use crate::layer::{self, Entry};
use crate::layout::Layout;
use crate::project::Project;
use crate::registry;
use crate::store::Store;
use crate::target::Output;
use crate::usage;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Loads a base from an OCI layout (`oci:DIR[:TAG]`, DIR relative to `root`) into the store.
pub fn from_layout(
    written: &str,
    rest: &str,
    root: &Path,
    platform: &Platform,
    store: &Store,
) -> Result<BaseImage> {
    let (dir, tag) = crate::target::split_ref(rest);
    let dir = root.join(dir);
    let l = Layout::open(&dir).map_err(|e| {
        usage!("base `{written}`: {e}").hint(format!(
            "create it with `imgbuild base import ROOTFS --output oci:{}`",
            rest
        ))
    })?;
    let (desc, manifest) = l
        .resolve(tag.as_deref(), platform)
        .with_context(|| format!("base `{written}`"))?;
    let config_bytes = l.read_blob(&manifest.config.digest, Some(manifest.config.size))?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
        usage!(
            "base `{written}`: config {} is not a valid image config: {e}",
            manifest.config.digest
        )
    })?;
    crate::image::check_base(written, &config, &manifest.layers, platform)?;
    store.put(&config_bytes)?;
    let mut layers = Vec::new();
    for d in &manifest.layers {
        if !store.has(&d.digest) {
            let f = File::open(l.blob_path(&d.digest))
                .with_context(|| format!("base `{written}`: layer {} is missing", d.digest))?;
            store
                .put_reader(f, &d.digest, Some(d.size))
                .with_context(|| format!("base `{written}`: layer {}", d.digest))?;
        }
        layers.push(crate::image::normalise_layer(d)?);
    }
    Ok(BaseImage {
        name: written.to_string(),
        digest: Some(desc.digest),
        config,
        layers,
    })
}

/// `imgbuild base import`: one deterministic layer from a rootfs directory or tar.
pub struct Import {
    pub source: PathBuf,
    pub env: Vec<(String, String)>,
    pub platform: Platform,
    pub mtime: u64,
    pub compression: Compression,
}

/// Returns the digest written under the tag (the image's, or the index it joined) and a note.
pub fn import(imp: &Import, out: Output, store: &Store) -> Result<(Digest, String)> {
    let md = fs::metadata(&imp.source)
        .map_err(|e| usage!("cannot read {}: {e}", imp.source.display()))?;
    let mut skipped = Vec::new();
    let mut _unpacked = None;
    let entries = if md.is_dir() {
        let stat = StatCache::load(store, &imp.source);
        let mut c = Collector::new(crate::files::globs(&[])?);
        c.keep_owner = true;
        c.skip_special = true;
        let m = Mapping {
            from: imp.source.clone(),
            to: String::new(),
            mode: None,
            owner: None,
            optional: false,
            written: imp.source.display().to_string(),
        };
        c.add(&m, &stat)?;
        stat.save()?;
        skipped = c.skipped;
        c.entries
    } else {
        let (entries, tmp) = tar_entries(&imp.source, store, &mut skipped)?;
        _unpacked = tmp;
        entries
    };
    let entries = layer::normalise(entries)?;
    let (blob, _) = layer::write(
        &entries,
        imp.mtime,
        imp.compression,
        compress::DEFAULT_GZIP_LEVEL,
        store,
        &|_| {},
    )?;
    let mut run = RunConfig::default();
    for (k, v) in &imp.env {
        run.set_env(k, v);
    }
    if run.env_var("PATH").is_none() {
        run.set_env("PATH", image::DEFAULT_PATH);
    }
    let config = ImageConfig {
        created: Some(image::rfc3339(imp.mtime)),
        architecture: imp.platform.architecture.clone(),
        os: imp.platform.os.clone(),
        variant: imp.platform.variant.clone(),
        config: run,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![blob.diff_id.clone()],
        },
        history: vec![image::History {
            created: Some(image::rfc3339(imp.mtime)),
            created_by: Some(format!(
                "imgbuild base import {}",
                imp.source
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )),
            ..Default::default()
        }],
        extra: Default::default(),
    };
    let layers = vec![Descriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest,
        size: blob.size,
        platform: None,
        artifact_type: None,
        annotations: BTreeMap::new(),
    }];
    let built = image::assemble("base", None, &config, layers, BTreeMap::new(), store)?;
    let note = if skipped.is_empty() {
        String::new()
    } else {
        format!("skipped {} device nodes, FIFOs or sockets", skipped.len())
    };
    if let Output::Layout { dir, tag } = &out {
        if let Some(d) = add_platform(dir, tag, &built, &imp.platform, store)? {
            return Ok((d, note));
        }
    }
    crate::publish::destination(out).write(&built, store)?;
    Ok((built.digest, note))
}

/// `base import --platform P --output oci:DIR:TAG` where TAG already names an image for
/// other platforms (an index, or one manifest): `built` joins them in an index under TAG,
/// replacing the entry for `platform`, entries ordered by platform so the import order does
/// not change the digest. Returns the index's digest; `None` when TAG is new or names an image for `platform` alone.
fn add_platform(
    dir: &Path,
    tag: &str,
    built: &Built,
    platform: &Platform,
    store: &Store,
) -> Result<Option<Digest>> {
    let Ok(l) = Layout::open(dir) else {
        return Ok(None);
    };
    let Some(old) = l
        .index()?
        .manifests
        .into_iter()
        .find(|m| m.annotations.get(image::ANN_REF_NAME).map(String::as_str) == Some(tag))
    else {
        return Ok(None);
    };
    let mut others: Vec<Descriptor> = Vec::new();
    if old.media_type == image::MT_INDEX {
        let idx: image::Index = l.read_json(&old)?;
        others.extend(
            idx.manifests
                .into_iter()
                .filter(|m| m.platform.as_ref().is_some_and(|p| !p.matches(platform))),
        );
    } else {
        let m: image::Manifest = l.read_json(&old)?;
        let c: ImageConfig = l.read_json(&m.config)?;
        let p = Platform {
            architecture: c.architecture,
            os: c.os,
            variant: c.variant,
        };
        if !p.matches(platform) {
            others.push(Descriptor {
                platform: Some(p),
                annotations: BTreeMap::new(),
                ..old
            });
        }
    }
    if others.is_empty() {
        return Ok(None);
    }
    let l = Layout::create(dir)?;
    for d in built.blobs() {
        l.put_from_store(store, &d.digest, d.size)?;
    }
    l.put_from_store(store, &built.digest, built.manifest_bytes.len() as u64)?;
    let mut manifests = others;
    manifests.push(Descriptor {
        platform: Some(platform.clone()),
        ..built.descriptor()
    });
    manifests.sort_by_key(|d| d.platform.as_ref().map(|p| p.to_string()));
    let index = image::Index {
        schema_version: 2,
        media_type: Some(image::MT_INDEX.into()),
        manifests,
        annotations: BTreeMap::new(),
    };
    let bytes = image::to_bytes(&index);
    let digest = store.put(&bytes)?;
    l.put_from_store(store, &digest, bytes.len() as u64)?;
    l.tag(
        tag,
        &Descriptor {
            media_type: image::MT_INDEX.into(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
    )?;
    Ok(Some(digest))
}

/// Lists a rootfs tar's entries for re-writing. Compressed tars are unpacked to a temp file first.
fn tar_entries(
    src: &Path,
    store: &Store,
    skipped: &mut Vec<String>,
) -> Result<(Vec<Entry>, Option<tempfile::TempPath>)> {
    let mut magic = [0u8; 4];
    let n = File::open(src)?.read(&mut magic)?;
    let comp = match &magic[..n.min(4)] {
        [0x1f, 0x8b, ..] => Some(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd] => Some(Compression::Zstd),
        _ => None,
    };
    let (path, tmp) = match comp {
        None => (src.to_path_buf(), None),
        Some(c) => {
            let mut t = tempfile::NamedTempFile::new_in(store.root().join("tmp"))?;
            io::copy(
                &mut compress::decoder(c, File::open(src)?)?,
                t.as_file_mut(),
            )?;
            let p = t.into_temp_path();
            (p.to_path_buf(), Some(p))
        }
    };
    let file = Arc::new(path.clone());
    let mut ar = tar::Archive::new(BufReader::new(File::open(&path)?));
    let mut out = Vec::new();
    for e in ar
        .entries()
        .with_context(|| format!("reading {}", src.display()))?
    {
        let e = e.with_context(|| format!("reading {}", src.display()))?;
        match crate::layer::member::member(&e, &file)
            .map_err(|m| usage!("{}: {m}", src.display()))?
        {
            Member::Entry(entry) => out.push(entry),
            Member::Skip => {}
            Member::Unsupported(p) => skipped.push(p),
        }
    }
    Ok((out, tmp))
}

/// The registry reference a base names: itself, or its catalog entry's; `None` for
/// `scratch`, `oci:` and `image:` bases.
pub fn registry_reference(written: &str) -> Result<Option<String>> {
    if written == "scratch" || written.starts_with("oci:") || written.starts_with("image:") {
        return Ok(None);
    }
    if !written.contains('/') && !written.contains(':') && !written.contains('@') {
        return match crate::catalog::get(written) {
            Some(entry) => Ok(Some(entry?.reference)),
            None => Err(crate::catalog::unknown(written)),
        };
    }
    Ok(Some(written.to_string()))
}

/// Resolves a base written in imgbuild.toml with default registry settings.
pub fn resolve(
    written: &str,
    root: &Path,
    platform: &Platform,
    store: &Store,
) -> Result<BaseImage> {
    resolve_with(
        written,
        root,
        platform,
        store,
        &registry::Options::default(),
    )
}

/// Resolves a base: `scratch`, `oci:DIR[:TAG]`, or a registry reference (pulled by digest and
/// pinned in `imgbuild.lock`, see `registry::pull_base`).
pub fn resolve_with(
    written: &str,
    root: &Path,
    platform: &Platform,
    store: &Store,
    reg: &registry::Options,
) -> Result<BaseImage> {
    if written == "scratch" {
        return Ok(BaseImage::scratch(platform));
    }
    if let Some(rest) = written.strip_prefix("oci:") {
        return from_layout(written, rest, root, platform, store);
    }
    match registry_reference(written)? {
        Some(reference) => registry::pull_base(&reference, root, platform, store, reg),
        None => Err(usage!(
            "base `{written}`: expected `scratch`, `oci:DIR[:TAG]`, `image:NAME`, a catalog name or a registry reference"
        )),
    }
}

/// `imgbuild lock`: resolves the registry bases of `names` (every image when empty) once per
/// (base, platform) and pins them in `imgbuild.lock` (`opts.update_lock` re-resolves tags).
/// With `update` and every image, entries no image uses any more are dropped; with `update`,
/// the sdists' pinned build requirements are dropped too (the next build re-resolves them). `resolved` is
/// told each base as it is resolved.
pub fn lock(
    project: &Project,
    names: &[String],
    opts: &registry::Options,
    mut resolved: impl FnMut(&str, &Platform, &BaseImage),
) -> Result<()> {
    let all = names.is_empty();
    let names = project.images(names)?;
    let store = project.store()?;
    let mut done = std::collections::HashSet::new();
    for name in &names {
        let img = project.image(name)?;
        for platform in project.platforms(img)? {
            let written = project.base_for(img, &platform)?;
            let Some(b) = written.as_ref().and_then(|b| b.name()).map(String::from) else {
                continue;
            };
            if registry_reference(&b)?.is_none() {
                continue;
            }
            if !done.insert((b.clone(), platform.to_string())) {
                continue;
            }
            let base = resolve_with(&b, &project.root, &platform, &store, opts)
                .with_context(|| format!("image `{name}` ({platform})"))?;
            resolved(&b, &platform, &base);
        }
    }
    if opts.update_lock {
        // Local files' pins go: the next build hashes and pins them again.
        let mut l = registry::lock::LockFile::load(&project.root)?;
        if !l.files.is_empty() {
            l.files.clear();
            l.save(&project.root)?;
        }
    }
    if opts.update_lock && all {
        // Entries no image uses any more go.
        let used: std::collections::HashSet<String> = project
            .spec
            .images
            .values()
            .flat_map(|i| match &i.base {
                Some(crate::spec::BaseSpec::PerPlatform(m)) => m.values().cloned().collect(),
                Some(b) => b.name().map(String::from).into_iter().collect(),
                None => vec![],
            })
            .filter_map(|b| registry_reference(&b).ok().flatten())
            .collect();
        let mut l = registry::lock::LockFile::load(&project.root)?;
        let before = l.base.len();
        l.base.retain(|k, _| used.contains(k));
        if l.base.len() != before {
            l.save(&project.root)?;
        }
    }
    if opts.update_lock {
        // sdists' build requirements: the next build resolves them again and pins the result.
        registry::lock::LockFile::update(&project.root, |l| l.python_build.clear())?;
        // Debian packages: the next build resolves them again against the signed index.
        registry::lock::LockFile::update(&project.root, |l| l.debian.clear())?;
    }
    Ok(())
}
