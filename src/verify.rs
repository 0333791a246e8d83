//! `imgbuild verify`: re-checks an image that exists — blob digests and sizes, config,
//! diff_ids — runs the layer checks on its merged filesystem, and checks its SBOM against it
//! (the distributions and packages it lists are those the image holds); `target` is the whole of
//! `imgbuild verify TARGET`.

use crate::build;
use crate::digest::Digest;
use crate::image::{ImageConfig, Manifest, Platform};
use crate::layer::read::read_layer;
use crate::layout::Layout;
use crate::project::{store_dir, Project};
use crate::recipe;
use crate::record;
use crate::registry;
use crate::rootfs::Rootfs;
use crate::sbom::{self, spdx, MT_SPDX};
use crate::store::Store;
use crate::target::Target;
use crate::usage;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Where an image's blobs are read from.
pub trait Blobs {
    fn open(&self, d: &Digest) -> Result<Box<dyn Read + '_>>;
    fn read(&self, d: &Digest, size: u64) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open(d)?.read_to_end(&mut v)?;
        if v.len() as u64 != size {
            bail!(
                "blob {d} has {} bytes, but its descriptor says {size}",
                v.len()
            );
        }
        let got = Digest::of(&v);
        if &got != d {
            bail!("blob {d} does not match its digest (content hashes to {got})");
        }
        Ok(v)
    }
}

impl Blobs for Layout {
    fn open(&self, d: &Digest) -> Result<Box<dyn Read + '_>> {
        Ok(Box::new(BufReader::new(
            File::open(self.blob_path(d))
                .with_context(|| format!("blob {d} is missing from {}", self.dir.display()))?,
        )))
    }
}

impl Blobs for Store {
    fn open(&self, d: &Digest) -> Result<Box<dyn Read + '_>> {
        Ok(Box::new(BufReader::new(self.open_blob(d)?)))
    }
}

/// A docker-archive tarball: members found once, then read by offset.
pub struct Archive {
    file: PathBuf,
    members: HashMap<String, (u64, u64)>,
    pub manifest: Manifest,
}

impl Archive {
    pub fn open(file: &Path) -> Result<Archive> {
        let mut ar = tar::Archive::new(BufReader::new(
            File::open(file).map_err(|e| usage!("cannot open {}: {e}", file.display()))?,
        ));
        let mut members = HashMap::new();
        for e in ar.entries()? {
            let e = e?;
            members.insert(
                e.path()?.to_string_lossy().into_owned(),
                (e.raw_file_position(), e.size()),
            );
        }
        let mut a = Archive {
            file: file.to_path_buf(),
            members,
            manifest: Manifest {
                schema_version: 2,
                media_type: None,
                artifact_type: None,
                subject: None,
                config: dummy(),
                layers: vec![],
                annotations: Default::default(),
            },
        };
        let mut text = Vec::new();
        a.member("manifest.json")?.read_to_end(&mut text)?;
        let items: Vec<serde_json::Value> = serde_json::from_slice(&text)
            .with_context(|| format!("{}: bad manifest.json", file.display()))?;
        let item = items
            .first()
            .ok_or_else(|| usage!("{}: manifest.json lists no image", file.display()))?;
        let name_of = |v: &serde_json::Value| {
            v.as_str()
                .map(String::from)
                .ok_or_else(|| usage!("{}: malformed manifest.json", file.display()))
        };
        let config_name = name_of(&item["Config"])?;
        let desc = |name: &str, media_type: String| -> Result<crate::image::Descriptor> {
            let (_, size) = *a
                .members
                .get(name)
                .ok_or_else(|| usage!("{}: member {name} is missing", file.display()))?;
            let hex = name
                .split('.')
                .next()
                .unwrap_or("")
                .trim_start_matches("blobs/sha256/");
            let digest = Digest::parse(&format!("sha256:{hex}"))
                .map_err(|e| usage!("{}: {e}", file.display()))?;
            Ok(crate::image::Descriptor {
                media_type,
                digest,
                size,
                platform: None,
                artifact_type: None,
                annotations: Default::default(),
            })
        };
        let config = desc(&config_name, crate::image::MT_CONFIG.into())?;
        let mut layers = Vec::new();
        for l in item["Layers"].as_array().cloned().unwrap_or_default() {
            let n = name_of(&l)?;
            let c = if n.ends_with(".gz") {
                crate::compress::Compression::Gzip
            } else if n.ends_with(".zst") {
                crate::compress::Compression::Zstd
            } else {
                crate::compress::Compression::None
            };
            layers.push(desc(&n, c.layer_media_type().into())?);
        }
        a.manifest = Manifest {
            schema_version: 2,
            media_type: None,
            artifact_type: None,
            subject: None,
            config,
            layers,
            annotations: Default::default(),
        };
        Ok(a)
    }

    fn member(&self, name: &str) -> Result<Box<dyn Read + '_>> {
        let (off, size) = *self
            .members
            .get(name)
            .ok_or_else(|| usage!("{}: member {name} is missing", self.file.display()))?;
        let mut f = File::open(&self.file)?;
        f.seek(SeekFrom::Start(off))?;
        Ok(Box::new(BufReader::new(f).take(size)))
    }
}

fn dummy() -> crate::image::Descriptor {
    crate::image::Descriptor {
        media_type: String::new(),
        digest: Digest::of(b""),
        size: 0,
        platform: None,
        artifact_type: None,
        annotations: Default::default(),
    }
}

impl Blobs for Archive {
    fn open(&self, d: &Digest) -> Result<Box<dyn Read + '_>> {
        let name = self
            .members
            .keys()
            .find(|k| k.trim_start_matches("blobs/sha256/").split('.').next() == Some(d.hex()))
            .ok_or_else(|| anyhow::anyhow!("blob {d} is missing from {}", self.file.display()))?
            .clone();
        self.member(&name)
    }
}

/// What verification found: the merged filesystem and the config, for further checks.
pub struct Checked {
    pub config: ImageConfig,
    pub fs: Rootfs,
    pub layers: usize,
    pub bytes: u64,
}

/// Checks every blob of `manifest` and builds the merged filesystem.
pub fn check_image(
    blobs: &dyn Blobs,
    manifest: &Manifest,
    platform: Option<&Platform>,
) -> Result<Checked> {
    let config_bytes = blobs
        .read(&manifest.config.digest, manifest.config.size)
        .context("image config")?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).context("parsing the image config")?;
    if let Some(p) = platform {
        if !config.architecture.is_empty()
            && (config.architecture != p.architecture || config.os != p.os)
        {
            bail!(
                "image is for {}/{}, expected {p}",
                config.os,
                config.architecture
            );
        }
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "the config lists {} diff_ids but the manifest has {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        );
    }
    let mut fs = Rootfs::default();
    let mut bytes = config_bytes.len() as u64;
    for (i, (l, diff)) in manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .enumerate()
    {
        let listing = read_layer(blobs.open(&l.digest)?, l, diff)
            .with_context(|| format!("layer {} of {}", i + 1, manifest.layers.len()))?;
        fs.apply(i, &listing);
        bytes += l.size;
    }
    Ok(Checked {
        config,
        fs,
        layers: manifest.layers.len(),
        bytes,
    })
}

/// What `imgbuild verify TARGET` found on an image that passed.
pub struct Verified {
    /// The image as the report names it (`oci:…`, `repo@sha256:…`, `NAME (sha256:…)`).
    pub what: String,
    pub checked: Checked,
    /// Python distributions whose RECORD matched.
    pub distributions: usize,
    /// Packages of the image's SBOM that matched the image (`None`: it has no SBOM).
    pub sbom: Option<usize>,
    /// The platform of an image index this is (`None`: not an index).
    pub platform: Option<Platform>,
}

/// `imgbuild verify TARGET [--platform P]...`: every platform of an image index (those
/// `asked` for, when given; each must be in the index), or the one image. See `target`.
pub fn targets(
    cwd: &Path,
    config: Option<&Path>,
    cli_insecure: &[String],
    written: &str,
    asked: &[Platform],
) -> Result<Vec<Verified>> {
    let project = Project::load(cwd, config);
    let is_image = |n: &str| {
        project
            .as_ref()
            .is_ok_and(|p| p.spec.images.contains_key(n))
    };
    // The platforms of the target when it is an index, and the target pinned to what was
    // listed (a tag read once).
    let (pinned, platforms): (String, Vec<Platform>) = match Target::parse(written, cwd, is_image) {
        Target::Layout { dir, tag } => {
            let l = Layout::open(&dir)?;
            let index = l.index()?;
            let platforms = match crate::layout::image_entry(&index, tag.as_deref()) {
                Some(d) if d.media_type == crate::image::MT_INDEX => {
                    let inner: crate::image::Index = l.read_json(d)?;
                    inner
                        .manifests
                        .iter()
                        .filter_map(|m| m.platform.clone())
                        .collect()
                }
                _ => vec![],
            };
            (written.to_string(), platforms)
        }
        Target::Archive { .. } => (written.to_string(), vec![]),
        Target::Reference(r) => {
            let project = project.as_ref().ok();
            let spec_insecure = project
                .map(|p| p.spec.insecure_registries.clone())
                .unwrap_or_default();
            let opts = registry::options_for(&spec_insecure, cli_insecure);
            let store = Store::open(store_dir(project, cwd))?;
            let (top, platforms) = registry::platforms_of(&r, &store, &opts)?;
            let mut rf =
                registry::reference::Reference::parse(&r).map_err(|e| usage!("`{r}`: {e}"))?;
            rf.digest = Some(top);
            rf.tag = None;
            (rf.to_string(), platforms)
        }
        Target::Image(name) => {
            let p = project.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let (_, built) = record::last_build(p, &name)?;
            (
                written.to_string(),
                built.platforms.iter().map(|(p, _)| p.clone()).collect(),
            )
        }
    };
    if platforms.is_empty() {
        if let Some(p) = asked.first() {
            let one = target_on(cwd, config, cli_insecure, &pinned, Some(p))?;
            return Ok(vec![one]);
        }
        return Ok(vec![target_on(cwd, config, cli_insecure, &pinned, None)?]);
    }
    for a in asked {
        if !platforms.iter().any(|p| p.matches(a)) {
            bail!(usage!(
                "{written} is an image index for {}, which has no {a}",
                platforms
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let mut out = Vec::new();
    for p in &platforms {
        if !asked.is_empty() && !asked.iter().any(|a| p.matches(a)) {
            continue;
        }
        let mut v = target_on(cwd, config, cli_insecure, &pinned, Some(p))
            .with_context(|| format!("{written} ({p})"))?;
        v.platform = Some(p.clone());
        out.push(v);
    }
    Ok(out)
}

/// `imgbuild verify TARGET`: an image name of the project (its last build, with its layers'
/// own checks), `oci:DIR[:TAG]`, `docker-archive:FILE` or a registry reference (pulled by
/// digest into the store). Every problem found is one error listing them all. Of an image
/// index, this machine's platform (the project's first); `targets` checks every platform.
pub fn target(
    cwd: &Path,
    config: Option<&Path>,
    cli_insecure: &[String],
    written: &str,
) -> Result<Verified> {
    target_on(cwd, config, cli_insecure, written, None)
}

/// `target` for the image of `platform` in an index (`None`: this machine's, or the project's
/// `platform`).
fn target_on(
    cwd: &Path,
    config: Option<&Path>,
    cli_insecure: &[String],
    written: &str,
    platform: Option<&Platform>,
) -> Result<Verified> {
    let project = Project::load(cwd, config);
    let is_image = |n: &str| {
        project
            .as_ref()
            .is_ok_and(|p| p.spec.images.contains_key(n))
    };
    // Every image's start command is checked, unless its project says it is given at run time.
    let mut start_checked = true;
    // The native libraries of every layer — of an image of this project, of its own layers, as
    // the build checks them (a base's optional plugins are the base's business).
    let mut native_from = 0;
    let mut sbom = None;
    let (checked, what, mut problems) = match Target::parse(written, cwd, is_image) {
        Target::Layout { dir, tag } => {
            let l = Layout::open(&dir)?;
            let index = l.index()?;
            let (desc, manifest) = l
                .resolve(tag.as_deref(), platform.unwrap_or(&Platform::host()))
                .or_else(|e| {
                    // A single-platform image for another architecture is still verifiable.
                    match crate::layout::image_entry(&index, tag.as_deref()) {
                        Some(d) if d.media_type == crate::image::MT_MANIFEST => {
                            Ok((d.clone(), l.read_json(d)?))
                        }
                        _ => Err(e),
                    }
                })?;
            let checked = check_image(&l, &manifest, None)?;
            let found = l.referrers(&desc.digest)?;
            let payload = match found.iter().find(|r| r.artifact_type == MT_SPDX) {
                Some(r) => Some(l.read_blob(&r.payload().digest, Some(r.payload().size))?),
                None => None,
            };
            let (n, p) = sbom_problems(&l, &manifest, &desc.digest, &checked, payload.as_deref());
            sbom = n;
            (checked, written.to_string(), p)
        }
        Target::Archive { file, .. } => {
            let ar = Archive::open(&file)?;
            let m = ar.manifest.clone();
            (check_image(&ar, &m, None)?, written.to_string(), vec![])
        }
        Target::Reference(r) => {
            let project = project.ok();
            let spec_insecure = project
                .as_ref()
                .map(|p| p.spec.insecure_registries.clone())
                .unwrap_or_default();
            let opts = registry::options_for(&spec_insecure, cli_insecure);
            let store = Store::open(store_dir(project.as_ref(), cwd))?;
            let platform = match (
                platform,
                project
                    .as_ref()
                    .and_then(|p| p.spec.defaults.platform.clone()),
            ) {
                (Some(p), _) => p.clone(),
                (None, Some(p)) => Platform::parse_named(&p, &format!("platform `{p}`"))?,
                (None, None) => Platform::host(),
            };
            let (r, digest, manifest) = registry::pull_image(&r, &platform, &store, &opts)?;
            let checked = check_image(&store, &manifest, None)?;
            let pulled = registry::referrers::pull_digest(&r, &digest, &store, &opts)?;
            let payload = match pulled.referrers.iter().find(|r| r.artifact_type == MT_SPDX) {
                Some(rf) => Some(store.read(&rf.payload().digest)?),
                None => None,
            };
            let (n, p) = sbom_problems(&store, &manifest, &digest, &checked, payload.as_deref());
            sbom = n;
            (checked, r.with_digest(&digest), p)
        }
        Target::Image(name) => {
            let project = project?;
            project.image(&name)?;
            let (rec, built) = record::last_build(&project, &name)?;
            let store = project.store()?;
            let built = match platform {
                Some(p) => built.for_platform(p, &store)?.clone(),
                None if built.is_index() => built
                    .for_platform(&Platform::host(), &store)
                    .unwrap_or(&built.platforms[0].1)
                    .clone(),
                None => built,
            };
            let rec = record::BuildRecord {
                digest: built.digest.clone(),
                ..rec
            };
            let checked = check_image(&store, &built.manifest, None).context("the last build")?;
            // An image of this project: its layers' own checks too (expect, require, scripts).
            let mut problems = build::recheck(&project, &name, &checked.fs, &checked.config)?;
            let payload = match built.referrers.iter().find(|r| r.artifact_type == MT_SPDX) {
                Some(rf) => Some(store.read(&rf.payload().digest)?),
                None => None,
            };
            let wanted = project
                .image(&name)?
                .sbom
                .or(project.spec.defaults.sbom)
                .unwrap_or(true);
            if payload.is_none() && wanted {
                problems.push(recipe::Problem {
                    layer: SBOM.into(),
                    message: "the last build has no SBOM (built by an imgbuild without SBOMs?); rebuild the image".into(),
                });
            }
            let (n, p) = sbom_problems(
                &store,
                &built.manifest,
                &rec.digest,
                &checked,
                payload.as_deref(),
            );
            sbom = n;
            problems.extend(p);
            start_checked = project.image(&name)?.start_check != Some(false);
            native_from = built
                .manifest
                .layers
                .len()
                .saturating_sub(project.image(&name)?.layers.len());
            (checked, format!("{name} ({})", rec.digest), problems)
        }
    };
    let mut more = crate::python::check_rootfs(&checked.fs, &checked.config);
    if start_checked {
        more.extend(build::start_problems(&checked.fs, &checked.config));
    }
    more.extend(build::native_problems(
        &checked.fs,
        &checked.config,
        native_from,
        |l| format!("layer {} of {}", l + 1, checked.layers),
    ));
    for p in more {
        if !problems.contains(&p) {
            problems.push(p);
        }
    }
    if !problems.is_empty() {
        return Err(recipe::report(&what, &problems, |l| l.to_string()));
    }
    let distributions = crate::python::distributions(&checked.fs);
    Ok(Verified {
        what,
        checked,
        distributions,
        sbom,
        platform: None,
    })
}

/// Where the problems of the SBOM check are reported.
pub const SBOM: &str = "SBOM";

/// The SBOM check: the SBOM's Python distributions and Debian packages are exactly those the
/// image's RECORDs and dpkg status show, its layers are the image's. Returns how many
/// packages it lists (`None` without an SBOM) and the problems.
fn sbom_problems(
    blobs: &dyn Blobs,
    manifest: &Manifest,
    digest: &Digest,
    checked: &Checked,
    payload: Option<&[u8]>,
) -> (Option<usize>, Vec<recipe::Problem>) {
    let Some(bytes) = payload else {
        return (None, vec![]);
    };
    let problem = |message: String| recipe::Problem {
        layer: SBOM.into(),
        message,
    };
    let doc: spdx::Document = match serde_json::from_slice(bytes) {
        Ok(d) => d,
        Err(e) => {
            return (
                Some(0),
                vec![problem(format!("the SBOM is not SPDX 2.3 JSON: {e}"))],
            )
        }
    };
    let paths = sbom::paths_to_read(&[]);
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let files = match crate::layer::read::files(
        &checked.fs,
        &manifest.layers,
        &|d| blobs.open(&d.digest),
        &refs,
    ) {
        Ok(f) => f,
        Err(e) => {
            return (
                Some(0),
                vec![problem(format!("reading the dpkg status: {e:#}"))],
            )
        }
    };
    let n = doc
        .packages
        .iter()
        .filter(|p| {
            p.purl_of()
                .is_some_and(|u| u.starts_with("pkg:pypi/") || u.starts_with("pkg:deb/"))
        })
        .count();
    let problems = spdx::check(&doc, &checked.fs, &files, &manifest.layers, digest)
        .into_iter()
        .map(problem)
        .collect();
    (Some(n), problems)
}
