//! Build caches: the stat cache (file identity → content hash) and the layer cache
//! (input key → layer blob), both stored as records in the blob store's directory; and
//! `Remote`, the records other machines shared (the shared cache behind the local store).

use crate::digest::Digest;
use crate::image::Descriptor;
use crate::layer::LayerBlob;
use crate::rootfs::Listing;
use crate::store::Store;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::BufReader;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

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

/// The stat cache file's first bytes; records follow (see `Record`). Another version's file is
/// ignored (every file is hashed once more, then the new file is written).
const STAT_MAGIC: &[u8; 16] = b"imgbuild-stat-2\n";
/// One record after the path: size, mtime, mtime_ns, inode (little-endian 8 bytes each), sha256.
const RECORD: usize = 4 * 8 + 32;

/// A remembered file: its identity and content hash.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Known {
    id: FileId,
    sha256: [u8; 32],
}

impl Known {
    fn parse(b: &[u8]) -> Known {
        let n = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        Known {
            id: FileId {
                size: n(0),
                mtime: n(1) as i64,
                mtime_ns: n(2) as i64,
                ino: n(3),
            },
            sha256: b[32..64].try_into().unwrap(),
        }
    }
    fn put(&self, path: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path);
        for n in [
            self.id.size,
            self.id.mtime as u64,
            self.id.mtime_ns as u64,
            self.id.ino,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.sha256);
    }
}

/// A fast hash of a path's bytes (FNV-style, 8 bytes a step): the stat cache's index needs no
/// per-entry allocation, and it is several times cheaper than SipHash on long paths. Not
/// resistant to chosen collisions, which only cost a lookup miss (a file hashed again) here.
pub fn path_key(p: &[u8]) -> u64 {
    let mut h = PathHasher::default();
    std::hash::Hasher::write(&mut h, p);
    std::hash::Hasher::finish(&h)
}

/// The `Hasher` of `path_key`, for maps keyed by paths (or by `path_key`s).
pub struct PathHasher(u64);
impl Default for PathHasher {
    fn default() -> Self {
        PathHasher(0xcbf2_9ce4_8422_2325)
    }
}
impl std::hash::Hasher for PathHasher {
    fn finish(&self) -> u64 {
        // A final mix, so that a map's low bits depend on every byte.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut it = bytes.chunks_exact(8);
        for c in &mut it {
            h = (h ^ u64::from_le_bytes(c.try_into().unwrap()))
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(29);
        }
        let rest = it.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            h = (h ^ u64::from_le_bytes(w))
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(29);
        }
        self.0 = h ^ bytes.len() as u64;
    }
    fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A `HashMap` hashed with `PathHasher`.
pub type PathMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<PathHasher>>;

/// The file as loaded: never changed after loading, so the walk's threads read it without a lock.
#[derive(Default)]
struct Table {
    /// Records in the binary format above.
    loaded: Vec<u8>,
    /// Path key → offset of its record in `loaded` (the path's length prefix).
    index: PathMap<u64, u32>,
}

/// Learnt in this run, by path.
type Learnt = PathMap<Vec<u8>, Known>;

impl Table {
    fn parse(bytes: Vec<u8>) -> Option<Table> {
        let body = bytes.strip_prefix(STAT_MAGIC)?;
        let mut index = PathMap::default();
        index.reserve(body.len() / 120);
        let mut at = STAT_MAGIC.len();
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
            let end = at + 4 + len + RECORD;
            let path = bytes.get(at + 4..at + 4 + len)?;
            if end > bytes.len() {
                return None;
            }
            index.insert(path_key(path), at as u32);
            at = end;
        }
        Some(Table {
            loaded: bytes,
            index,
        })
    }

    fn loaded_at(&self, at: usize) -> (&[u8], Known) {
        let len = u32::from_le_bytes(self.loaded[at..at + 4].try_into().unwrap()) as usize;
        let path = &self.loaded[at + 4..at + 4 + len];
        (
            path,
            Known::parse(&self.loaded[at + 4 + len..at + 4 + len + RECORD]),
        )
    }

    fn get(&self, path: &[u8]) -> Option<Known> {
        let &at = self.index.get(&path_key(path))?;
        let (p, k) = self.loaded_at(at as usize);
        (p == path).then_some(k)
    }

    /// The file again, with `learnt` in it, written to `w` through a small buffer (held
    /// whole, the file of 100k new files was 16 MB at a cold build's peak).
    fn encode(&self, learnt: &Learnt, w: &mut dyn Write) -> io::Result<()> {
        let mut out = Vec::with_capacity(128 << 10);
        let flush = |out: &mut Vec<u8>, w: &mut dyn Write| -> io::Result<()> {
            if out.len() >= 64 << 10 {
                w.write_all(out)?;
                out.clear();
            }
            Ok(())
        };
        out.extend_from_slice(STAT_MAGIC);
        // Loaded records not learnt again, in file order, then the learnt ones sorted by path:
        // the same knowledge gives the same file.
        let mut at = STAT_MAGIC.len();
        while at < self.loaded.len() {
            let (p, k) = self.loaded_at(at);
            let next = at + 4 + p.len() + RECORD;
            // A record the index does not point at was shadowed by a later one (or collided).
            if !learnt.contains_key(p) && self.index.get(&path_key(p)) == Some(&(at as u32)) {
                k.put(p, &mut out);
                flush(&mut out, w)?;
            }
            at = next;
        }
        let mut learnt: Vec<_> = learnt.iter().collect();
        learnt.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (p, k) in learnt {
            k.put(p, &mut out);
            flush(&mut out, w)?;
        }
        w.write_all(&out)
    }
}

/// Remembers content hashes by (path, size, mtime, inode) so an unchanged file is never re-read.
/// Stored in a compact binary file (loaded with one read and indexed without parsing each
/// record): a no-op rebuild of 100k files looks each one up after a single `stat`.
pub struct StatCache {
    file: PathBuf,
    /// Read by the walk's threads at once, without a lock (a no-op rebuild looks up every file:
    /// a shared lock's counter alone, bouncing between the cores, cost ~3 % of it).
    loaded: Table,
    /// Written when a file is hashed; looked at only once something was learnt.
    learnt: RwLock<Learnt>,
    learning: AtomicBool,
}

impl StatCache {
    /// Loads the stat cache of the project at `root`. A missing, unreadable or damaged file is
    /// an empty cache (files are hashed again).
    pub fn load(store: &Store, root: &Path) -> StatCache {
        let file = store
            .root()
            .join("stat")
            .join(format!("{}.bin", crate::key::stat_cache(root)));
        let known = fs::read(&file)
            .ok()
            .and_then(Table::parse)
            .unwrap_or_default();
        StatCache {
            file,
            loaded: known,
            learnt: RwLock::default(),
            learning: AtomicBool::new(false),
        }
    }

    /// The remembered sha256 of the file at `path` with identity `id`, without reading it.
    pub fn lookup(&self, path: &Path, id: &FileId) -> Option<[u8; 32]> {
        let k = self.get(path.as_os_str().as_encoded_bytes())?;
        (k.id == *id).then_some(k.sha256)
    }

    fn get(&self, path: &[u8]) -> Option<Known> {
        if self.learning.load(Ordering::Acquire) {
            if let Some(k) = self.learnt.read().unwrap().get(path) {
                return Some(*k);
            }
        }
        self.loaded.get(path)
    }

    /// The sha256 (hex) of the file at `path` with identity `id`, reading it only when needed.
    pub fn hash(&self, path: &Path, id: &FileId) -> io::Result<String> {
        if let Some(h) = self.lookup(path, id) {
            return Ok(hex_of(&h));
        }
        let sha = hash_file(path)?;
        self.remember(path, id, &sha);
        Ok(sha)
    }

    /// Records that the file with identity `id` (taken before reading it) hashes to `sha`.
    pub fn remember(&self, path: &Path, id: &FileId, sha: &str) {
        let mut sha256 = [0u8; 32];
        if hex::decode_to_slice(sha, &mut sha256).is_ok() {
            self.remember_sha(path, id, sha256);
        }
    }

    /// `remember` with the sha256's bytes.
    pub fn remember_sha(&self, path: &Path, id: &FileId, sha256: [u8; 32]) {
        // A file modified in the last two seconds may change again within the same mtime tick
        // ("racy" entry, as git calls it): do not remember it.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if now - id.mtime <= 2 {
            return;
        }
        let k = Known { id: *id, sha256 };
        let path = path.as_os_str().as_encoded_bytes();
        if self.get(path) != Some(k) {
            self.learnt.write().unwrap().insert(path.to_vec(), k);
            self.learning.store(true, Ordering::Release);
        }
    }

    /// Writes what was learnt to the file, and lets go of it: the file has it, and a lookup
    /// after this finds less and hashes again (a build saves once its layers are written; at
    /// 100k new files the learnt records were 18 MB of the checks' peak).
    pub fn save(&self) -> Result<()> {
        let mut learnt = self.learnt.write().unwrap();
        if !learnt.is_empty() {
            crate::store::write_atomic_with(&self.file, |w| self.loaded.encode(&learnt, w))?;
        }
        *learnt = Learnt::default();
        self.learning.store(false, Ordering::Release);
        Ok(())
    }
}

/// Lowercase hex of a sha256 (`hex::encode` goes through an iterator of chars: several times
/// slower, and a no-op rebuild makes one per file).
fn hex_of(b: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = vec![0u8; 64];
    for (i, x) in b.iter().enumerate() {
        out[2 * i] = HEX[(x >> 4) as usize];
        out[2 * i + 1] = HEX[(x & 15) as usize];
    }
    String::from_utf8(out).expect("hex digits")
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
    store.put_large_record(LISTINGS, diff_id.hex(), l)
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

pub fn put_last_inputs(store: &Store, key: &str, inputs: crate::key::Inputs) -> Result<()> {
    store.put_large_record("last-inputs", key, &inputs)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(size: u64, ino: u64) -> FileId {
        FileId {
            size,
            mtime: 1_000_000,
            mtime_ns: 5,
            ino,
        }
    }

    fn cache_in(dir: &Path) -> StatCache {
        let store = Store::open(dir).unwrap();
        StatCache::load(&store, Path::new("/project"))
    }

    #[test]
    fn stat_cache_round_trips_and_checks_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let sha = sha256_of(b"x");
        let c = cache_in(dir.path());
        for i in 0..1000u64 {
            c.remember(Path::new(&format!("/project/f{i}")), &id(i, i), &sha);
        }
        c.save().unwrap();
        let again = cache_in(dir.path());
        assert_eq!(
            known(&again, Path::new("/project/f7"), &id(7, 7)),
            Some(sha.clone())
        );
        // Another size, inode or mtime: not known, so the file is read again.
        assert_eq!(known(&again, Path::new("/project/f7"), &id(8, 7)), None);
        assert_eq!(known(&again, Path::new("/project/f7"), &id(7, 9)), None);
        assert_eq!(
            known(&again, Path::new("/project/f1000"), &id(1000, 1000)),
            None
        );
        // Learning a new hash for a known path replaces it; the rest is kept.
        let other = sha256_of(b"y");
        again.remember(Path::new("/project/f7"), &id(70, 7), &other);
        again.save().unwrap();
        let third = cache_in(dir.path());
        assert_eq!(
            known(&third, Path::new("/project/f7"), &id(70, 7)),
            Some(other)
        );
        assert_eq!(known(&third, Path::new("/project/f7"), &id(7, 7)), None);
        assert_eq!(
            known(&third, Path::new("/project/f999"), &id(999, 999)),
            Some(sha)
        );
    }

    #[test]
    fn hex_of_is_lowercase_hex() {
        let b: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(hex_of(&b), hex::encode(b));
    }

    #[test]
    fn a_damaged_stat_cache_is_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let sha = sha256_of(b"x");
        let c = cache_in(dir.path());
        c.remember(Path::new("/project/a"), &id(1, 1), &sha);
        c.save().unwrap();
        let file = c.file.clone();
        let mut bytes = fs::read(&file).unwrap();
        bytes.truncate(bytes.len() - 3);
        fs::write(&file, &bytes).unwrap();
        assert_eq!(
            known(&cache_in(dir.path()), Path::new("/project/a"), &id(1, 1)),
            None
        );
    }

    #[test]
    fn a_file_changed_in_the_last_seconds_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache_in(dir.path());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let racy = FileId {
            mtime: now,
            ..id(1, 1)
        };
        c.remember(Path::new("/project/a"), &racy, &sha256_of(b"x"));
        assert_eq!(known(&c, Path::new("/project/a"), &racy), None);
    }

    /// What `c` knows of `path` with identity `id`, in hex.
    fn known(c: &StatCache, path: &Path, id: &FileId) -> Option<String> {
        c.lookup(path, id).map(|h| hex_of(&h))
    }

    fn sha256_of(b: &[u8]) -> String {
        crate::digest::sha256_hex(b)
    }
}
