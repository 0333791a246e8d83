//! The registry `Destination`: every blob HEADed first and skipped when present, mounted from
//! another repository of the same registry when imgbuild knows one that has it (falling back to
//! a plain upload when the mount is declined or fails), otherwise uploaded; the manifest is PUT
//! by digest only after every blob is confirmed present, then each tag, then the image's
//! referrers (`referrers::push`).

use super::client::{Client, Repo, Start};
use super::known::{known_repositories, remember};
use super::options::Options;
use super::reference::Reference;
use crate::image::Built;
use crate::image::ANN_BASE_NAME;
use crate::store::Store;
use crate::target::{Destination, Written};
use crate::usage;
use anyhow::{Context, Result};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Parallel blob transfers (the machine has few cores; registries like a few connections).
const WORKERS: usize = 3;
/// At most this many other repositories are asked for a mount (each needs a pull scope).
const MAX_MOUNT_SOURCES: usize = 4;

pub struct RegistryDest {
    /// `registry/repository` (a tag or digest in it is ignored; see `tags`).
    pub target: Reference,
    pub tags: Vec<String>,
    pub opts: Options,
}

impl RegistryDest {
    /// A destination for `repository` as written in imgbuild.toml; `tags` (else the
    /// repository's own tag, else `latest`).
    pub fn new(repository: &str, tags: &[String], opts: &Options) -> Result<RegistryDest> {
        let target = Reference::parse(repository).map_err(|e| usage!("repository: {e}"))?;
        if target.digest.is_some() {
            return Err(usage!(
                "repository `{repository}` names a digest; a push target is a repository \
                 (optionally with a tag)"
            ));
        }
        let mut tags: Vec<String> = tags.to_vec();
        if tags.is_empty() {
            tags.push(target.tag.clone().unwrap_or_else(|| "latest".into()));
        }
        for t in &tags {
            if !super::reference::valid_tag(t) {
                return Err(usage!(
                    "tag `{t}` must be 1–128 letters, digits, `_`, `.` or `-`, not starting \
                     with `.` or `-`"
                ));
            }
        }
        Ok(RegistryDest {
            target,
            tags,
            opts: opts.clone(),
        })
    }
}

impl Destination for RegistryDest {
    fn describe(&self) -> String {
        self.target.name()
    }

    fn write(&self, img: &Built, store: &Store) -> Result<Written> {
        let t = &self.target;
        let client = Client::new(&t.registry, &self.opts)?
            .with_repository_credentials(&t.repository, &self.opts);
        // The image's blobs (each platform's of an index, a shared layer once), then its
        // referrers' (SBOM, provenance).
        let images = img.images();
        let mut blobs: Vec<&crate::image::Descriptor> = Vec::new();
        for one in &images {
            for d in one.blobs() {
                if !blobs.iter().any(|b| b.digest == d.digest) {
                    blobs.push(d);
                }
            }
        }
        // Blobs from here on are the referrers' (counted apart in `referrer_bytes`).
        let own = blobs.len();
        for one in &images {
            for r in &one.referrers {
                for d in r.blobs() {
                    if !blobs.iter().any(|b| b.digest == d.digest) {
                        blobs.push(d);
                    }
                }
            }
        }
        // Where each blob might be mounted from: repositories of this registry known to have
        // it, and the base image's repository when it lives here.
        let base_repo = images[0]
            .manifest
            .annotations
            .get(ANN_BASE_NAME)
            .and_then(|n| Reference::parse(n).ok())
            .filter(|r| r.registry == t.registry && r.repository != t.repository)
            .map(|r| r.repository);
        let mut sources: Vec<Vec<String>> = Vec::new();
        let mut all_sources: Vec<String> = Vec::new();
        for d in &blobs {
            let mut s: Vec<String> = known_repositories(store, &t.registry, &d.digest)
                .into_iter()
                .rev()
                .filter(|r| r != &t.repository)
                .collect();
            if let Some(b) = &base_repo {
                if !s.contains(b) {
                    s.push(b.clone());
                }
            }
            for r in &s {
                if !all_sources.contains(r) && all_sources.len() < MAX_MOUNT_SOURCES {
                    all_sources.push(r.clone());
                }
            }
            s.retain(|r| all_sources.contains(r));
            sources.push(s);
        }
        let repo = Repo::push(&client, &t.repository, &all_sources);
        let uploaded = AtomicU64::new(0);
        let referrer_bytes = AtomicU64::new(0);
        let skipped = AtomicUsize::new(0);
        let mounted = AtomicUsize::new(0);
        let next = AtomicUsize::new(0);
        // Largest first, so small blobs go up beside the big ones rather than after them.
        let mut order: Vec<usize> = (0..blobs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(blobs[i].size));
        let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        std::thread::scope(|sc| {
            for _ in 0..WORKERS.min(blobs.len()) {
                sc.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k >= blobs.len() || first_error.lock().unwrap().is_some() {
                        break;
                    }
                    let i = order[k];
                    let d = blobs[i];
                    match push_blob(&repo, d, &sources[i], store) {
                        Ok(Outcome::Uploaded) if i >= own => {
                            referrer_bytes.fetch_add(d.size, Ordering::SeqCst);
                        }
                        Ok(_) if i >= own => {}
                        Ok(Outcome::Present) => {
                            skipped.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Outcome::Mounted) => {
                            skipped.fetch_add(1, Ordering::SeqCst);
                            mounted.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Outcome::Uploaded) => {
                            uploaded.fetch_add(d.size, Ordering::SeqCst);
                        }
                        Err(e) => {
                            first_error.lock().unwrap().get_or_insert(e);
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap() {
            return Err(e.context(format!("pushing {} to {}", img.name, t.name())));
        }
        // Every blob is confirmed present (HEAD 200, mount 201 or upload 201): the manifests
        // (an index's after each platform's), by digest.
        let mut manifests: Vec<&Built> = images.clone();
        if img.is_index() {
            manifests.push(img);
        }
        for m in manifests {
            let digest = m.digest.as_str();
            if repo.head_manifest(digest)?.is_none() {
                repo.put_manifest(digest, &m.manifest_bytes, m.media_type())
                    .with_context(|| format!("pushing {} to {}", img.name, t.name()))?;
            }
        }
        for tag in &self.tags {
            let current = repo.head_manifest(tag)?;
            if current.flatten().as_ref() != Some(&img.digest) {
                repo.put_manifest(tag, &img.manifest_bytes, img.media_type())
                    .with_context(|| format!("tagging {}:{tag}", t.name()))?;
            }
        }
        // Then the artifacts that refer to each manifest (their blobs went up with the image's).
        for one in &images {
            if !one.referrers.is_empty() {
                super::referrers::push(&repo, &one.digest, &one.referrers)
                    .with_context(|| format!("pushing the SBOM and provenance of {}", img.name))?;
            }
        }
        remember(
            store,
            &t.registry,
            &t.repository,
            blobs.iter().map(|d| &d.digest),
        );
        Ok(Written {
            reference: t.with_digest(&img.digest),
            uploaded_bytes: uploaded.into_inner(),
            skipped_blobs: skipped.into_inner(),
            mounted_blobs: mounted.into_inner(),
            referrer_bytes: referrer_bytes.into_inner(),
        })
    }
}

enum Outcome {
    Present,
    Mounted,
    Uploaded,
}

fn push_blob(
    repo: &Repo,
    d: &crate::image::Descriptor,
    sources: &[String],
    store: &Store,
) -> Result<Outcome> {
    if repo.head_blob(&d.digest)?.is_some() {
        return Ok(Outcome::Present);
    }
    if !store.has(&d.digest) {
        return Err(usage!(
            "blob {} is not in the store any more; rebuild the image",
            d.digest
        ));
    }
    let mut mounted_session = None;
    for from in sources {
        match repo.start_upload(Some((&d.digest, from))) {
            Ok(Start::Mounted) => return Ok(Outcome::Mounted),
            // Mount declined: the registry opened an ordinary upload session instead.
            Ok(Start::Upload(session)) => {
                mounted_session = Some(session);
                break;
            }
            // A refused or failed mount is not fatal: the plain upload below decides.
            Err(_) => continue,
        }
    }
    // An upload that fails after its retries is checked and, if need be, started again (twice
    // at most): the registry may have stored the blob and only the answer was lost, or it may
    // have dropped the session (`BLOB_UPLOAD_UNKNOWN`) instead of resuming it.
    let mut restarts = 0;
    loop {
        let session = match mounted_session.take() {
            Some(s) => Start::Upload(s),
            None => repo.start_upload(None)?,
        };
        let res = match session {
            Start::Upload(session) => repo.upload(session, &d.digest, d.size, store),
            Start::Mounted => Ok(()),
        };
        match res {
            Err(e) if super::error::is_final(&e) => return Err(e),
            Err(e) => {
                if repo.head_blob(&d.digest).ok().flatten() == Some(d.size) {
                    return Ok(Outcome::Uploaded);
                }
                if restarts >= 2 {
                    return Err(e);
                }
                restarts += 1;
            }
            Ok(()) => return Ok(Outcome::Uploaded),
        }
    }
}
