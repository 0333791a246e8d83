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
use std::cell::OnceCell;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Media type of a layer record (the artifact's config).
pub const MT_RECORD: &str = "application/vnd.imgbuild.cache.layer.v1+json";
/// Media type of a layer listing blob (`rootfs::Listing` as JSON).
pub const MT_LISTING: &str = "application/vnd.imgbuild.listing.v4+json";
/// Media type of a layer's SBOM facts blob (`sbom::LayerFacts` as JSON), the optional third blob.
pub const MT_FACTS: &str = "application/vnd.imgbuild.sbom-facts.v1+json";
/// The artifact type of a layer record's manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.imgbuild.cache.layer.v1";
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

/// The shared cache of one `imgbuild build`: a client made (and the repository probed) on
/// first use; after an unreachable probe or repeated failures it is off for the build.
pub struct SharedCache {
    pub settings: Settings,
    target: Reference,
    opts: RegistryOptions,
    client: OnceCell<Option<Client>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    report: SharedCacheReport,
    failures: usize,
    off: bool,
    /// Keys whose record was ignored: rewritten by `publish` when the layer is built.
    ignored: std::collections::HashSet<String>,
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
            client: OnceCell::new(),
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
        let http = crate::http::client()?;
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

    /// Pushes the records of `layers` (key, blob, listing) the repository does not have yet:
    /// each layer blob HEADed first, mounted from a repository of the registry known to hold it,
    /// or uploaded; then the listing, the record and the tagged manifest. Nothing in read
    /// mode; failures are warned about, never returned.
    pub fn publish(&self, layers: &[(String, LayerBlob)], store: &Store) {
        if self.settings.mode == CacheMode::Read || layers.is_empty() {
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
    fn a_bad_cache_mode_names_the_line() {
        let text = "[defaults]\ncache_mode = \"rw\"\n";
        let e = Spec::parse(text, Path::new("imgbuild.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("imgbuild.toml:2:14"), "{e}");
        assert!(e.contains("read-write"), "{e}");
    }
}
