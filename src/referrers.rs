//! An image's supply-chain referrers: its SPDX SBOM and SLSA provenance made at build time as
//! OCI 1.1 artifact manifests (the SBOM cached in the store by everything it says, so an
//! unchanged rebuild reads no layer), and found again for any target — the last build of an
//! image of the project (the store), an OCI layout, a registry (referrers API or tag schema).

use crate::digest::Digest;
use crate::image::{self, BaseImage, Built, Platform, Referrer, ANN_CREATED};
use crate::layout::Layout;
use crate::project::{store_dir, Project};
use crate::provenance::{self, MT_IN_TOTO};
use crate::recipe::{Ctx, Recipe};
use crate::record;
use crate::registry;
use crate::rootfs::Rootfs;
use crate::sbom::{self, spdx, Supply, MT_SPDX};
use crate::store::Store;
use crate::target::Target;
use crate::usage;
use anyhow::{Context, Result};
use serde_json::json;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// Bumped when the SBOM of the same inputs would change (cache key of stored SBOMs).
const FORMAT: u32 = 2;

/// Whether image `name` gets an SBOM and a provenance (`sbom`/`provenance` in the image
/// table, else `[defaults]`, else yes).
pub fn wanted(project: &Project, cx: &Ctx) -> (bool, bool) {
    let d = &project.spec.defaults;
    (
        cx.image.sbom.or(d.sbom).unwrap_or(true),
        cx.image.provenance.or(d.provenance).unwrap_or(true),
    )
}

/// The base as the SBOM and provenance name it: a registry reference (as imgbuild.toml names
/// it), `scratch`, `image:OTHER`, or `oci:LAYOUT:TAG` with the layout's directory name only (a
/// path says where the bytes are on this machine, not what they are).
pub fn base_name(written: Option<&str>, registry_ref: Option<String>) -> String {
    if let Some(r) = registry_ref {
        return r;
    }
    let w = written.unwrap_or("scratch");
    match w.strip_prefix("oci:") {
        Some(rest) => {
            let (dir, tag) = crate::target::split_ref(rest);
            let dir = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match tag {
                Some(t) => format!("oci:{dir}:{t}"),
                None => format!("oci:{dir}"),
            }
        }
        None => w.to_string(),
    }
}

/// What `make` needs of one build.
pub struct Made<'a> {
    pub project: &'a Project,
    pub cx: &'a Ctx,
    pub base: &'a BaseImage,
    pub base_name: String,
    pub recipes: &'a [Box<dyn Recipe>],
    pub built: &'a Built,
    /// The diff_ids of the image's layers (its config's).
    pub diff_ids: &'a [Digest],
    /// The merged filesystem of the image: verification's, or merged when the SBOM is not in
    /// the store (a rebuild whose checks were skipped has none).
    pub fs: &'a dyn Fn() -> Result<Cow<'a, Rootfs>>,
}

/// The SBOM and provenance referrers of `m.built`, as `wanted` says; every blob stored.
pub fn make(m: &Made) -> Result<Vec<Referrer>> {
    let (want_sbom, want_prov) = wanted(m.project, m.cx);
    let mut out = Vec::new();
    if !want_sbom && !want_prov {
        return Ok(out);
    }
    let cx = m.cx;
    let store = &cx.store;
    let offset = m.base.layers.len();
    let mut supply: BTreeMap<usize, Supply> = BTreeMap::new();
    for (i, r) in m.recipes.iter().enumerate() {
        let s = r
            .supply(cx)
            .with_context(|| format!("layer `{}`: its SBOM and provenance", r.name()))?;
        supply.insert(offset + i, s);
    }
    let subject = m.built.descriptor();
    let mut ann = BTreeMap::new();
    ann.insert(ANN_CREATED.to_string(), image::rfc3339(cx.source_date));
    let base_digest = m.base.digest.clone();
    if want_sbom {
        let key = Digest::of(
            json!({
                "format": FORMAT,
                "version": env!("CARGO_PKG_VERSION"),
                "manifest": m.built.digest,
                "name": m.built.name,
                "repository": m.built.repository,
                "base": m.base_name,
                "date": cx.source_date,
                "supply": supply,
            })
            .to_string()
            .as_bytes(),
        );
        let cached = store
            .get_record::<Digest>("sbom", key.hex())
            .filter(|d| store.has(d))
            .and_then(|d| store.read(&d).ok());
        let bytes = match cached {
            Some(b) => b,
            None => {
                let mut layers: Vec<(Option<String>, image::Descriptor)> = Vec::new();
                for (i, d) in m.built.manifest.layers.iter().enumerate() {
                    let name = i
                        .checked_sub(offset)
                        .and_then(|j| m.recipes.get(j))
                        .map(|r| r.name().to_string());
                    layers.push((name, d.clone()));
                }
                let fs = (m.fs)()?;
                let fs = fs.as_ref();
                let dists = sbom::python_dists(fs);
                let paths = sbom::paths_to_read(&dists);
                let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                let files = files_of(store, fs, &m.built.manifest.layers, m.diff_ids, &refs)
                    .context("reading the image's package metadata for its SBOM")?;
                let subject = sbom::Subject {
                    name: &m.built.name,
                    repository: m.built.repository.as_deref(),
                    digest: &m.built.digest,
                    created: cx.source_date,
                    base: (m.base_name.clone(), base_digest.clone()),
                    base_layers: offset,
                    layers,
                    supply: supply.clone(),
                };
                let b = spdx::to_bytes(&spdx::document(&subject, fs, &files));
                let d = store.put(&b)?;
                store.put_record("sbom", key.hex(), &d)?;
                b
            }
        };
        out.push(image::artifact(
            &subject,
            MT_SPDX,
            &bytes,
            ann.clone(),
            store,
        )?);
    }
    if want_prov {
        let config = std::fs::read(&m.project.spec_path)
            .with_context(|| format!("reading {}", m.project.spec_path.display()))?;
        let mut internal = BTreeMap::new();
        internal.insert("compression".into(), json!(cx.compression.as_str()));
        internal.insert("gzipLevel".into(), json!(cx.gzip_level));
        internal.insert("sourceDateEpoch".into(), json!(cx.source_date));
        let b = provenance::Build {
            name: m.built.repository.as_deref().unwrap_or(&m.built.name),
            digest: &m.built.digest,
            image: &m.built.name,
            platform: cx.platform.to_string(),
            internal,
            base: (m.base_name.clone(), base_digest),
            config_sha256: Digest::of(&config).hex().to_string(),
            revision: cx.revision.clone(),
            inputs: supply.values().flat_map(|s| s.inputs.clone()).collect(),
            finished_on: provenance::wall_clock(),
        };
        let bytes = provenance::to_bytes(&provenance::statement(&b));
        out.push(image::artifact(&subject, MT_IN_TOTO, &bytes, ann, store)?);
    }
    Ok(out)
}

/// The files `paths` of the merged filesystem `fs`, from the facts the store keeps of each
/// owning layer (`sbom::LayerFacts` by diff_id); a layer without them (a base seen for the first
/// time) is read once and its facts kept.
fn files_of(
    store: &Store,
    fs: &Rootfs,
    layers: &[image::Descriptor],
    diff_ids: &[Digest],
    paths: &[&str],
) -> Result<sbom::Files> {
    let mut facts: BTreeMap<usize, sbom::LayerFacts> = BTreeMap::new();
    let mut out = sbom::Files::new();
    for &p in paths {
        let Some((layer, inner)) = fs.file_in_layer(p) else {
            continue;
        };
        if let std::collections::btree_map::Entry::Vacant(slot) = facts.entry(layer) {
            let (Some(d), Some(diff)) = (layers.get(layer), diff_ids.get(layer)) else {
                continue;
            };
            let f = match store.get_record::<sbom::LayerFacts>(sbom::FACTS, diff.hex()) {
                Some(f) => f,
                None => {
                    let f = sbom::facts(layer_files(store, d)?);
                    store.put_record(sbom::FACTS, diff.hex(), &f)?;
                    f
                }
            };
            slot.insert(f);
        }
        if let Some(t) = facts[&layer].get(&inner) {
            out.insert(p.to_string(), t.as_bytes().to_vec());
        }
    }
    Ok(out)
}

/// The files `sbom::wanted` accepts of one stored layer, streamed once.
fn layer_files(store: &Store, d: &image::Descriptor) -> Result<BTreeMap<String, Vec<u8>>> {
    let c = crate::compress::Compression::from_media_type(&d.media_type)
        .ok_or_else(|| anyhow::anyhow!("layer {} has an unknown media type", d.digest))?;
    let blob = std::io::BufReader::new(store.open_blob(&d.digest)?);
    let mut ar = tar::Archive::new(crate::compress::decoder(c, blob)?);
    let mut out = BTreeMap::new();
    for e in ar.entries()? {
        let mut e = e?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let p = crate::rootfs::clean_tar_path(&e.path_bytes())?;
        if sbom::wanted(&p) {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut buf)
                .with_context(|| format!("reading /{p} from layer {}", d.digest))?;
            out.insert(p, buf);
        }
    }
    Ok(out)
}

/// The referrers of an image wherever it is, each with its payload.
pub struct Found {
    /// The image as messages name it.
    pub what: String,
    pub subject: Digest,
    pub referrers: Vec<(Referrer, Vec<u8>)>,
}

impl Found {
    /// The payload of the first referrer of `artifact_type`.
    pub fn payload(&self, artifact_type: &str) -> Option<&[u8]> {
        self.referrers
            .iter()
            .find(|(r, _)| r.artifact_type == artifact_type)
            .map(|(_, b)| b.as_slice())
    }
}

/// The referrers of `written` (an image of the project: its last build; `oci:DIR[:TAG]`; a
/// registry reference). `platform` picks the manifest of an index (default: the project's
/// platform, else this machine's).
pub fn find(
    cwd: &Path,
    config: Option<&Path>,
    cli_insecure: &[String],
    written: &str,
    platform: Option<&str>,
) -> Result<Found> {
    let project = Project::load(cwd, config);
    let is_image = |n: &str| {
        project
            .as_ref()
            .is_ok_and(|p| p.spec.images.contains_key(n))
    };
    let platform = match platform.map(String::from).or_else(|| {
        project
            .as_ref()
            .ok()
            .and_then(|p| p.spec.defaults.platform.clone())
    }) {
        Some(p) => Platform::parse_named(&p, &format!("platform `{p}`"))?,
        None => Platform::host(),
    };
    match Target::parse(written, cwd, is_image) {
        Target::Image(name) => {
            let project = project?;
            project.image(&name)?;
            let (_, built) = record::last_build(&project, &name)?;
            let store = project.store()?;
            // Of an index, the platform's image (each has its own SBOM and provenance).
            let built = if built.is_index() {
                built.for_platform(&platform, &store)?.clone()
            } else {
                built
            };
            let mut referrers = Vec::new();
            for r in built.referrers {
                let p = r.payload();
                let bytes = store.read(&p.digest).with_context(|| {
                    format!(
                        "the {} of `{name}` is no longer in the store; rebuild it",
                        r.artifact_type
                    )
                })?;
                referrers.push((r, bytes));
            }
            Ok(Found {
                what: format!("{name} ({})", built.digest),
                subject: built.digest,
                referrers,
            })
        }
        Target::Layout { dir, tag } => {
            let l = Layout::open(&dir)?;
            let (desc, _) = l.resolve(tag.as_deref(), &platform)?;
            let mut referrers = Vec::new();
            for r in l.referrers(&desc.digest)? {
                let p = r.payload().clone();
                let bytes = l.read_blob(&p.digest, Some(p.size))?;
                referrers.push((r, bytes));
            }
            Ok(Found {
                what: written.to_string(),
                subject: desc.digest,
                referrers,
            })
        }
        Target::Reference(r) => {
            let project = project.ok();
            let opts = match &project {
                Some(p) => registry::options_for_project(&p.spec, cli_insecure),
                None => registry::options_for(&[], cli_insecure),
            };
            let store = Store::open(store_dir(project.as_ref(), cwd))?;
            let pulled = registry::referrers::pull(&r, &platform, None, &store, &opts)?;
            let mut referrers = Vec::new();
            for rf in pulled.referrers {
                let bytes = store.read(&rf.payload().digest)?;
                referrers.push((rf, bytes));
            }
            Ok(Found {
                what: pulled.reference.with_digest(&pulled.digest),
                subject: pulled.digest,
                referrers,
            })
        }
        Target::Archive { .. } => Err(usage!(
            "a docker-archive holds no SBOM: read it from the OCI layout (oci:DIR:TAG), the \
             image's name or the registry the image was pushed to"
        )),
    }
}

/// Output formats of `imgbuild sbom`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Format {
    Spdx,
    CycloneDx,
    /// The provenance statement rather than the SBOM.
    Provenance,
}

/// What `imgbuild sbom` prints: the stored SPDX document, its CycloneDX conversion, or the
/// provenance statement.
pub fn render(found: &Found, format: Format) -> Result<Vec<u8>> {
    let missing =
        |what: &str| {
            usage!(
            "{} has no {what} (it was built with `{}` = false, by an imgbuild without SBOMs, or \
             copied by a tool that drops referrers); rebuild it",
            found.what,
            if what == "provenance" { "provenance" } else { "sbom" }
        )
        };
    if format == Format::Provenance {
        return Ok(found
            .payload(MT_IN_TOTO)
            .ok_or_else(|| missing("provenance"))?
            .to_vec());
    }
    let bytes = found.payload(MT_SPDX).ok_or_else(|| missing("SBOM"))?;
    match format {
        Format::CycloneDx => {
            let doc: spdx::Document = serde_json::from_slice(bytes)
                .with_context(|| format!("the SBOM of {} is not SPDX JSON", found.what))?;
            let mut v = serde_json::to_vec_pretty(&sbom::cyclonedx::convert(&doc))?;
            v.push(b'\n');
            Ok(v)
        }
        _ => Ok(bytes.to_vec()),
    }
}
