//! Base images: `scratch`, an OCI layout on disk, or a registry reference; and
//! `imgbuild base import`, which makes a base from a root filesystem.

use crate::cache::{self, StatCache};
use crate::compress::{self, Compression};
use crate::digest::{Digest, HashReader};
use crate::error::Hint;
use crate::files::{Collector, Mapping};
use crate::image::{self, Descriptor, ImageConfig, Platform, RootFs, RunConfig};
use crate::layer::{self, Body, Entry, Source};
use crate::layout::{self, Layout};
use crate::publish::{Built, Output};
use crate::registry;
use crate::rootfs::{clean_tar_path, Listing, ReadLimits};
use crate::store::Store;
use crate::usage;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A resolved base: its config and layers, every blob already in the store.
#[derive(Clone, Debug)]
pub struct BaseImage {
    /// The base as written in the config (for annotations and messages).
    pub name: String,
    /// Manifest digest; `None` for scratch.
    pub digest: Option<Digest>,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
}

impl BaseImage {
    pub fn scratch(platform: &Platform) -> BaseImage {
        BaseImage {
            name: "scratch".into(),
            digest: None,
            config: ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: vec![],
                },
                ..Default::default()
            },
            layers: vec![],
        }
    }
}

/// Loads a base from an OCI layout (`oci:DIR[:TAG]`, DIR relative to `root`) into the store.
pub fn from_layout(
    written: &str,
    rest: &str,
    root: &Path,
    platform: &Platform,
    store: &Store,
) -> Result<BaseImage> {
    let (dir, tag) = layout::split_ref(rest);
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
    check_base(written, &config, &manifest.layers, platform)?;
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
        layers.push(normalise_layer(d)?);
    }
    Ok(BaseImage {
        name: written.to_string(),
        digest: Some(desc.digest),
        config,
        layers,
    })
}

/// Sanity checks that hold for any base.
pub fn check_base(
    written: &str,
    config: &ImageConfig,
    layers: &[Descriptor],
    platform: &Platform,
) -> Result<()> {
    if config.rootfs.diff_ids.len() != layers.len() {
        bail!(usage!(
            "base `{written}`: its config lists {} diff_ids but its manifest has {} layers",
            config.rootfs.diff_ids.len(),
            layers.len()
        ));
    }
    if !config.architecture.is_empty()
        && (config.architecture != platform.architecture || config.os != platform.os)
    {
        bail!(usage!(
            "base `{written}` is for {}/{}, but this image is built for {platform}",
            config.os,
            config.architecture
        )
        .context("set `platform` in [defaults] or the image to match the base, or choose a base for that platform"));
    }
    Ok(())
}

/// Docker media types for layers become their OCI equivalents (the bytes are the same).
pub fn normalise_layer(d: &Descriptor) -> Result<Descriptor> {
    let c = Compression::from_media_type(&d.media_type).ok_or_else(|| {
        usage!(
            "layer {} has media type `{}`, which imgbuild cannot read",
            d.digest,
            d.media_type
        )
    })?;
    let mut d = d.clone();
    d.media_type = c.layer_media_type().to_string();
    Ok(d)
}

/// The listing of a stored layer: from the cache, or by reading the blob (checking its diff_id).
pub fn listing(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<Listing> {
    if let Some(l) = cache::get_listing(store, diff_id) {
        return Ok(l);
    }
    let listing = read_layer(
        BufReader::new(store.open_blob(&layer.digest)?),
        layer,
        diff_id,
    )?;
    cache::put_listing(store, diff_id, &listing)?;
    Ok(listing)
}

/// Reads a layer blob: checks its digest, size and diff_id, and lists it.
pub fn read_layer(r: impl Read, layer: &Descriptor, diff_id: &Digest) -> Result<Listing> {
    let c = Compression::from_media_type(&layer.media_type).ok_or_else(|| {
        usage!(
            "layer {} has media type `{}`, which imgbuild cannot read",
            layer.digest,
            layer.media_type
        )
    })?;
    let mut outer = HashReader::new(r);
    let parsed = (|| -> Result<(Listing, Digest)> {
        let dec = compress::decoder(c, &mut outer)
            .with_context(|| format!("decompressing layer {}", layer.digest))?;
        let mut inner = HashReader::new(dec);
        let listing = Listing::from_tar(
            &mut inner,
            &ReadLimits {
                refuse_devices: true,
            },
        )
        .with_context(|| format!("reading layer {}", layer.digest))?;
        io::copy(&mut inner, &mut io::sink())
            .with_context(|| format!("decompressing layer {}", layer.digest))?;
        Ok((listing, inner.finish().0))
    })();
    // The blob's own digest is checked first: a corrupt blob explains any parse error.
    io::copy(&mut outer, &mut io::sink())?;
    let (blob_digest, size) = outer.finish();
    if blob_digest != layer.digest {
        bail!(
            "layer blob {} is corrupt: its content hashes to {blob_digest}",
            layer.digest
        );
    }
    if size != layer.size {
        bail!(
            "layer blob {} has {size} bytes, but its descriptor says {}",
            layer.digest,
            layer.size
        );
    }
    let (listing, got) = parsed?;
    if &got != diff_id {
        bail!(
            "layer {} uncompresses to {got}, but the image config says its diff_id is {diff_id}",
            layer.digest
        );
    }
    Ok(listing)
}

/// `imgbuild base import`: one deterministic layer from a rootfs directory or tar.
pub struct Import {
    pub source: PathBuf,
    pub env: Vec<(String, String)>,
    pub platform: Platform,
    pub mtime: u64,
    pub compression: Compression,
}

pub fn import(imp: &Import, out: Output, store: &Store) -> Result<(Built, String)> {
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
        run.set_env("PATH", DEFAULT_PATH);
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
        annotations: BTreeMap::new(),
    }];
    let built = crate::build::assemble("base", None, &config, layers, BTreeMap::new(), store)?;
    let note = if skipped.is_empty() {
        String::new()
    } else {
        format!("skipped {} device nodes, FIFOs or sockets", skipped.len())
    };
    let dest = out.destination();
    dest.write(&built, store)?;
    Ok((built, note))
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
        let p = clean_tar_path(&e.path_bytes()).map_err(|m| usage!("{}: {m}", src.display()))?;
        if p.is_empty() {
            continue;
        }
        let h = e.header();
        let (mode, uid, gid) = (
            h.mode().unwrap_or(0o644) & 0o7777,
            h.uid().unwrap_or(0) as u32,
            h.gid().unwrap_or(0) as u32,
        );
        let t = h.entry_type();
        let body = if t.is_dir() {
            Body::Dir
        } else if t.is_file() || t == tar::EntryType::Continuous {
            Body::File {
                src: Source::Range {
                    file: file.clone(),
                    offset: e.raw_file_position(),
                },
                size: e.size(),
            }
        } else if t.is_symlink() {
            Body::Symlink(
                e.link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default(),
            )
        } else if t.is_hard_link() {
            let target = e
                .link_name_bytes()
                .map(|b| b.into_owned())
                .unwrap_or_default();
            Body::Link(
                clean_tar_path(&target)
                    .map_err(|m| usage!("{}: {m}", src.display()))?
                    .into_bytes(),
            )
        } else if t.is_pax_global_extensions()
            || t.is_pax_local_extensions()
            || t.is_gnu_longname()
            || t.is_gnu_longlink()
        {
            continue;
        } else {
            skipped.push(p);
            continue;
        };
        out.push(Entry {
            path: p.into_bytes(),
            body,
            mode,
            uid,
            gid,
        });
    }
    Ok((out, tmp))
}

/// Host architecture in OCI terms.
pub fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        architecture: arch.into(),
        os: "linux".into(),
        variant: None,
    }
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
