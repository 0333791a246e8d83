//! Registries: pull bases by digest (pinned in `imgbuild.lock`), push built images, pull images
//! for `imgbuild verify REFERENCE`.
//!
//! `reference` parses and normalises names, `credentials` finds logins, `auth` parses challenges
//! and token answers, `client` speaks the distribution protocol (`transport` sends and retries,
//! `session` authenticates, `manifests` and `blobs` are the requests, `error` the typed
//! failures), `lock` keeps `imgbuild.lock`, `push` is the registry `Destination`, `referrers` pushes
//! and lists an image's SBOM and provenance (referrers API, else the tag schema).

pub mod auth;
mod blobs;
pub mod client;
pub mod credentials;
pub mod error;
pub mod known;
pub mod lock;
mod manifests;
pub mod options;
pub mod push;
pub mod reference;
pub mod referrers;
mod repo;
mod session;
mod transport;

use crate::digest::Digest;
use crate::image::{BaseImage, ImageConfig, Index, Manifest, Platform, MT_DOCKER_LIST, MT_INDEX};
use crate::store::Store;
use crate::usage;
use anyhow::{bail, Context, Result};
use client::{Client, Fetched, Repo};
use lock::{LockFile, Locked};
use reference::Reference;
use std::path::Path;

pub use known::{known_repositories, remember};
pub use options::Options;
pub use push::RegistryDest;

/// Whether a base as written in imgbuild.toml names a registry image.
pub fn is_reference(written: &str) -> bool {
    written != "scratch" && !written.starts_with("oci:") && !written.starts_with("image:")
}

fn parse(written: &str, what: &str) -> Result<Reference> {
    Reference::parse(written).map_err(|e| usage!("{what}: {e}"))
}

/// A registry client for `r`, created on first use (a locked base already in the store
/// needs no network at all).
struct Lazy<'a> {
    r: &'a Reference,
    opts: &'a Options,
    client: Option<Client>,
}

impl<'a> Lazy<'a> {
    fn get(&mut self) -> Result<&Client> {
        if self.client.is_none() {
            self.client = Some(
                Client::new(&self.r.registry, self.opts)?
                    .with_repository_credentials(&self.r.repository, self.opts),
            );
        }
        Ok(self.client.as_ref().unwrap())
    }
}

/// A manifest or index by digest: from the store when it is there, else from the registry
/// (then stored). `None` when the registry does not have it.
fn by_digest(lazy: &mut Lazy, store: &Store, d: &Digest) -> Result<Option<Fetched>> {
    if store.has(d) {
        let bytes = store.read(d)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("stored manifest {d} is not JSON"))?;
        let media_type = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(String::from)
            .unwrap_or_else(|| {
                if v.get("manifests").is_some() {
                    MT_INDEX.into()
                } else {
                    crate::image::MT_MANIFEST.into()
                }
            });
        return Ok(Some(Fetched {
            bytes,
            media_type,
            digest: d.clone(),
        }));
    }
    let repo_name = lazy.r.repository.clone();
    let c = lazy.get()?;
    let f = Repo::pull(c, &repo_name).get_manifest(d.as_str())?;
    if let Some(f) = &f {
        store.put(&f.bytes)?;
    }
    Ok(f)
}

/// The platform's manifest digest in an index.
fn pick_platform(index: &Fetched, platform: &Platform, what: &str) -> Result<Digest> {
    let idx: Index = serde_json::from_slice(&index.bytes)
        .with_context(|| format!("{what}: index {} is malformed", index.digest))?;
    idx.for_platform(platform)
        .map(|m| m.digest.clone())
        .map_err(|e| usage!("{what}: the image index {} {e}", index.digest))
}

/// Why a tag could not be found: no repository, or no such tag (with the tags there are).
fn not_found(c: &Client, r: &Reference, tag: &str, what: &str) -> anyhow::Error {
    let repo = Repo::pull(c, &r.repository);
    match repo.tags() {
        Ok(None) => usage!(
            "{what}: repository `{}` does not exist on {} (or this login may not see it)",
            r.repository,
            r.registry
        ),
        Ok(Some(tags)) => {
            // Referrers tags (`sha256-<hex>`: an image's SBOM and provenance) are not images.
            let mut shown: Vec<String> = tags
                .into_iter()
                .filter(|t| {
                    !t.strip_prefix("sha256-")
                        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                })
                .take(20)
                .collect();
            if shown.is_empty() {
                shown.push("none".into());
            }
            usage!(
                "{what}: {} has no tag `{tag}` (tags there: {})",
                r.name(),
                shown.join(", ")
            )
        }
        Err(e) => usage!("{what}: {} has no tag `{tag}` ({e})", r.name()),
    }
}

/// Resolves a base written as a registry reference: the locked digest when `imgbuild.lock`
/// has one, else the tag (then locked); config and layers fetched into the store, each checked.
pub fn pull_base(
    written: &str,
    root: &Path,
    platform: &Platform,
    store: &Store,
    opts: &Options,
) -> Result<BaseImage> {
    let what = format!("base `{written}`");
    let r = parse(written, &what)?;
    let mut lazy = Lazy {
        r: &r,
        opts,
        client: None,
    };
    let pkey = platform.to_string();
    let mut locked_from: Option<Digest> = None;
    let manifest_digest = if let Some(d) = &r.digest {
        // Pinned in the reference itself: no lock entry needed.
        let f = by_digest(&mut lazy, store, d)?
            .ok_or_else(|| usage!("{what}: {} does not have manifest {d}", r.name()))?;
        if is_index(&f) {
            pick_platform(&f, platform, &what)?
        } else {
            d.clone()
        }
    } else {
        let mut lockf = LockFile::load(root)?;
        let entry = lockf.base.get(written).cloned();
        match entry {
            Some(Locked { manifests, .. })
                if !opts.update_lock && manifests.contains_key(&pkey) =>
            {
                let d = manifests[&pkey].clone();
                locked_from = Some(d.clone());
                d
            }
            Some(Locked {
                index: Some(i),
                mut manifests,
            }) if !opts.update_lock => {
                // A new platform of a locked index: resolved from the locked index, not the tag.
                let f = by_digest(&mut lazy, store, &i)?
                    .ok_or_else(|| locked_gone(&r, written, &i, root))?;
                let d = pick_platform(&f, platform, &what)?;
                manifests.insert(pkey.clone(), d.clone());
                lockf.base.insert(
                    written.to_string(),
                    Locked {
                        index: Some(i),
                        manifests,
                    },
                );
                lockf.save(root)?;
                d
            }
            _ => {
                let tag = r.target();
                let c = lazy.get()?;
                let f = Repo::pull(c, &r.repository)
                    .get_manifest(&tag)
                    .with_context(|| what.clone())?
                    .ok_or_else(|| not_found(c, &r, &tag, &what))?;
                store.put(&f.bytes)?;
                let mut entry = Locked::default();
                let d = if is_index(&f) {
                    entry.index = Some(f.digest.clone());
                    pick_platform(&f, platform, &what)?
                } else {
                    f.digest.clone()
                };
                entry.manifests.insert(pkey.clone(), d.clone());
                lockf.base.insert(written.to_string(), entry);
                lockf.save(root)?;
                d
            }
        }
    };
    let f = by_digest(&mut lazy, store, &manifest_digest)?.ok_or_else(|| match &locked_from {
        Some(d) => locked_gone(&r, written, d, root),
        None => usage!(
            "{what}: {} does not have manifest {manifest_digest}",
            r.name()
        ),
    })?;
    if is_index(&f) {
        bail!(usage!(
            "{what}: {manifest_digest} is an index where an image manifest was expected"
        ));
    }
    let (manifest, config_bytes, config) = fetch_image(&mut lazy, store, &f, &what)?;
    crate::image::check_base(written, &config, &manifest.layers, platform)?;
    store.put(&config_bytes)?;
    let mut layers = Vec::new();
    for d in &manifest.layers {
        layers.push(crate::image::normalise_layer(d)?);
    }
    Ok(BaseImage {
        name: written.to_string(),
        digest: Some(manifest_digest),
        config,
        layers,
    })
}

fn is_index(f: &Fetched) -> bool {
    f.is_index() || f.media_type == MT_DOCKER_LIST
}

fn locked_gone(r: &Reference, written: &str, d: &Digest, root: &Path) -> anyhow::Error {
    anyhow::Error::new(
        crate::error::UsageError::new(format!(
            "base `{written}` is locked to {d} in {}, but {} no longer has that manifest",
            lock::path(root).display(),
            r.name()
        ))
        .hint(format!(
            "run `imgbuild lock --update` to re-resolve `{written}` (and review the new \
             digest), or pin another digest in imgbuild.toml"
        )),
    )
}

/// Config and layers of a manifest, fetched into the store (each blob's digest and size
/// checked; blobs already there are not fetched again).
fn fetch_image(
    lazy: &mut Lazy,
    store: &Store,
    f: &Fetched,
    what: &str,
) -> Result<(Manifest, Vec<u8>, ImageConfig)> {
    let manifest: Manifest = serde_json::from_slice(&f.bytes)
        .with_context(|| format!("{what}: manifest {} is malformed", f.digest))?;
    let repo_name = lazy.r.repository.clone();
    let registry = lazy.r.registry.clone();
    let mut need: Vec<&crate::image::Descriptor> = Vec::new();
    for d in std::iter::once(&manifest.config).chain(manifest.layers.iter()) {
        if !store.has(&d.digest) {
            need.push(d);
        }
    }
    if !need.is_empty() {
        let c = lazy.get()?;
        let repo = Repo::pull(c, &repo_name);
        // Largest first, three at a time; the first failure is reported.
        need.sort_by_key(|d| std::cmp::Reverse(d.size));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
        std::thread::scope(|sc| {
            for _ in 0..need.len().min(3) {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= need.len() || failed.lock().unwrap().is_some() {
                        break;
                    }
                    if let Err(e) = repo.fetch_blob(&need[i].digest, need[i].size, store) {
                        failed.lock().unwrap().get_or_insert(e);
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap() {
            return Err(e.context(what.to_string()));
        }
    }
    remember(
        store,
        &registry,
        &repo_name,
        std::iter::once(&manifest.config)
            .chain(manifest.layers.iter())
            .map(|d| &d.digest),
    );
    let config_bytes = store.read(&manifest.config.digest)?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
        usage!(
            "{what}: config {} is not a valid image config: {e}",
            manifest.config.digest
        )
    })?;
    Ok((manifest, config_bytes, config))
}

/// The manifest (or index) a reference names: by its digest (from the store when there), else
/// by its tag, stored.
fn top_manifest(lazy: &mut Lazy, store: &Store, what: &str) -> Result<Fetched> {
    let r = lazy.r;
    match &r.digest {
        Some(d) => by_digest(lazy, store, d)?
            .ok_or_else(|| usage!("{} does not have manifest {d}", r.name())),
        None => {
            let tag = r.target();
            let c = lazy.get()?;
            let f = Repo::pull(c, &r.repository)
                .get_manifest(&tag)?
                .ok_or_else(|| not_found(c, r, &tag, what))?;
            store.put(&f.bytes)?;
            Ok(f)
        }
    }
}

/// Pulls an image for `imgbuild verify`: the manifest (for `platform` when the reference names
/// an index), its config and layers into the store. Returns the manifest digest and manifest.
pub fn pull_image(
    written: &str,
    platform: &Platform,
    store: &Store,
    opts: &Options,
) -> Result<(Reference, Digest, Manifest)> {
    let what = format!("`{written}`");
    let r = parse(written, &what)?;
    let mut lazy = Lazy {
        r: &r,
        opts,
        client: None,
    };
    let top = top_manifest(&mut lazy, store, &what)?;
    let f = if is_index(&top) {
        let d = pick_platform(&top, platform, &what)?;
        by_digest(&mut lazy, store, &d)?
            .ok_or_else(|| usage!("{} does not have manifest {d}", r.name()))?
    } else {
        top
    };
    let (manifest, _, _) = fetch_image(&mut lazy, store, &f, &what)?;
    Ok((r, f.digest, manifest))
}

/// The platforms of the image `written` names, when it is an index (its top digest, and each
/// platform in the index's order, attestation entries such as `unknown/unknown` left out);
/// an empty list for a single image.
pub fn platforms_of(
    written: &str,
    store: &Store,
    opts: &Options,
) -> Result<(Digest, Vec<Platform>)> {
    let what = format!("`{written}`");
    let r = parse(written, &what)?;
    let mut lazy = Lazy {
        r: &r,
        opts,
        client: None,
    };
    let top = top_manifest(&mut lazy, store, &what)?;
    if !is_index(&top) {
        return Ok((top.digest, vec![]));
    }
    let idx: Index = serde_json::from_slice(&top.bytes)
        .with_context(|| format!("{what}: index {} is malformed", top.digest))?;
    let platforms = idx
        .manifests
        .iter()
        .filter_map(|m| m.platform.clone())
        .filter(|p| p.os != "unknown" && p.architecture != "unknown")
        .collect();
    Ok((top.digest, platforms))
}

/// Registry settings for a project: its `insecure_registries` plus `--insecure` hosts, and
/// environment credentials limited to the registries its images are pushed to.
pub fn options_for_project(spec: &crate::spec::Spec, cli_insecure: &[String]) -> Options {
    let mut o = options_for(&spec.insecure_registries, cli_insecure);
    let mut hosts: Vec<String> = spec
        .images
        .values()
        .filter_map(|i| i.repository.as_deref())
        .filter_map(|r| Reference::parse(r).ok())
        .map(|r| r.registry)
        .collect();
    hosts.sort();
    hosts.dedup();
    o.env.env_hosts = Some(hosts);
    o
}

/// Registry settings for a project: its `insecure_registries` plus `--insecure` hosts.
pub fn options_for(spec_insecure: &[String], cli_insecure: &[String]) -> Options {
    let mut insecure: Vec<String> = spec_insecure.to_vec();
    insecure.extend(cli_insecure.iter().cloned());
    Options {
        insecure,
        ..Default::default()
    }
}
