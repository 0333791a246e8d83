//! Referrers on a registry (distribution-spec 1.1): pushing an image's artifact manifests
//! (SBOM, provenance) — through the referrers API when the registry has it, else by the
//! referrers tag schema (an index tagged `sha256-<hex>` of the subject) — and listing and
//! pulling them back.

use super::client::Repo;
use super::options::Options;
use super::reference::Reference;
use super::transport::Retry;
use crate::digest::Digest;
use crate::image::{self, Descriptor, Index, Platform, Referrer, MT_INDEX, MT_MANIFEST};
use crate::store::Store;
use crate::usage;
use anyhow::{Context, Result};
use reqwest::header::ACCEPT;
use std::collections::BTreeMap;

/// The fallback tag of a subject: `<alg>-<ref>` (distribution-spec 1.1, "Referrers Tag Schema").
pub fn fallback_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// How the registry lists referrers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Api,
    TagSchema,
}

impl<'a> Repo<'a> {
    /// `GET /v2/<name>/referrers/<digest>`: the index of referrers, or `None` when the
    /// registry has no referrers API (404).
    pub fn referrers_api(&self, subject: &Digest) -> Result<Option<Index>> {
        let url = self
            .client
            .url(&format!("v2/{}/referrers/{subject}", self.name));
        let what = format!("listing the referrers of {}@{subject}", self.where_());
        let Some(resp) = self.send_found(&what, Retry::Yes, &|h| {
            h.get(url.clone()).header(ACCEPT, MT_INDEX)
        })?
        else {
            return Ok(None);
        };
        let is_index = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(MT_INDEX));
        let bytes = resp.bytes().with_context(|| what.clone())?;
        // A registry that answers 200 with something else has no referrers API either.
        if !is_index {
            return Ok(serde_json::from_slice::<Index>(&bytes).ok());
        }
        Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("{what}: the registry's answer is not an image index")
        })?))
    }

    /// The referrers index of `subject` by the tag schema (empty when the tag is absent).
    fn fallback_index(&self, subject: &Digest) -> Result<Index> {
        Ok(match self.get_manifest(&fallback_tag(subject))? {
            Some(f) => serde_json::from_slice(&f.bytes).with_context(|| {
                format!(
                    "the referrers tag {} of {} is not an image index",
                    fallback_tag(subject),
                    self.where_()
                )
            })?,
            None => Index {
                schema_version: 2,
                media_type: Some(MT_INDEX.into()),
                manifests: vec![],
                annotations: BTreeMap::new(),
            },
        })
    }
}

/// Pushes the manifests of `referrers` (their blobs are already on the registry) after the
/// image `subject`: a manifest the registry has is not sent again; without `OCI-Subject` in the
/// answer (no referrers API), the tag schema index lists them, updated only when it lacks one.
/// Returns how the registry lists them.
pub fn push(repo: &Repo, subject: &Digest, referrers: &[Referrer]) -> Result<Mode> {
    let mut mode = None;
    for r in referrers {
        if repo.head_manifest(r.digest.as_str())?.is_some() {
            continue;
        }
        let h = repo
            .put_manifest_headers(r.digest.as_str(), &r.manifest_bytes, MT_MANIFEST)
            .with_context(|| format!("pushing the {} referrer", r.artifact_type))?;
        let api = h
            .get("oci-subject")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == subject.as_str());
        mode = Some(if api { Mode::Api } else { Mode::TagSchema });
    }
    let mode = match mode {
        Some(m) => m,
        // Nothing new was put: ask the registry (distribution-spec: 404 means no API).
        None if repo.referrers_api(subject)?.is_some() => Mode::Api,
        None => Mode::TagSchema,
    };
    if mode == Mode::TagSchema {
        let mut index = repo.fallback_index(subject)?;
        let before = index.manifests.len();
        for r in referrers {
            if !index.manifests.iter().any(|m| m.digest == r.digest) {
                index.manifests.push(r.descriptor());
            }
        }
        if index.manifests.len() != before {
            repo.put_manifest(&fallback_tag(subject), &image::to_bytes(&index), MT_INDEX)
                .with_context(|| format!("updating the referrers tag {}", fallback_tag(subject)))?;
        }
    }
    Ok(mode)
}

/// The referrers of `subject` in `repo`: the descriptors the referrers API (else the tag
/// schema index) lists.
pub fn list(repo: &Repo, subject: &Digest) -> Result<(Mode, Vec<Descriptor>)> {
    if let Some(i) = repo.referrers_api(subject)? {
        return Ok((Mode::Api, i.manifests));
    }
    Ok((Mode::TagSchema, repo.fallback_index(subject)?.manifests))
}

/// What `pull` found: the image manifest's digest and its referrers (manifests and payloads
/// in the store).
pub struct Pulled {
    pub reference: Reference,
    pub digest: Digest,
    pub mode: Mode,
    pub referrers: Vec<Referrer>,
}

/// The referrers of the image `written` (its manifest for `platform` when it names an
/// index) whose artifact type is `artifact_type` (all when `None`), pulled into the store.
pub fn pull(
    written: &str,
    platform: &Platform,
    artifact_type: Option<&str>,
    store: &Store,
    opts: &Options,
) -> Result<Pulled> {
    let r = Reference::parse(written).map_err(|e| usage!("`{written}`: {e}"))?;
    let client = super::client::Client::new(&r.registry, opts)?
        .with_repository_credentials(&r.repository, opts);
    let repo = Repo::pull(&client, &r.repository);
    let target = r.target();
    let top = repo
        .get_manifest(&target)?
        .ok_or_else(|| usage!("{} has no manifest {target}", r.name()))?;
    let digest = if top.is_index() {
        let idx: Index = serde_json::from_slice(&top.bytes)?;
        idx.for_platform(platform)
            .map_err(|e| usage!("`{written}`: the image index {} {e}", top.digest))?
            .digest
            .clone()
    } else {
        top.digest.clone()
    };
    pull_for(&repo, r, digest, artifact_type, store)
}

/// `pull` for a manifest digest already known (after `pull_image`).
pub fn pull_for(
    repo: &Repo,
    reference: Reference,
    digest: Digest,
    artifact_type: Option<&str>,
    store: &Store,
) -> Result<Pulled> {
    let (mode, listed) = list(repo, &digest)?;
    let mut referrers = Vec::new();
    for d in listed {
        if artifact_type.is_some_and(|t| d.artifact_type.as_deref() != Some(t)) {
            continue;
        }
        let Some(f) = repo.get_manifest(d.digest.as_str())? else {
            continue;
        };
        let Some(rf) = Referrer::parse(&f.bytes) else {
            continue;
        };
        if rf.manifest.subject.as_ref().map(|s| &s.digest) != Some(&digest) {
            continue;
        }
        store.put(&f.bytes)?;
        let p = rf.payload();
        repo.fetch_blob(&p.digest, p.size, store)?;
        referrers.push(rf);
    }
    Ok(Pulled {
        reference,
        digest,
        mode,
        referrers,
    })
}

/// `pull_for` from a reference and options (for `imgbuild verify REFERENCE`).
pub fn pull_digest(
    reference: &Reference,
    digest: &Digest,
    store: &Store,
    opts: &Options,
) -> Result<Pulled> {
    let client = super::client::Client::new(&reference.registry, opts)?
        .with_repository_credentials(&reference.repository, opts);
    let repo = Repo::pull(&client, &reference.repository);
    pull_for(&repo, reference.clone(), digest.clone(), None, store)
}
