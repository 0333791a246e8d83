//! What a build leaves behind in the project: the record of the last build of each image
//! (its digest and the references it was pushed as, for `push`, `pin` and `verify NAME`), and
//! the `--json` summary of a build or push.

use crate::digest::Digest;
use crate::image::{Built, ImageConfig, Index, Manifest, Referrer};
use crate::project::Project;
use crate::store::{write_atomic, Store};
use crate::usage;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The last build of an image, for `push` and `pin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildRecord {
    pub image: String,
    pub repository: Option<String>,
    pub digest: Digest,
    #[serde(default)]
    pub pushed: Vec<String>,
    /// The artifact manifests that refer to it (SBOM, provenance), in the store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<Digest>,
}

pub fn record_path(project: &Project, name: &str) -> PathBuf {
    project
        .state_dir()
        .join("builds")
        .join(format!("{name}.json"))
}

/// The one read-modify-write of a build record: the record of `built` (the stored one when it
/// names the same digest, so pushes of an unchanged rebuild stay valid; else a fresh one),
/// changed by `f`, written atomically.
fn update(project: &Project, built: &Built, f: impl FnOnce(&mut BuildRecord)) -> Result<()> {
    let p = record_path(project, &built.name);
    let mut rec = std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice::<BuildRecord>(&b).ok())
        .filter(|r| r.digest == built.digest)
        .unwrap_or_else(|| BuildRecord {
            image: built.name.clone(),
            repository: built.repository.clone(),
            digest: built.digest.clone(),
            pushed: vec![],
            referrers: vec![],
        });
    rec.repository = built.repository.clone();
    rec.referrers = all_referrers(built);
    f(&mut rec);
    write_atomic(&p, &serde_json::to_vec_pretty(&rec)?)
}

/// Records a build: a store root (keeps its blobs through `imgbuild store gc`) and the record.
pub fn record_build(project: &Project, built: &Built, store: &Store) -> Result<()> {
    store.put_record(
        "roots",
        built.digest.hex(),
        &serde_json::json!({
            "image": built.name,
            "project": project.root,
            "digest": built.digest,
            "referrers": all_referrers(built),
        }),
    )?;
    update(project, built, |_| {})
}

/// The referrers of every image of `built` (its own, or each platform's of an index).
fn all_referrers(built: &Built) -> Vec<Digest> {
    built
        .images()
        .iter()
        .flat_map(|b| b.referrers.iter().map(|r| r.digest.clone()))
        .collect()
}

/// Records that `built` was pushed as `reference` (for `pin`).
pub fn record_push(project: &Project, built: &Built, reference: &str) -> Result<()> {
    update(project, built, |rec| {
        if !rec.pushed.iter().any(|r| r == reference) {
            rec.pushed.push(reference.to_string());
        }
    })
}

/// The record of the last build of `name` (its digest and pushes), without the image.
pub fn last_record(project: &Project, name: &str) -> Result<BuildRecord> {
    let p = record_path(project, name);
    let bytes = std::fs::read(&p).map_err(|_| {
        usage!("image `{name}` has not been built yet; run `imgbuild build {name}` first")
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("reading {}", p.display()))
}

/// Reads the last build of `name`, reconstructing the image from the store.
pub fn last_build(project: &Project, name: &str) -> Result<(BuildRecord, Built)> {
    let rec = last_record(project, name)?;
    let store = project.store()?;
    let manifest_bytes = store.read(&rec.digest).with_context(|| {
        format!("the last build of `{name}` is no longer in the store; rebuild it")
    })?;
    let mut referrers = Vec::new();
    for d in &rec.referrers {
        let bytes = store.read(d).with_context(|| {
            format!("an SBOM or provenance of the last build of `{name}` is no longer in the store; rebuild it")
        })?;
        referrers.extend(Referrer::parse(&bytes));
    }
    let built = read_built(
        &store,
        name,
        rec.repository.clone(),
        &rec.digest,
        manifest_bytes,
        &referrers,
    )?;
    Ok((rec, built))
}

/// An image (or an index and its images) read back from the store; `referrers` are given to
/// the manifest they refer to.
fn read_built(
    store: &Store,
    name: &str,
    repository: Option<String>,
    digest: &Digest,
    bytes: Vec<u8>,
    referrers: &[Referrer],
) -> Result<Built> {
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    if v.get("manifests").is_some() {
        let index: Index = serde_json::from_value(v)?;
        let mut images = Vec::new();
        for d in &index.manifests {
            let platform = d.platform.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "the index of the last build of `{name}` has an entry without a platform"
                )
            })?;
            let b = store.read(&d.digest).with_context(|| {
                format!(
                    "the last build of `{name}` ({platform}) is no longer in the store; rebuild it"
                )
            })?;
            images.push((
                platform,
                read_built(store, name, repository.clone(), &d.digest, b, referrers)?,
            ));
        }
        return Ok(Built::index(
            name,
            repository,
            bytes,
            digest.clone(),
            images,
        ));
    }
    let manifest: Manifest = serde_json::from_value(v)?;
    Ok(Built {
        name: name.into(),
        repository,
        manifest,
        manifest_bytes: bytes,
        digest: digest.clone(),
        referrers: referrers
            .iter()
            .filter(|r| {
                r.manifest
                    .subject
                    .as_ref()
                    .is_some_and(|s| &s.digest == digest)
            })
            .cloned()
            .collect(),
        platforms: vec![],
    })
}

/// One layer in the summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerReport {
    pub name: String,
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub cached: bool,
    /// Where a built layer came from: `built`, `local cache` or `shared cache` (a build's
    /// summary only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// What a build did with the shared cache (`cache = "REPO"`), in the `--json` summary.
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
pub struct SharedCacheReport {
    pub repository: String,
    /// `read` or `read-write`.
    pub mode: String,
    /// Layers taken from the shared cache.
    pub hits: usize,
    /// Base layers whose facts (listing, SBOM facts) came from the shared cache.
    #[serde(default)]
    pub base_hits: usize,
    /// Other records taken from it: python targets, wheels built from sdists.
    #[serde(default)]
    pub record_hits: usize,
    /// Blob bytes downloaded from the cache repository: layers (only for outputs that need
    /// them) and wheels built from sdists.
    pub downloaded_bytes: u64,
    /// Bytes of the small records and listings read from the cache repository.
    pub record_bytes: u64,
    /// Bytes uploaded to the cache repository (layer blobs it lacked, records, listings).
    pub uploaded_bytes: u64,
    /// Records pushed to the cache repository by this build.
    pub records_written: usize,
    /// Records found but ignored (poisoned, blob gone) and failures that were skipped.
    pub warnings: usize,
    /// False when the cache repository could not be reached (the build went on without it).
    pub reachable: bool,
}

/// One platform of an image index in the summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlatformReport {
    pub platform: String,
    /// Its image manifest's digest.
    pub digest: Digest,
    pub layers: Vec<LayerReport>,
}

/// The `--json` summary (DESIGN.md).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Summary {
    pub image: String,
    pub digest: Option<Digest>,
    pub repository: Option<String>,
    pub reference: String,
    /// The layers of a one-platform image (empty for an index: see `platforms`).
    pub layers: Vec<LayerReport>,
    /// An image index's platforms, in its order, each with its manifest and layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformReport>,
    pub uploaded_bytes: u64,
    pub skipped_blobs: usize,
    /// Of the skipped blobs, those mounted from another repository of the registry.
    #[serde(default)]
    pub mounted_blobs: usize,
    /// Bytes of the image's SBOM and provenance uploaded (not in `uploaded_bytes`).
    #[serde(default)]
    pub referrer_bytes: u64,
    pub timings: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_cache: Option<SharedCacheReport>,
}

impl Summary {
    /// The human line for a push.
    pub fn push_note(&self) -> String {
        let mounted = if self.mounted_blobs > 0 {
            format!(", {} mounted from other repositories", self.mounted_blobs)
        } else {
            String::new()
        };
        let referrers = if self.referrer_bytes > 0 {
            format!("; SBOM and provenance: {} bytes", self.referrer_bytes)
        } else {
            String::new()
        };
        format!(
            "pushed {} → {}: {} bytes uploaded, {} blobs already there{mounted}{referrers}",
            self.image, self.reference, self.uploaded_bytes, self.skipped_blobs
        )
    }
}

/// The layers of a stored image for the summary: the image's own layers by their names in
/// imgbuild.toml, the ones below them named `base`.
pub fn layer_reports(
    project: &Project,
    name: &str,
    built: &Built,
    store: &Store,
) -> Vec<LayerReport> {
    let diff_ids: Vec<Digest> = store
        .read(&built.manifest.config.digest)
        .ok()
        .and_then(|b| serde_json::from_slice::<ImageConfig>(&b).ok())
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
        .map(|(i, l)| LayerReport {
            name: if i >= first_own {
                own[i - first_own].clone()
            } else {
                "base".into()
            },
            digest: l.digest.clone(),
            diff_id: diff_ids.get(i).cloned().unwrap_or_else(|| l.digest.clone()),
            size: l.size,
            cached: true,
            source: None,
        })
        .collect()
}
