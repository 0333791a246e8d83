//! The shared layer cache: layer cache records kept in a registry repository (`cache = "REPO"`
//! in `[defaults]`, `--cache REPO`, `IMGBUILD_CACHE_REPO`), so that a fresh CI runner takes
//! every unchanged layer from there instead of building it.
//!
//! One record per layer key, as a small OCI artifact tagged `layer-<key>` in the cache
//! repository: an image manifest whose config is the record (key, diff_id, digest, size, media
//! type, listing digest; `MT_RECORD`), whose first layer is the listing blob that verification
//! reads (`MT_LISTING`) and whose second is the layer blob itself (pushed once, like any blob,
//! and kept alive by the tag). A lookup reads the manifest, the record and the listing (a few
//! KiB) and HEADs the layer blob; the blob's bytes are downloaded only when an output needs
//! them, and then checked against the record (digest, size, diff_id and the listing).
//!
//! The cache never fails a build: the repository is probed once with a short timeout
//! (`IMGBUILD_CACHE_TIMEOUT`, default 5 s) and, when it cannot be reached, the build goes on
//! without it after one warning; a record that does not match what it names is ignored with one
//! warning and the layer is built. `cache_mode = "read"` looks up and never writes.
//!
//! Beside the layer records, the facts a build reads of its base — each base layer's listing
//! and SBOM facts, tagged `base-<diff_id>` (`MT_BASE_RECORD`) — and small records of other
//! kinds through `cache::Remote`: the python target detected in a base
//! (`python-target-<key>`) and wheels built from sdists (`python-sdist-wheel-<key>`, the
//! wheel as its blob). A runner that pushes to the cache's registry takes its base's facts
//! from there and never reads the base layers' bytes; a build whose output needs the bytes
//! computes them from the bytes and checks a shared listing against them.
//!
//! Trust: whoever can push to the cache repository decides what a hit contains when the bytes
//! are not downloaded (a push to the same registry only HEADs them). Give untrusted jobs
//! `cache_mode = "read"` and pull access only.

use crate::cache;
use crate::digest::Digest;
use crate::image::{Descriptor, Manifest, MT_MANIFEST};
use crate::layer::LayerBlob;
use crate::record::SharedCacheReport;
use crate::registry::client::{Client, Repo, Start};
use crate::registry::reference::{valid_tag, Reference};
use crate::registry::{self, Options as RegistryOptions};
use crate::rootfs::Listing;
use crate::spec::{CacheMode, Spec};
use crate::store::Store;
use crate::usage;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Media type of a layer record (the artifact's config).
pub const MT_RECORD: &str = "application/vnd.imgbuild.cache.layer.v1+json";
/// Media type of a layer listing blob (`rootfs::Listing` as JSON).
pub const MT_LISTING: &str = "application/vnd.imgbuild.listing.v4+json";
/// Media type of a layer's SBOM facts blob (`sbom::LayerFacts` as JSON), the optional third blob.
pub const MT_FACTS: &str = "application/vnd.imgbuild.sbom-facts.v1+json";
/// The artifact type of a layer record's manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.imgbuild.cache.layer.v1";
/// Media type of a base layer's record (the artifact's config): its listing and SBOM facts.
pub const MT_BASE_RECORD: &str = "application/vnd.imgbuild.cache.base-layer.v1+json";
/// The artifact type of a base layer record's manifest.
pub const BASE_ARTIFACT_TYPE: &str = "application/vnd.imgbuild.cache.base-layer.v1";
/// Media type of a small record of another kind (`cache::Remote`; the artifact's config).
pub const MT_KIND_RECORD: &str = "application/vnd.imgbuild.cache.record.v1+json";
/// The artifact type of such a record's manifest.
pub const KIND_ARTIFACT_TYPE: &str = "application/vnd.imgbuild.cache.record.v1";
/// OCI's empty descriptor: the one layer of a record that names no blob.
const MT_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Record kinds shared through `cache::Remote` (a kind not listed is never shared).
const KINDS: &[&str] = &["python-target", "python-sdist-wheel"];
/// Format of a record; a record of another format is a miss.
const FORMAT: u32 = 1;
/// After this many failed requests the cache is left alone for the rest of the build.
const MAX_FAILURES: usize = 3;

/// The cache settings of a build: where, and whether it may write.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// `registry/repository` as written.
    pub repository: String,
    pub mode: CacheMode,
}

/// The cache settings: `--cache`/`--cache-mode`, else `IMGBUILD_CACHE_REPO`/`IMGBUILD_CACHE_MODE`,
/// else `cache`/`cache_mode` in `[defaults]`. An empty repository turns the cache off.
pub fn settings(
    cli_repo: Option<&str>,
    cli_mode: Option<&str>,
    spec: &Spec,
    spec_path: &Path,
) -> Result<Option<Settings>> {
    let env = |k: &str| std::env::var(k).ok();
    let (repository, from) = match (cli_repo, env("IMGBUILD_CACHE_REPO"), &spec.defaults.cache) {
        (Some(r), _, _) => (r.to_string(), "--cache".to_string()),
        (None, Some(r), _) => (r, "IMGBUILD_CACHE_REPO".to_string()),
        (None, None, Some(s)) => {
            let text = std::fs::read_to_string(spec_path).unwrap_or_default();
            let (line, col) = crate::spec::line_col(&text, s.span().start);
            (
                s.get_ref().clone(),
                format!("{}:{line}:{col}: `cache`", spec_path.display()),
            )
        }
        (None, None, None) => return Ok(None),
    };
    let repository = repository.trim().to_string();
    if repository.is_empty() {
        return Ok(None);
    }
    let r = Reference::parse(&repository).map_err(|e| {
        usage!("{from}: {e}; name a repository, e.g. registry.example.com/acme/imgbuild-cache")
    })?;
    if r.tag.is_some() || r.digest.is_some() {
        return Err(usage!(
            "{from}: `{repository}` names a tag or digest; the shared cache is a repository \
             (its tags are made from the layer keys), e.g. {}",
            r.name()
        ));
    }
    let mode = match (cli_mode, env("IMGBUILD_CACHE_MODE")) {
        (Some(m), _) => Some((m.to_string(), "--cache-mode")),
        (None, Some(m)) => Some((m, "IMGBUILD_CACHE_MODE")),
        (None, None) => None,
    };
    let mode = match mode {
        Some((m, from)) => CacheMode::parse(&m)
            .ok_or_else(|| usage!("{from} `{m}`: use `read` or `read-write`"))?,
        None => spec.defaults.cache_mode.unwrap_or_default(),
    };
    Ok(Some(Settings {
        repository: r.name(),
        mode,
    }))
}

/// What the cache repository holds for one layer key (the artifact's config).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub format: u32,
    pub key: String,
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub listing: Digest,
}

/// What the cache repository holds for one base layer (the artifact's config): the blobs of
/// its listing and SBOM facts (`sbom::LayerFacts`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BaseRecord {
    pub format: u32,
    pub diff_id: Digest,
    /// The compressed blob the listing was read from (any compression of the same diff_id
    /// has the same listing).
    pub digest: Digest,
    pub listing: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<Digest>,
}

/// A record of another kind (`cache::Remote`), as the artifact's config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct KindRecord {
    format: u32,
    kind: String,
    key: String,
    record: serde_json::Value,
}

/// A layer found in the shared cache: its blob (in the cache repository, maybe not here) and
/// the listing verification reads.
pub struct Hit {
    pub blob: LayerBlob,
    pub listing: Listing,
}

/// The tag of a layer key's record.
pub fn layer_tag(key: &str) -> String {
    format!("layer-{key}")
}

/// The tag of a base layer's record.
pub fn base_tag(diff_id: &Digest) -> String {
    format!("base-{}", diff_id.hex())
}

/// The tag of record `kind`/`key` (`cache::Remote`).
pub fn kind_tag(kind: &str, key: &str) -> String {
    format!("{kind}-{key}")
}

/// The shared cache of one `imgbuild build`: a client made (and the repository probed) on
/// first use; after an unreachable probe or repeated failures it is off for the build.
pub struct SharedCache {
    pub settings: Settings,
    target: Reference,
    opts: RegistryOptions,
    client: OnceLock<Option<Client>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    report: SharedCacheReport,
    failures: usize,
    off: bool,
    /// Keys whose record was ignored: rewritten by `publish` when the layer is built. Holds
    /// layer keys, and the tags of base and other records.
    ignored: std::collections::HashSet<String>,
    /// Base layers whose records `publish` writes when the repository lacks them.
    bases: Vec<(Descriptor, Digest)>,
    /// Records of other kinds to write after the build: (kind, key, record, blobs).
    pending: Vec<(String, String, Vec<u8>, Vec<Digest>)>,
    /// Whether this image's build may take its base's facts unchecked (`trusts_base_facts`).
    trust_base: bool,
}

impl SharedCache {
    /// The cache of `settings`; `opts` are the build's registry settings (insecure hosts,
    /// credentials), extended to the cache's registry.
    pub fn new(settings: Settings, opts: &RegistryOptions) -> Result<SharedCache> {
        let target = Reference::parse(&settings.repository)
            .map_err(|e| usage!("shared cache `{}`: {e}", settings.repository))?;
        let mut opts = opts.clone();
        if let Some(hosts) = &mut opts.env.env_hosts {
            if !hosts.contains(&target.registry) {
                hosts.push(target.registry.clone());
            }
        }
        let report = SharedCacheReport {
            repository: settings.repository.clone(),
            mode: match settings.mode {
                CacheMode::Read => "read".into(),
                CacheMode::ReadWrite => "read-write".into(),
            },
            reachable: true,
            ..Default::default()
        };
        Ok(SharedCache {
            settings,
            target,
            opts,
            client: OnceLock::new(),
            state: Mutex::new(State {
                report,
                ..Default::default()
            }),
        })
    }

    /// The registry the cache repository is on.
    pub fn registry(&self) -> &str {
        &self.target.registry
    }

    /// What this cache did since the last call (one report per image), starting afresh.
    pub fn take_report(&self) -> SharedCacheReport {
        let mut st = self.state.lock().unwrap();
        let fresh = SharedCacheReport {
            repository: st.report.repository.clone(),
            mode: st.report.mode.clone(),
            reachable: !st.off || st.report.reachable,
            ..Default::default()
        };
        std::mem::replace(&mut st.report, fresh)
    }

    fn warn(&self, msg: &str) {
        eprintln!("warning: shared cache {}: {msg}", self.settings.repository);
        self.state.lock().unwrap().report.warnings += 1;
    }

    /// A request failed: warned about; after `MAX_FAILURES` the cache is off for the build.
    fn failed(&self, what: &str, e: &anyhow::Error) {
        let off = {
            let mut st = self.state.lock().unwrap();
            st.failures += 1;
            if st.failures >= MAX_FAILURES {
                st.off = true;
            }
            st.off
        };
        self.warn(&format!(
            "{what}: {e:#}{}",
            if off {
                "; the build goes on without the shared cache"
            } else {
                ""
            }
        ));
    }

    /// The client, when the cache is on and its registry answered the probe.
    fn client(&self) -> Option<&Client> {
        if self.state.lock().unwrap().off {
            return None;
        }
        self.client
            .get_or_init(|| match self.probe() {
                Ok(c) => Some(c),
                Err(e) => {
                    {
                        let mut st = self.state.lock().unwrap();
                        st.off = true;
                        st.report.reachable = false;
                    }
                    self.warn(&format!(
                        "cannot be reached ({e:#}); building without the shared cache"
                    ));
                    None
                }
            })
            .as_ref()
    }

    /// Makes the client and checks that the registry answers `/v2/` within the cache timeout
    /// (any answer will do: 200, or 401 for a login): one timeout at most, never five retries.
    fn probe(&self) -> Result<Client> {
        let client = Client::new(&self.target.registry, &self.opts)?
            .with_repository_credentials(&self.target.repository, &self.opts);
        let timeout = std::env::var("IMGBUILD_CACHE_TIMEOUT")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(5));
        // The process's one client: building another would load the certificate store again.
        let http = crate::http::shared()?;
        let url = client.url("v2/");
        let mut last = None;
        // A refused connection is retried (it costs nothing); a timeout is not.
        for attempt in 0..3 {
            match http.get(url.clone()).timeout(timeout).send() {
                Ok(r) if r.status().is_server_error() && attempt < 2 => {
                    std::thread::sleep(Duration::from_millis(200));
                    last = Some(anyhow::anyhow!("/v2/ answered {}", r.status()));
                }
                Ok(_) => return Ok(client),
                Err(e) if e.is_timeout() => {
                    return Err(anyhow::anyhow!(
                        "no answer within {:.1} s (IMGBUILD_CACHE_TIMEOUT)",
                        timeout.as_secs_f64()
                    ))
                }
                Err(e) => {
                    last = Some(anyhow::Error::new(e));
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no answer")))
    }

    /// Looks up the record of layer key `key` (layer `name`, for messages). `None` when the
    /// cache has none, cannot be reached, or the record does not hold together (then warned).
    /// The listing is kept in the local store (by diff_id) for verification.
    pub fn lookup(&self, name: &str, key: &str, store: &Store) -> Option<Hit> {
        let client = self.client()?;
        let repo = Repo::pull(client, &self.target.repository);
        match self.lookup_in(&repo, key, store) {
            Ok(Found::Hit(hit)) => {
                let _ = cache::put_listing(store, &hit.blob.diff_id, &hit.listing);
                registry::remember(
                    store,
                    &self.target.registry,
                    &self.target.repository,
                    std::iter::once(&hit.blob.digest),
                );
                self.state.lock().unwrap().report.hits += 1;
                Some(hit)
            }
            Ok(Found::Miss) => None,
            Ok(Found::Ignored(why)) => {
                self.state.lock().unwrap().ignored.insert(key.to_string());
                self.warn(&format!(
                    "the record of layer `{name}` ({}) is ignored: {why}; building the layer",
                    layer_tag(key)
                ));
                None
            }
            Err(e) => {
                self.failed(&format!("looking up layer `{name}`"), &e);
                None
            }
        }
    }

    fn lookup_in(&self, repo: &Repo, key: &str, store: &Store) -> Result<Found> {
        let Some(f) = repo.get_manifest(&layer_tag(key))? else {
            return Ok(Found::Miss);
        };
        let Ok(m) = serde_json::from_slice::<Manifest>(&f.bytes) else {
            return Ok(Found::Ignored(
                "its manifest is not an image manifest".into(),
            ));
        };
        if m.config.media_type != MT_RECORD || !(2..=3).contains(&m.layers.len()) {
            return Ok(Found::Ignored(format!(
                "it is not an imgbuild layer record ({} with {} layers)",
                m.config.media_type,
                m.layers.len()
            )));
        }
        if m.config.size > 64 * 1024 || m.layers[0].size > 256 << 20 {
            return Ok(Found::Ignored("its record or listing is too large".into()));
        }
        let small = |d: &Descriptor| -> Result<Vec<u8>> {
            let n = repo.fetch_blob(&d.digest, d.size, store)?;
            self.state.lock().unwrap().report.record_bytes += n;
            store.read(&d.digest)
        };
        let rec: Record = match serde_json::from_slice(&small(&m.config)?) {
            Ok(r) => r,
            Err(e) => return Ok(Found::Ignored(format!("the record is malformed: {e}"))),
        };
        let layer = &m.layers[1];
        if rec.format != FORMAT {
            return Ok(Found::Miss);
        }
        if rec.key != key {
            return Ok(Found::Ignored(format!(
                "it is the record of another key ({})",
                rec.key
            )));
        }
        if rec.digest != layer.digest
            || rec.size != layer.size
            || rec.media_type != layer.media_type
            || rec.listing != m.layers[0].digest
        {
            return Ok(Found::Ignored(
                "the record and its manifest name different blobs".into(),
            ));
        }
        if crate::compress::Compression::from_media_type(&rec.media_type).is_none() {
            return Ok(Found::Ignored(format!(
                "layer media type `{}` is not one imgbuild writes",
                rec.media_type
            )));
        }
        match repo.head_blob(&rec.digest)? {
            None => {
                return Ok(Found::Ignored(format!(
                    "the cache repository no longer has its layer blob {}",
                    rec.digest
                )))
            }
            Some(n) if n != rec.size => {
                return Ok(Found::Ignored(format!(
                    "its layer blob {} has {n} bytes, the record says {}",
                    rec.digest, rec.size
                )))
            }
            Some(_) => {}
        }
        let listing: Listing = match serde_json::from_slice(&small(&m.layers[0])?) {
            Ok(l) => l,
            Err(e) => return Ok(Found::Ignored(format!("the listing is malformed: {e}"))),
        };
        // The SBOM's facts of the layer (what it reads of its files), when the record has them:
        // kept by diff_id like the facts of a layer written here.
        if let Some(d) = m.layers.get(2).filter(|d| d.media_type == MT_FACTS) {
            if d.size <= 64 << 20 {
                if let Ok(f) = serde_json::from_slice::<crate::sbom::LayerFacts>(&small(d)?) {
                    let _ = store.put_record(crate::sbom::FACTS, rec.diff_id.hex(), &f);
                }
            }
        }
        Ok(Found::Hit(Hit {
            blob: LayerBlob {
                diff_id: rec.diff_id,
                digest: rec.digest,
                size: rec.size,
                media_type: rec.media_type,
            },
            listing,
        }))
    }

    /// Downloads a hit's layer blob into the store and checks it against the record: digest
    /// and size (as it streams in), then diff_id and listing. `Err` says why it is unusable
    /// (the caller warns and builds the layer).
    pub fn download(&self, hit: &Hit, store: &Store) -> Result<()> {
        let b = &hit.blob;
        if !store.has(&b.digest) {
            let client = self
                .client()
                .ok_or_else(|| anyhow::anyhow!("the shared cache is off for this build"))?;
            let repo = Repo::pull(client, &self.target.repository);
            let n = repo.fetch_blob(&b.digest, b.size, store)?;
            self.state.lock().unwrap().report.downloaded_bytes += n;
        }
        let desc = descriptor(b);
        let listing = crate::layer::read::read_layer(
            std::io::BufReader::new(store.open_blob(&b.digest)?),
            &desc,
            &b.diff_id,
        )?;
        if listing != hit.listing {
            bail!(
                "the downloaded layer {} does not have the files its listing names",
                b.digest
            );
        }
        Ok(())
    }

    /// The same as `download`, warning (once per layer) instead of failing.
    pub fn download_or_warn(&self, name: &str, key: &str, hit: &Hit, store: &Store) -> bool {
        match self.download(hit, store) {
            Ok(()) => true,
            Err(e) => {
                self.state.lock().unwrap().ignored.insert(key.to_string());
                self.warn(&format!(
                    "layer `{name}` from the shared cache is ignored: {e:#}; building the layer"
                ));
                false
            }
        }
    }

    /// The facts of `base`'s layers (listing, SBOM facts) from the cache repository, kept in
    /// the local store by diff_id, for each layer the store has none for. When the build does
    /// not need the base's bytes (`needs_bytes` false: a push to the cache's registry) they
    /// are taken as they are and the base's bytes are never read; otherwise a shared listing
    /// is checked against the listing read from the bytes and ignored (one warning, rewritten
    /// after the build) when they differ. Base layers the repository lacks are written by
    /// `publish`.
    pub fn prefetch_base(&self, base: &crate::image::BaseImage, store: &Store, needs_bytes: bool) {
        self.state.lock().unwrap().trust_base = !needs_bytes;
        for (d, diff) in base.layers.iter().zip(&base.config.rootfs.diff_ids) {
            {
                let mut st = self.state.lock().unwrap();
                if !st.bases.iter().any(|(_, x)| x == diff) {
                    st.bases.push((d.clone(), diff.clone()));
                }
            }
            let have_facts = store
                .get_record::<crate::sbom::LayerFacts>(crate::sbom::FACTS, diff.hex())
                .is_some();
            let local = cache::get_listing(store, diff);
            if local.is_some() && (have_facts || needs_bytes) {
                continue;
            }
            let Some(client) = self.client() else { return };
            let repo = Repo::pull(client, &self.target.repository);
            let tag = base_tag(diff);
            let found = match self.base_in(&repo, diff, store) {
                Ok(f) => f,
                Err(e) => {
                    self.failed(&format!("looking up base layer {}", d.digest), &e);
                    continue;
                }
            };
            let why = match found {
                BaseFound::Miss => continue,
                BaseFound::Ignored(why) => why,
                // The listing this store read from the bytes before (only its facts were
                // missing) is the one to keep: the shared one must be the same.
                BaseFound::Hit(listing, facts) if local.is_some() => {
                    if local.as_ref() == Some(&listing) {
                        if let Some(f) = facts {
                            let _ = store.put_record(crate::sbom::FACTS, diff.hex(), &f);
                        }
                        self.state.lock().unwrap().report.base_hits += 1;
                        continue;
                    }
                    format!(
                        "its listing does not match the layer blob {} read here",
                        d.digest
                    )
                }
                BaseFound::Hit(listing, facts) if !needs_bytes => {
                    let _ = cache::put_listing(store, diff, &listing);
                    if let Some(f) = facts {
                        let _ = store.put_record(crate::sbom::FACTS, diff.hex(), &f);
                    }
                    self.state.lock().unwrap().report.base_hits += 1;
                    continue;
                }
                // The bytes are read anyway: the shared listing must be what they hold.
                BaseFound::Hit(listing, _) => match cache::listing(store, d, diff) {
                    Ok(l) if l == listing => {
                        self.state.lock().unwrap().report.base_hits += 1;
                        continue;
                    }
                    Ok(_) => format!(
                        "its listing does not match the layer blob {} read here",
                        d.digest
                    ),
                    // Reading the base fails the build where it is read, with its own error.
                    Err(_) => continue,
                },
            };
            self.state.lock().unwrap().ignored.insert(tag.clone());
            self.warn(&format!(
                "the record of base layer {} ({tag}) is ignored: {why}; reading the layer",
                d.digest
            ));
        }
    }

    fn base_in(&self, repo: &Repo, diff: &Digest, store: &Store) -> Result<BaseFound> {
        let Some(f) = repo.get_manifest(&base_tag(diff))? else {
            return Ok(BaseFound::Miss);
        };
        let Ok(m) = serde_json::from_slice::<Manifest>(&f.bytes) else {
            return Ok(BaseFound::Ignored(
                "its manifest is not an image manifest".into(),
            ));
        };
        if m.config.media_type != MT_BASE_RECORD
            || m.layers.is_empty()
            || m.layers.len() > 2
            || m.layers[0].media_type != MT_LISTING
        {
            return Ok(BaseFound::Ignored(format!(
                "it is not an imgbuild base layer record ({} with {} layers)",
                m.config.media_type,
                m.layers.len()
            )));
        }
        if m.config.size > 64 * 1024 || m.layers.iter().any(|d| d.size > 256 << 20) {
            return Ok(BaseFound::Ignored(
                "its record or listing is too large".into(),
            ));
        }
        let rec: BaseRecord = match serde_json::from_slice(&self.small(repo, &m.config, store)?) {
            Ok(r) => r,
            Err(e) => return Ok(BaseFound::Ignored(format!("the record is malformed: {e}"))),
        };
        if rec.format != FORMAT {
            return Ok(BaseFound::Miss);
        }
        if &rec.diff_id != diff {
            return Ok(BaseFound::Ignored(format!(
                "it is the record of another layer ({})",
                rec.diff_id
            )));
        }
        let facts_d = m.layers.get(1).filter(|d| d.media_type == MT_FACTS);
        if rec.listing != m.layers[0].digest || rec.facts.as_ref() != facts_d.map(|d| &d.digest) {
            return Ok(BaseFound::Ignored(
                "the record and its manifest name different blobs".into(),
            ));
        }
        let listing: Listing =
            match serde_json::from_slice(&self.small(repo, &m.layers[0], store)?) {
                Ok(l) => l,
                Err(e) => return Ok(BaseFound::Ignored(format!("the listing is malformed: {e}"))),
            };
        let facts = match facts_d {
            Some(d) => match serde_json::from_slice(&self.small(repo, d, store)?) {
                Ok(f) => Some(f),
                Err(e) => return Ok(BaseFound::Ignored(format!("the facts are malformed: {e}"))),
            },
            None => None,
        };
        Ok(BaseFound::Hit(listing, facts))
    }

    /// A record (by tag) that does not hold: warned about once, rewritten by `publish`.
    fn ignore(&self, tag: &str, why: &str) {
        self.state.lock().unwrap().ignored.insert(tag.to_string());
        self.warn(&format!("the record {tag} is ignored: {why}"));
    }

    /// A small blob of a record, fetched into the store (digest-checked) and read.
    fn small(&self, repo: &Repo, d: &Descriptor, store: &Store) -> Result<Vec<u8>> {
        let n = repo.fetch_blob(&d.digest, d.size, store)?;
        self.state.lock().unwrap().report.record_bytes += n;
        store.read(&d.digest)
    }

    fn kind_in(&self, repo: &Repo, kind: &str, key: &str, store: &Store) -> Result<KindFound> {
        let Some(f) = repo.get_manifest(&kind_tag(kind, key))? else {
            return Ok(KindFound::Miss);
        };
        let Ok(m) = serde_json::from_slice::<Manifest>(&f.bytes) else {
            return Ok(KindFound::Ignored(
                "its manifest is not an image manifest".into(),
            ));
        };
        if m.config.media_type != MT_KIND_RECORD || m.config.size > 1 << 20 {
            return Ok(KindFound::Ignored(format!(
                "it is not an imgbuild record ({}, {} bytes)",
                m.config.media_type, m.config.size
            )));
        }
        let rec: KindRecord = match serde_json::from_slice(&self.small(repo, &m.config, store)?) {
            Ok(r) => r,
            Err(e) => return Ok(KindFound::Ignored(format!("the record is malformed: {e}"))),
        };
        if rec.format != FORMAT {
            return Ok(KindFound::Miss);
        }
        if rec.kind != kind || rec.key != key {
            return Ok(KindFound::Ignored(format!(
                "it is the record {}",
                kind_tag(&rec.kind, &rec.key)
            )));
        }
        // Its blobs (a built wheel), downloaded and digest-checked.
        for d in m.layers.iter().filter(|d| d.media_type != MT_EMPTY) {
            if d.size > 1 << 30 {
                return Ok(KindFound::Ignored(format!(
                    "its blob {} is too large",
                    d.digest
                )));
            }
            match repo.fetch_blob(&d.digest, d.size, store) {
                Ok(n) => self.state.lock().unwrap().report.downloaded_bytes += n,
                Err(e)
                    if e.chain().any(|c| {
                        matches!(
                            c.downcast_ref::<crate::registry::error::RegistryError>(),
                            Some(crate::registry::error::RegistryError::NotFound { .. })
                        )
                    }) =>
                {
                    return Ok(KindFound::Ignored(format!(
                        "the cache repository no longer has its blob {}",
                        d.digest
                    )))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(KindFound::Hit(serde_json::to_vec(&rec.record)?))
    }

    /// Pushes the records of `layers` (key, blob, listing) the repository does not have yet:
    /// each layer blob HEADed first, mounted from a repository of the registry known to hold it,
    /// or uploaded; then the listing, the record and the tagged manifest. Nothing in read
    /// mode; failures are warned about, never returned.
    ///
    /// Then the records of the base layers `prefetch_base` saw (their listing and SBOM facts
    /// from the local store) and the records of other kinds recipes `put`, each when the
    /// repository does not have it or its copy was ignored.
    pub fn publish(&self, layers: &[(String, LayerBlob)], store: &Store) {
        let (bases, pending) = {
            let mut st = self.state.lock().unwrap();
            (
                std::mem::take(&mut st.bases),
                std::mem::take(&mut st.pending),
            )
        };
        if self.settings.mode == CacheMode::Read
            || (layers.is_empty() && bases.is_empty() && pending.is_empty())
        {
            return;
        }
        let Some(client) = self.client() else { return };
        let mut sources: Vec<String> = Vec::new();
        for (_, b) in layers {
            for r in registry::known_repositories(store, &self.target.registry, &b.digest) {
                if r != self.target.repository && !sources.contains(&r) && sources.len() < 4 {
                    sources.push(r);
                }
            }
        }
        let repo = Repo::push(client, &self.target.repository, &sources);
        for (key, b) in layers {
            if self.state.lock().unwrap().off {
                return;
            }
            if let Err(e) = self.publish_one(&repo, key, b, &sources, store) {
                self.failed(&format!("writing the record {}", layer_tag(key)), &e);
            }
        }
        for (d, diff) in &bases {
            if self.state.lock().unwrap().off {
                return;
            }
            if let Err(e) = self.publish_base(&repo, d, diff, store) {
                self.failed(&format!("writing the record {}", base_tag(diff)), &e);
            }
        }
        for (kind, key, record, blobs) in &pending {
            if self.state.lock().unwrap().off {
                return;
            }
            if let Err(e) = self.publish_kind(&repo, kind, key, record, blobs, store) {
                self.failed(&format!("writing the record {}", kind_tag(kind, key)), &e);
            }
        }
    }

    /// Whether the record tagged `tag` is to be written: the repository lacks it, or its copy
    /// was ignored by this build.
    fn missing(&self, repo: &Repo, tag: &str) -> Result<bool> {
        if !valid_tag(tag) {
            bail!("`{tag}` is not a valid tag");
        }
        let rewrite = self.state.lock().unwrap().ignored.contains(tag);
        Ok(rewrite || repo.head_manifest(tag)?.is_none())
    }

    /// Pushes blob `bytes` (kept in the store) unless the repository has it; its descriptor.
    fn push_small(
        &self,
        repo: &Repo,
        media_type: &str,
        bytes: &[u8],
        store: &Store,
        up: &mut u64,
    ) -> Result<(serde_json::Value, Digest)> {
        let d = store.put(bytes)?;
        *up += push_blob(repo, &d, bytes.len() as u64, &[], store)?;
        Ok((
            serde_json::json!({ "mediaType": media_type, "digest": d, "size": bytes.len() }),
            d,
        ))
    }

    /// Puts the manifest of a record with `config` and `layers` under `tag`.
    fn put_record_manifest(
        &self,
        repo: &Repo,
        tag: &str,
        artifact_type: &str,
        config: serde_json::Value,
        layers: Vec<serde_json::Value>,
        up: u64,
    ) -> Result<()> {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "artifactType": artifact_type,
            "config": config,
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest)?;
        repo.put_manifest(tag, &bytes, MT_MANIFEST)?;
        let mut st = self.state.lock().unwrap();
        st.report.uploaded_bytes += up + bytes.len() as u64;
        st.report.records_written += 1;
        Ok(())
    }

    /// The record of base layer `d` (`diff`): its listing and SBOM facts as the local store
    /// has them (nothing when it has no listing: the base's bytes are not read for it).
    fn publish_base(
        &self,
        repo: &Repo,
        d: &Descriptor,
        diff: &Digest,
        store: &Store,
    ) -> Result<()> {
        let tag = base_tag(diff);
        if !self.missing(repo, &tag)? {
            return Ok(());
        }
        let Some(listing) = cache::get_listing(store, diff) else {
            return Ok(());
        };
        let mut up = 0;
        let (l, listing_d) = self.push_small(
            repo,
            MT_LISTING,
            &serde_json::to_vec(&listing)?,
            store,
            &mut up,
        )?;
        let mut layers = vec![l];
        let mut facts = None;
        if let Some(f) = store.get_record::<crate::sbom::LayerFacts>(crate::sbom::FACTS, diff.hex())
        {
            let (l, fd) =
                self.push_small(repo, MT_FACTS, &serde_json::to_vec(&f)?, store, &mut up)?;
            layers.push(l);
            facts = Some(fd);
        }
        let rec = BaseRecord {
            format: FORMAT,
            diff_id: diff.clone(),
            digest: d.digest.clone(),
            listing: listing_d,
            facts,
        };
        let (config, _) = self.push_small(
            repo,
            MT_BASE_RECORD,
            &serde_json::to_vec(&rec)?,
            store,
            &mut up,
        )?;
        self.put_record_manifest(repo, &tag, BASE_ARTIFACT_TYPE, config, layers, up)
    }

    /// A record of another kind, with its blobs (from the local store).
    fn publish_kind(
        &self,
        repo: &Repo,
        kind: &str,
        key: &str,
        record: &[u8],
        blobs: &[Digest],
        store: &Store,
    ) -> Result<()> {
        let tag = kind_tag(kind, key);
        if !self.missing(repo, &tag)? {
            return Ok(());
        }
        let mut up = 0;
        let mut layers = Vec::new();
        for d in blobs {
            let size = store
                .size(d)
                .ok_or_else(|| anyhow::anyhow!("blob {d} is not in the local store"))?;
            up += push_blob(repo, d, size, &[], store)?;
            layers.push(serde_json::json!({
                "mediaType": "application/octet-stream", "digest": d, "size": size
            }));
        }
        if layers.is_empty() {
            layers.push(self.push_small(repo, MT_EMPTY, b"{}", store, &mut up)?.0);
        }
        let rec = KindRecord {
            format: FORMAT,
            kind: kind.to_string(),
            key: key.to_string(),
            record: serde_json::from_slice(record)?,
        };
        let (config, _) = self.push_small(
            repo,
            MT_KIND_RECORD,
            &serde_json::to_vec(&rec)?,
            store,
            &mut up,
        )?;
        self.put_record_manifest(repo, &tag, KIND_ARTIFACT_TYPE, config, layers, up)
    }

    fn publish_one(
        &self,
        repo: &Repo,
        key: &str,
        b: &LayerBlob,
        sources: &[String],
        store: &Store,
    ) -> Result<()> {
        let tag = layer_tag(key);
        if !valid_tag(&tag) {
            bail!("`{tag}` is not a valid tag");
        }
        let rewrite = self.state.lock().unwrap().ignored.contains(key);
        if !rewrite && repo.head_manifest(&tag)?.is_some() {
            return Ok(());
        }
        let listing = cache::listing(store, &descriptor(b), &b.diff_id)
            .context("reading the layer's listing")?;
        let listing_bytes = serde_json::to_vec(&listing)?;
        let listing_d = store.put(&listing_bytes)?;
        let rec = Record {
            format: FORMAT,
            key: key.to_string(),
            diff_id: b.diff_id.clone(),
            digest: b.digest.clone(),
            size: b.size,
            media_type: b.media_type.clone(),
            listing: listing_d.clone(),
        };
        let rec_bytes = serde_json::to_vec(&rec)?;
        let rec_d = store.put(&rec_bytes)?;
        let mut up = 0;
        up += push_blob(repo, &b.digest, b.size, sources, store)?;
        up += push_blob(repo, &listing_d, listing_bytes.len() as u64, &[], store)?;
        up += push_blob(repo, &rec_d, rec_bytes.len() as u64, &[], store)?;
        let mut blobs = vec![
            serde_json::json!({ "mediaType": MT_LISTING, "digest": listing_d, "size": listing_bytes.len() }),
            serde_json::json!({ "mediaType": b.media_type, "digest": b.digest, "size": b.size }),
        ];
        if let Some(f) =
            store.get_record::<crate::sbom::LayerFacts>(crate::sbom::FACTS, b.diff_id.hex())
        {
            let fb = serde_json::to_vec(&f)?;
            let fd = store.put(&fb)?;
            up += push_blob(repo, &fd, fb.len() as u64, &[], store)?;
            blobs
                .push(serde_json::json!({ "mediaType": MT_FACTS, "digest": fd, "size": fb.len() }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": { "mediaType": MT_RECORD, "digest": rec_d, "size": rec_bytes.len() },
            "layers": blobs,
        });
        let bytes = serde_json::to_vec(&manifest)?;
        repo.put_manifest(&tag, &bytes, MT_MANIFEST)?;
        let mut st = self.state.lock().unwrap();
        st.report.uploaded_bytes += up + bytes.len() as u64;
        st.report.records_written += 1;
        Ok(())
    }
}

enum Found {
    Hit(Hit),
    Miss,
    Ignored(String),
}

enum BaseFound {
    Hit(Listing, Option<crate::sbom::LayerFacts>),
    Miss,
    Ignored(String),
}

enum KindFound {
    Hit(Vec<u8>),
    Miss,
    Ignored(String),
}

impl cache::Remote for SharedCache {
    fn get(&self, kind: &str, key: &str, store: &Store) -> Option<Vec<u8>> {
        if !KINDS.contains(&kind) || !valid_tag(&kind_tag(kind, key)) {
            return None;
        }
        let client = self.client()?;
        let repo = Repo::pull(client, &self.target.repository);
        match self.kind_in(&repo, kind, key, store) {
            Ok(KindFound::Hit(bytes)) => {
                self.state.lock().unwrap().report.record_hits += 1;
                Some(bytes)
            }
            Ok(KindFound::Miss) => None,
            Ok(KindFound::Ignored(why)) => {
                self.ignore(&kind_tag(kind, key), &why);
                None
            }
            Err(e) => {
                self.failed(&format!("looking up {}", kind_tag(kind, key)), &e);
                None
            }
        }
    }

    fn put(&self, kind: &str, key: &str, record: Vec<u8>, blobs: Vec<Digest>) {
        if self.settings.mode == CacheMode::Read || !KINDS.contains(&kind) {
            return;
        }
        let mut st = self.state.lock().unwrap();
        if !st.pending.iter().any(|(k, x, _, _)| k == kind && x == key) {
            st.pending
                .push((kind.to_string(), key.to_string(), record, blobs));
        }
    }

    fn reject(&self, kind: &str, key: &str, why: &str) {
        {
            // `get` counted it as a hit; its reader refused it.
            let mut st = self.state.lock().unwrap();
            st.report.record_hits = st.report.record_hits.saturating_sub(1);
        }
        self.ignore(&kind_tag(kind, key), why);
    }

    fn trusts_base_facts(&self) -> bool {
        self.state.lock().unwrap().trust_base
    }
}

fn descriptor(b: &LayerBlob) -> Descriptor {
    Descriptor {
        media_type: b.media_type.clone(),
        digest: b.digest.clone(),
        size: b.size,
        platform: None,
        annotations: Default::default(),
        artifact_type: None,
    }
}

/// One blob into the cache repository: skipped when there, mounted when another repository of
/// the registry has it, else uploaded from the store. Returns the bytes uploaded.
fn push_blob(repo: &Repo, d: &Digest, size: u64, sources: &[String], store: &Store) -> Result<u64> {
    if repo.head_blob(d)?.is_some() {
        return Ok(0);
    }
    let mut session = None;
    for from in sources {
        match repo.start_upload(Some((d, from))) {
            Ok(Start::Mounted) => return Ok(0),
            Ok(Start::Upload(s)) => {
                session = Some(s);
                break;
            }
            Err(_) => continue,
        }
    }
    if !store.has(d) {
        bail!("blob {d} is not in the local store");
    }
    let session = match session {
        Some(s) => s,
        None => match repo.start_upload(None)? {
            Start::Upload(s) => s,
            Start::Mounted => return Ok(0),
        },
    };
    repo.upload(session, d, size, store)?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> (tempfile::TempDir, Spec, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imgbuild.toml");
        std::fs::write(&p, text).unwrap();
        let s = Spec::parse(text, &p).unwrap();
        (dir, s, p)
    }

    #[test]
    fn settings_come_from_the_flag_over_the_file() {
        let (_d, s, p) = spec(
            "[defaults]\ncache = \"registry.example.com/acme/cache\"\ncache_mode = \"read\"\n",
        );
        let got = settings(None, None, &s, &p).unwrap().unwrap();
        assert_eq!(got.repository, "registry.example.com/acme/cache");
        assert_eq!(got.mode, CacheMode::Read);
        let got = settings(Some("127.0.0.1:5000/c"), Some("read-write"), &s, &p)
            .unwrap()
            .unwrap();
        assert_eq!(got.repository, "127.0.0.1:5000/c");
        assert_eq!(got.mode, CacheMode::ReadWrite);
        assert_eq!(settings(Some(""), None, &s, &p).unwrap(), None);
    }

    #[test]
    fn a_cache_with_a_tag_is_refused_with_its_line() {
        let (_d, s, p) =
            spec("[defaults]\nplatform = \"linux/amd64\"\ncache = \"reg.example.com/c:latest\"\n");
        let e = settings(None, None, &s, &p).unwrap_err().to_string();
        assert!(e.contains("imgbuild.toml:3:9: `cache`"), "{e}");
        assert!(e.contains("names a tag or digest"), "{e}");
        let (_d2, s, p) = spec("[defaults]\ncache = \"reg.example.com/c\"\n");
        let e = settings(None, Some("write"), &s, &p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--cache-mode `write`: use `read` or `read-write`"),
            "{e}"
        );
    }

    #[test]
    fn every_record_tag_is_a_valid_tag() {
        let key = "ab".repeat(32);
        let diff = Digest::parse(&format!("sha256:{key}")).unwrap();
        assert!(valid_tag(&layer_tag(&key)));
        assert!(valid_tag(&base_tag(&diff)));
        for kind in KINDS {
            assert!(valid_tag(&kind_tag(kind, &key)), "{kind}");
        }
    }

    #[test]
    fn a_bad_cache_mode_names_the_line() {
        let text = "[defaults]\ncache_mode = \"rw\"\n";
        let e = Spec::parse(text, Path::new("imgbuild.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("imgbuild.toml:2:14"), "{e}");
        assert!(e.contains("read-write"), "{e}");
    }
}
