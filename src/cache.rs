//! Build caches: the stat cache (file identity → content hash) and the layer cache
//! (input key → layer blob), both stored as records in the blob store's directory; and
//! `Remote`, the records other machines shared (the shared cache behind the local store).

use crate::digest::Digest;
use crate::image::Descriptor;
use crate::layer::LayerBlob;
use crate::rootfs::Listing;
use crate::store::{write_atomic, Store};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufReader;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct StatEntry {
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    ino: u64,
    sha256: String,
}

/// What identifies a file's content without reading it: size, mtime and inode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FileId {
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: i64,
    pub ino: u64,
}

impl FileId {
    pub fn of(md: &fs::Metadata) -> FileId {
        FileId {
            size: md.len(),
            mtime: md.mtime(),
            mtime_ns: md.mtime_nsec(),
            ino: md.ino(),
        }
    }
}

/// Remembers content hashes by (path, size, mtime, inode) so an unchanged file is never re-read.
pub struct StatCache {
    file: PathBuf,
    entries: Mutex<BTreeMap<String, StatEntry>>,
    dirty: Mutex<bool>,
}

impl StatCache {
    /// Loads the stat cache of the project at `root`.
    pub fn load(store: &Store, root: &Path) -> StatCache {
        let file = store
            .root()
            .join("stat")
            .join(format!("{}.json", crate::key::stat_cache(root)));
        let entries = fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        StatCache {
            file,
            entries: Mutex::new(entries),
            dirty: Mutex::new(false),
        }
    }

    /// The remembered sha256 (hex) of the file at `path` with identity `id`, without reading it.
    pub fn lookup(&self, path: &Path, id: &FileId) -> Option<String> {
        let entries = self.entries.lock().unwrap();
        let e = entries.get(path.to_string_lossy().as_ref())?;
        (e.size == id.size && e.mtime == id.mtime && e.mtime_ns == id.mtime_ns && e.ino == id.ino)
            .then(|| e.sha256.clone())
    }

    /// The sha256 (hex) of the file at `path` with identity `id`, reading it only when needed.
    pub fn hash(&self, path: &Path, id: &FileId) -> io::Result<String> {
        if let Some(h) = self.lookup(path, id) {
            return Ok(h);
        }
        let sha = hash_file(path)?;
        self.remember(path, id, &sha);
        Ok(sha)
    }

    /// Records that the file with identity `id` (taken before reading it) hashes to `sha`.
    pub fn remember(&self, path: &Path, id: &FileId, sha: &str) {
        // A file modified in the last two seconds may change again within the same mtime tick
        // ("racy" entry, as git calls it): do not remember it.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if now - id.mtime > 2 {
            let e = StatEntry {
                size: id.size,
                mtime: id.mtime,
                mtime_ns: id.mtime_ns,
                ino: id.ino,
                sha256: sha.to_string(),
            };
            self.entries
                .lock()
                .unwrap()
                .insert(path.to_string_lossy().into_owned(), e);
            *self.dirty.lock().unwrap() = true;
        }
    }

    pub fn save(&self) -> Result<()> {
        if *self.dirty.lock().unwrap() {
            let entries = self.entries.lock().unwrap();
            write_atomic(&self.file, &serde_json::to_vec(&*entries)?)?;
        }
        Ok(())
    }
}

pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// What the layer cache remembers for an input key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CachedLayer {
    pub blob: LayerBlob,
    /// Human summary of the inputs, used by `-v` to explain a miss.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

pub fn get_layer(store: &Store, key: &str) -> Option<CachedLayer> {
    let c: CachedLayer = store.get_record("layers", key)?;
    // Only a hit when the blob is really there, with the recorded size.
    (store.size(&c.blob.digest) == Some(c.blob.size)).then_some(c)
}

pub fn put_layer(store: &Store, key: &str, c: &CachedLayer) -> Result<()> {
    store.put_record("layers", key, c)
}

/// The listing (paths and content hashes) of a layer, by diff_id.
pub fn get_listing(store: &Store, diff_id: &Digest) -> Option<Listing> {
    store.get_record(LISTINGS, diff_id.hex())
}

pub fn put_listing(store: &Store, diff_id: &Digest, l: &Listing) -> Result<()> {
    store.put_record(LISTINGS, diff_id.hex(), l)
}

/// The layer cached under `key`, or the one `write` makes, then cached under `key` with its
/// listing (for layers made outside a recipe: a base from the Debian archive, a build root's
/// packages).
pub fn layer_or(
    store: &Store,
    key: &str,
    write: impl FnOnce() -> Result<(LayerBlob, Listing)>,
) -> Result<LayerBlob> {
    if let Some(hit) = get_layer(store, key) {
        return Ok(hit.blob);
    }
    let (blob, listing) = write()?;
    put_listing(store, &blob.diff_id, &listing)?;
    put_layer(
        store,
        key,
        &CachedLayer {
            blob: blob.clone(),
            inputs: BTreeMap::new(),
        },
    )?;
    Ok(blob)
}

/// Record kind of listings; renamed when what a listing holds changes (v2: captured text; v3: ELF interpreters; v4: every ELF file's needs, loader configuration).
const LISTINGS: &str = "listings-v4";

/// The listing of a stored layer: from the cache, or by reading the blob (checking its diff_id).
pub fn listing(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<Listing> {
    if let Some(l) = get_listing(store, diff_id) {
        return Ok(l);
    }
    let listing = crate::layer::read::read_layer(
        BufReader::new(store.open_blob(&layer.digest)?),
        layer,
        diff_id,
    )?;
    put_listing(store, diff_id, &listing)?;
    Ok(listing)
}

/// Records other machines made, behind the local store: the shared cache (`sharedcache`
/// implements it; recipes see it as `Ctx::remote`). Small JSON records by kind and key, like
/// the store's, with the blobs they name (a built wheel). A remote never fails a build: a
/// lookup that cannot be answered is a miss.
pub trait Remote: Send + Sync {
    /// The record `kind`/`key`, with the blobs it names now in `store` (downloaded and
    /// digest-checked); `None` on a miss. The caller checks what the record says before using
    /// it and calls `reject` when it does not hold (warned once; rewritten by the next `put`).
    fn get(&self, kind: &str, key: &str, store: &Store) -> Option<Vec<u8>>;
    /// Shares record `kind`/`key` (with `blobs`, in the local store) after the build; nothing
    /// in read mode.
    fn put(&self, kind: &str, key: &str, record: Vec<u8>, blobs: Vec<Digest>);
    /// A record `get` returned is unusable, for the reason given.
    fn reject(&self, kind: &str, key: &str, why: &str);
    /// Whether facts read from a base image's bytes (the python target) may be taken from the
    /// remote unchecked: true when this build does not need the base's bytes (a push to the
    /// cache's registry); else they are computed from the bytes here.
    fn trusts_base_facts(&self) -> bool;
}

/// A record of `kind`/`key`: from the local store, else from `remote` (then kept locally);
/// `check` decides whether a remote record is usable (else the remote is told why).
pub fn get_shared<T: Serialize + serde::de::DeserializeOwned>(
    store: &Store,
    remote: Option<&dyn Remote>,
    kind: &str,
    key: &str,
    check: impl FnOnce(&T) -> std::result::Result<(), String>,
) -> Option<T> {
    if let Some(v) = store.get_record(kind, key) {
        return Some(v);
    }
    let r = remote?;
    let bytes = r.get(kind, key, store)?;
    let v: T = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            r.reject(kind, key, &format!("it is malformed: {e}"));
            return None;
        }
    };
    if let Err(why) = check(&v) {
        r.reject(kind, key, &why);
        return None;
    }
    let _ = store.put_record(kind, key, &v);
    Some(v)
}

/// Keeps record `kind`/`key` in the store and shares it through `remote` (with `blobs`).
pub fn put_shared<T: Serialize>(
    store: &Store,
    remote: Option<&dyn Remote>,
    kind: &str,
    key: &str,
    value: &T,
    blobs: Vec<Digest>,
) -> Result<()> {
    store.put_record(kind, key, value)?;
    if let Some(r) = remote {
        r.put(kind, key, serde_json::to_vec(value)?, blobs);
    }
    Ok(())
}

/// The last inputs seen for a layer (`key::last_inputs`), to explain cache misses.
pub fn last_inputs(store: &Store, key: &str) -> Option<BTreeMap<String, String>> {
    store.get_record("last-inputs", key)
}

pub fn put_last_inputs(store: &Store, key: &str, inputs: &BTreeMap<String, String>) -> Result<()> {
    store.put_record("last-inputs", key, inputs)
}

/// Describes how two input summaries differ, for `-v`.
pub fn explain_change(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in new {
        match old.get(k) {
            None => out.push(format!("added {k}")),
            Some(o) if o != v => out.push(format!("changed {k}")),
            _ => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(format!("removed {k}"));
    }
    out
}
