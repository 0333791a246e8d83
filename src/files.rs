//! File layers: project files and directories mapped into the image, with excludes,
//! guaranteed directories and owner/mode overrides.

use crate::cache::{FileId, PathMap, StatCache};
use crate::layer::{check_path, Body, Entry, Source};
use crate::rootfs::{Kind, Listing};
use crate::usage;
use anyhow::{bail, Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One `{ from, to }` mapping, resolved.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub from: PathBuf,
    /// Absolute path in the image, normalised.
    pub to: String,
    pub mode: Option<u32>,
    pub owner: Option<(u32, u32)>,
    pub optional: bool,
    /// The `from` as the user wrote it, for messages.
    pub written: String,
}

/// Collects entries from disk.
pub struct Collector {
    pub exclude: GlobSet,
    /// Keep uid/gid from disk (base import) instead of root.
    pub keep_owner: bool,
    /// Skip device nodes, FIFOs and sockets with a note instead of failing.
    pub skip_special: bool,
    pub entries: Vec<Entry>,
    /// The sha256 of each regular file entry, by the entry's index, for the cache key (raw
    /// bytes: a no-op rebuild of a large tree looks up one per file).
    hashes: Vec<Option<[u8; 32]>>,
    /// Files the stat cache did not know (after `finish`, by `key`).
    unhashed: Vec<Unhashed>,
    pub skipped: Vec<String>,
    inodes: HashMap<(u64, u64), Vec<u8>>,
    /// Where each path came from: a hash of the path → its entry's index (`usize::MAX`: ensure_dirs).
    origin: PathMap<u64, usize>,
    /// Each mapping added: where it reads and its layer path (what `learn` needs to find a
    /// file's source from its path in the layer).
    mappings: Vec<(PathBuf, Vec<u8>)>,
    /// The paths the mappings and `ensure_dir` start at: only their parents can be missing.
    roots: Vec<Vec<u8>>,
    /// Whether a hard link was added.
    linked: bool,
}

/// A file the stat cache did not know, learnt from the written layer's listing: kept without
/// its paths (at 100k new files, copies of their paths were 18 MB of a cold build's peak).
#[derive(Clone, Copy, Debug)]
struct Unhashed {
    /// `path_key` of its layer path.
    key: u64,
    /// Its entry.
    index: u32,
    /// The mapping it came from (`Collector::mappings`).
    mapping: u32,
    /// Its identity, taken before it was read.
    id: FileId,
}

use crate::cache::path_key as path_hash;

pub fn globs(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| usage!("invalid exclude pattern `{p}`: {e}"))?);
    }
    Ok(b.build()?)
}

/// Parses `uid:gid` (numbers only: names would need the image's /etc/passwd).
pub fn parse_owner(s: &str) -> Result<(u32, u32)> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    match (u.parse(), g.parse()) {
        (Ok(u), Ok(g)) => Ok((u, g)),
        _ => Err(usage!(
            "owner `{s}` must be numeric `uid:gid`, e.g. \"1000:1000\""
        )),
    }
}

pub fn parse_mode(s: &str) -> Result<u32> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| usage!("mode `{s}` must be octal permission bits, e.g. \"0644\""))
}

/// Normalises an absolute image path (`/app/./src/` → `app/src`), refusing `..`.
pub fn image_path(p: &str) -> Result<String> {
    if !p.starts_with('/') {
        return Err(usage!("image path `{p}` must be absolute"));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(usage!(
                    "image path `{p}` contains `..`; write the path it means instead"
                ))
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a `from` against `base`, refusing anything (symlinks included) that leaves `root`.
pub fn resolve_from(root: &Path, base: &Path, from: &str) -> Result<Option<PathBuf>> {
    let p = base.join(from);
    let canon_root = root
        .canonicalize()
        .with_context(|| format!("resolving project root {}", root.display()))?;
    match p.canonicalize() {
        Ok(c) if c.starts_with(&canon_root) => Ok(Some(c)),
        Ok(c) => Err(usage!(
            "`from = \"{from}\"` resolves to {}, outside the project {}; imgbuild only reads files inside the project",
            c.display(),
            canon_root.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if fs::symlink_metadata(&p).is_ok() {
                return Err(usage!("`from = \"{from}\"` is a symlink whose target does not exist ({})", p.display()));
            }
            Ok(None)
        }
        Err(e) => Err(usage!("`from = \"{from}\"` cannot be resolved ({}): {e}", p.display())),
    }
}

impl Collector {
    pub fn new(exclude: GlobSet) -> Collector {
        Collector {
            exclude,
            keep_owner: false,
            skip_special: false,
            entries: Vec::new(),
            hashes: Vec::new(),
            unhashed: Vec::new(),
            skipped: Vec::new(),
            inodes: HashMap::new(),
            origin: PathMap::default(),
            mappings: Vec::new(),
            roots: Vec::new(),
            linked: false,
        }
    }

    /// Adds a mapping: a file becomes the entry `to`; a directory becomes `to` and everything under it.
    pub fn add(&mut self, m: &Mapping, stat: &StatCache) -> Result<()> {
        let md = fs::symlink_metadata(&m.from)
            .with_context(|| format!("reading {}", m.from.display()))?;
        let meta = Meta::of(&md);
        let to = m.to.clone().into_bytes();
        self.mappings.push((m.from.clone(), to.clone()));
        self.roots.push(to.clone());
        if md.is_dir() {
            self.walk(m, stat, &meta, to)
        } else {
            let known = meta
                .is_file()
                .then(|| stat.lookup(&m.from, &meta.id))
                .flatten();
            self.push_path(m, m.from.clone(), &meta, to, known)
        }
    }

    /// The directory `m.from` (its metadata `md`) and everything under it, in name order: the
    /// directories are read, their members stat'ed relative to the open directory and looked
    /// up in the stat cache, on several threads (on a no-op rebuild that is nearly all the
    /// work); then the entries are added in order. No file is opened: one the stat cache knows
    /// is not read.
    fn walk(&mut self, m: &Mapping, stat: &StatCache, md: &Meta, to: Vec<u8>) -> Result<()> {
        let mut read = traverse(&m.from, &to, &self.exclude, stat);
        if !to.is_empty() {
            self.push_path(m, m.from.clone(), md, to, None)?;
        }
        self.add_read(m, &mut read, 0)
    }

    /// The members of directory `id` of a traversal, and those of its subdirectories after each.
    fn add_read(
        &mut self,
        m: &Mapping,
        read: &mut [Option<Result<Vec<Member>>>],
        id: usize,
    ) -> Result<()> {
        let members = read[id].take().expect("each directory is added once")?;
        for Member {
            item,
            meta,
            known,
            sub,
        } in members
        {
            let meta = meta.with_context(|| format!("reading {}", item.src.display()))?;
            if meta.is_dir() != item.dir {
                bail!(
                    "{} changed while imgbuild read its directory; build again",
                    item.src.display()
                );
            }
            self.push_path(m, item.src, &meta, item.to, known)?;
            if let Some(sub) = sub {
                self.add_read(m, read, sub)?;
            }
        }
        Ok(())
    }

    /// Adds the member at `src` (metadata `md`) as the layer path `path`; `known`: its content
    /// hash from the stat cache.
    fn push_path(
        &mut self,
        m: &Mapping,
        src: PathBuf,
        md: &Meta,
        path: Vec<u8>,
        known: Option<[u8; 32]>,
    ) -> Result<()> {
        check_path(&path).map_err(|e| usage!("{e} (from {})", src.display()))?;
        let (uid, gid) = match m.owner {
            Some(o) => o,
            None if self.keep_owner => (md.uid, md.gid),
            None => (0, 0),
        };
        let kind = md.mode & libc::S_IFMT;
        let mut mode = md.mode & 0o7777;
        let body = if kind == libc::S_IFDIR {
            Body::Dir
        } else if kind == libc::S_IFLNK {
            let t =
                fs::read_link(&src).with_context(|| format!("reading link {}", src.display()))?;
            Body::Symlink(t.as_os_str().as_bytes().to_vec())
        } else if kind == libc::S_IFREG {
            if let Some(mm) = m.mode {
                mode = mm;
            }
            let id = (md.dev, md.id.ino);
            if md.nlink > 1 {
                if let Some(first) = self.inodes.get(&id) {
                    let first = first.clone();
                    self.linked = true;
                    return self.push(
                        Entry {
                            path,
                            body: Body::Link(first),
                            mode,
                            uid,
                            gid,
                        },
                        Some(&src),
                    );
                }
                self.inodes.insert(id, path.clone());
            }
            // Known to the stat cache, or hashed later: before the build when the unknown files
            // are few (`hash_unhashed`), else while the layer is written (`hashes_from`).
            let index = self.entries.len();
            match known {
                Some(sha) => self.set_hash(index, sha),
                None => self.unhashed.push(Unhashed {
                    key: path_hash(&path),
                    index: u32::try_from(index).context("more than 2^32 files in one layer")?,
                    mapping: self.mappings.len().saturating_sub(1) as u32,
                    id: md.id,
                }),
            }
            return self.push(
                Entry {
                    path,
                    body: Body::File {
                        src: Source::Disk(src),
                        size: md.id.size,
                    },
                    mode,
                    uid,
                    gid,
                },
                None,
            );
        } else if self.skip_special || kind == libc::S_IFSOCK {
            self.skipped.push(src.display().to_string());
            return Ok(());
        } else {
            let what = if kind == libc::S_IFIFO {
                "a FIFO"
            } else {
                "a device node"
            };
            bail!(usage!(
                "{} is {what}; file layers hold only files, directories and links",
                src.display()
            ));
        };
        self.push(
            Entry {
                path,
                body,
                mode,
                uid,
                gid,
            },
            Some(&src),
        )
    }

    /// Adds `e`, read from `src` (`None`: the file its body names).
    fn push(&mut self, e: Entry, src: Option<&Path>) -> Result<()> {
        if let Some(prev) = self.find(&e.path) {
            let src = match (src, &e.body) {
                (Some(s), _) => s.display().to_string(),
                (
                    None,
                    Body::File {
                        src: Source::Disk(p),
                        ..
                    },
                ) => p.display().to_string(),
                (None, _) => "another mapping".to_string(),
            };
            let both_dirs = matches!(e.body, Body::Dir)
                && (prev == usize::MAX || matches!(self.entries[prev].body, Body::Dir));
            if both_dirs {
                return Ok(()); // the same directory reached by two mappings
            }
            let from = match self.entries.get(prev).map(|p| &p.body) {
                Some(Body::File {
                    src: Source::Disk(p),
                    ..
                }) => p.display().to_string(),
                Some(_) => "another mapping".to_string(),
                None => "ensure_dirs".to_string(),
            };
            return Err(usage!(
                "{} is written twice in one layer: from {from} and from {src}",
                e.display(),
            ));
        }
        self.origin.insert(path_hash(&e.path), self.entries.len());
        self.entries.push(e);
        Ok(())
    }

    /// The entry already added for `path` (`usize::MAX` for an ensure_dirs directory).
    fn find(&self, path: &[u8]) -> Option<usize> {
        let &i = self.origin.get(&path_hash(path))?;
        match self.entries.get(i) {
            Some(e) if e.path == path => Some(i),
            None if i == usize::MAX => Some(i),
            // Two paths with one 64-bit hash: look the slow way.
            _ => self.entries.iter().position(|e| e.path == path),
        }
    }

    /// Directories that must exist even when no source provides them.
    pub fn ensure_dir(&mut self, path: &str, owner: Option<(u32, u32)>) -> Result<()> {
        let p = image_path(path)?.into_bytes();
        if p.is_empty() || self.find(&p).is_some() {
            return Ok(());
        }
        let (uid, gid) = owner.unwrap_or((0, 0));
        self.roots.push(p.clone());
        self.origin.insert(path_hash(&p), self.entries.len());
        self.entries.push(Entry {
            path: p,
            body: Body::Dir,
            mode: 0o755,
            uid,
            gid,
        });
        Ok(())
    }

    /// A directory owned by `owner`: made when missing, re-owned when the layer already has it
    /// (a directory the program writes into at run time as the image's user).
    pub fn own_dir(&mut self, path: &str, owner: (u32, u32)) -> Result<()> {
        self.ensure_dir(path, Some(owner))?;
        let p = image_path(path)?.into_bytes();
        if let Some(e) = self.find(&p).and_then(|i| self.entries.get_mut(i)) {
            if !matches!(e.body, Body::Dir) {
                bail!("{path} is not a directory in this layer, so it cannot be made writable");
            }
            e.uid = owner.0;
            e.gid = owner.1;
        }
        Ok(())
    }

    /// Completes the entries as `layer::normalise` would, but for their order: the missing
    /// parents of the paths mappings start at (0755, root), and each hard-linked file's body at
    /// the group's first path in tar order. Then the rows of the entries are the same before
    /// the layer is written (`rows`) and after it (`WrittenRows`, from the normalised entries).
    /// What only adding needed is let go.
    pub fn finish(&mut self) -> Result<()> {
        for root in std::mem::take(&mut self.roots) {
            let mut p = root.as_slice();
            while let Some(i) = p.iter().rposition(|&b| b == b'/') {
                p = &p[..i];
                if self.find(p).is_none() {
                    self.origin.insert(path_hash(p), self.entries.len());
                    self.entries.push(Entry::dir(p.to_vec(), 0o755));
                }
            }
        }
        if self.linked {
            for (from, to) in crate::layer::relink(&mut self.entries)? {
                if self.hashes.len() <= from.max(to) {
                    self.hashes.resize(from.max(to) + 1, None);
                }
                self.hashes[to] = self.hashes[from].take();
                for u in self
                    .unhashed
                    .iter_mut()
                    .filter(|u| u.index as usize == from)
                {
                    u.index = to as u32;
                }
            }
        }
        self.origin = PathMap::default();
        self.inodes = HashMap::new();
        self.entries.shrink_to_fit();
        self.unhashed.sort_unstable_by_key(|u| u.key);
        self.unhashed.shrink_to_fit();
        Ok(())
    }

    fn set_hash(&mut self, index: usize, sha: [u8; 32]) {
        if self.hashes.len() <= index {
            self.hashes.resize(index + 1, None);
        }
        self.hashes[index] = Some(sha);
    }

    /// How many files the stat cache did not know, and their bytes.
    pub fn unhashed_files(&self) -> usize {
        self.unhashed.len()
    }

    pub fn unhashed_bytes(&self) -> u64 {
        self.unhashed.iter().map(|u| u.id.size).sum()
    }

    /// Hashes files the stat cache did not know, reading them.
    pub fn hash_unhashed(&mut self, stat: &StatCache) -> Result<()> {
        for u in std::mem::take(&mut self.unhashed) {
            let index = u.index as usize;
            let Some(Body::File {
                src: Source::Disk(src),
                ..
            }) = self.entries.get(index).map(|e| &e.body)
            else {
                continue;
            };
            let sha = stat
                .hash(src, &u.id)
                .with_context(|| format!("reading {}", src.display()))?;
            let mut raw = [0u8; 32];
            hex::decode_to_slice(&sha, &mut raw).expect("a sha256 in hex");
            self.set_hash(index, raw);
        }
        Ok(())
    }

    /// Lets go of the entries' known hashes (a layer written with unhashed files takes its rows
    /// from the written layer).
    pub fn forget_hashes(&mut self) {
        self.hashes = Vec::new();
    }

    /// Teaches the stat cache the hashes of the files it did not know, from the listing of the
    /// layer they were written to. Their sources come from the mappings and their paths in the
    /// layer, not from the entries: those are gone by now (at 100k new files the entries, the
    /// listing and what the stat cache learns were too much at once). A hard link's path learns
    /// its file's hash.
    pub fn learn(&mut self, stat: &StatCache, listing: &Listing) {
        if self.unhashed.is_empty() {
            return;
        }
        let nodes = &listing.nodes;
        let sha_of = |path: &str| {
            nodes
                .binary_search_by(|n| n.path.as_str().cmp(path))
                .ok()
                .and_then(|i| nodes[i].sha256)
        };
        for n in nodes {
            let sha = match n.kind {
                Kind::File => n.sha256,
                Kind::Link => n.target.as_deref().and_then(sha_of),
                _ => None,
            };
            let Some(sha) = sha else { continue };
            let key = path_hash(n.path.as_bytes());
            let at = self.unhashed.partition_point(|u| u.key < key);
            // Two paths with one `path_key` are both tried: a file learnt under another's
            // identity is never found again (the identity has the inode), so that is harmless.
            for u in self.unhashed[at..].iter().take_while(|u| u.key == key) {
                let (from, to) = &self.mappings[u.mapping as usize];
                if let Some(src) = source_of(from, to, n.path.as_bytes()) {
                    stat.remember_sha(&src, &u.id, sha.0);
                }
            }
        }
        self.unhashed = Vec::new();
    }

    /// The entries' rows, in key order (see `Rows`).
    pub fn rows(&self) -> CollectedRows<'_> {
        CollectedRows(self)
    }
}

/// The file at layer path `path` of the mapping from `from` to `to`.
fn source_of(from: &Path, to: &[u8], path: &[u8]) -> Option<PathBuf> {
    let rel = if path == to {
        return Some(from.to_path_buf());
    } else if to.is_empty() {
        path
    } else {
        path.strip_prefix(to)?.strip_prefix(b"/")?
    };
    Some(from.join(std::ffi::OsStr::from_bytes(rel)))
}

/// Per-path input rows of a files layer, for its cache key and `-v`: for each entry, its
/// displayed path → `KIND [SIZE HASH | TARGET] MODE UID:GID` (a file the stat cache does not
/// know has an empty HASH). Written into two buffers, without `format!` (a no-op rebuild of a
/// large tree makes one per file), and given one at a time: never held as a map.
struct RowWriter {
    path: String,
    what: String,
}

impl RowWriter {
    fn new() -> RowWriter {
        RowWriter {
            path: String::with_capacity(256),
            what: String::with_capacity(128),
        }
    }

    /// The row of `e`, with `sha` (hex) for a file.
    fn row(&mut self, e: &Entry, sha: Option<&str>) -> (&str, &str) {
        let what = &mut self.what;
        what.clear();
        match &e.body {
            Body::Dir => what.push_str("dir"),
            Body::File { size, .. } => {
                what.push_str("file ");
                what.push_str(itoa(*size, &mut [0u8; 20]));
                what.push(' ');
                what.push_str(sha.unwrap_or(""));
            }
            Body::Symlink(t) => {
                what.push_str("symlink ");
                what.push_str(&String::from_utf8_lossy(t));
            }
            Body::Link(t) => {
                what.push_str("link ");
                what.push_str(&String::from_utf8_lossy(t));
            }
        }
        what.push(' ');
        octal(e.mode, what);
        what.push(' ');
        what.push_str(itoa(e.uid as u64, &mut [0u8; 20]));
        what.push(':');
        what.push_str(itoa(e.gid as u64, &mut [0u8; 20]));
        self.path.clear();
        self.path.push('/');
        self.path.push_str(&String::from_utf8_lossy(&e.path));
        (&self.path, &self.what)
    }
}

/// `n` in octal, appended to `out`.
fn octal(n: u32, out: &mut String) {
    let mut buf = [0u8; 11];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n & 7) as u8;
        n >>= 3;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("digits"));
}

/// The rows of a collector's entries, with the hashes the stat cache knew, in path order.
pub struct CollectedRows<'a>(&'a Collector);

impl crate::key::Rows for CollectedRows<'_> {
    fn each(&self, row: &mut dyn FnMut(&str, &str)) {
        let c = self.0;
        let mut order: Vec<u32> = (0..c.entries.len() as u32).collect();
        // In walk order the paths are nearly sorted already.
        order
            .sort_unstable_by(|&a, &b| c.entries[a as usize].path.cmp(&c.entries[b as usize].path));
        let mut w = RowWriter::new();
        let mut hex = [0u8; 64];
        for i in order {
            let i = i as usize;
            let sha = c.hashes.get(i).copied().flatten().map(|sha| {
                hex::encode_to_slice(sha, &mut hex).expect("64 bytes for 32");
                std::str::from_utf8(&hex).expect("hex is ASCII")
            });
            let (k, v) = w.row(&c.entries[i], sha);
            row(k, v);
        }
    }
}

/// The rows of a written files layer: its normalised entries with the hashes of its listing
/// (the same rows as `CollectedRows` once the stat cache knows every file; see `finish`).
pub struct WrittenRows<'a> {
    pub entries: &'a [Entry],
    pub listing: &'a Listing,
}

impl crate::key::Rows for WrittenRows<'_> {
    fn each(&self, row: &mut dyn FnMut(&str, &str)) {
        let mut w = RowWriter::new();
        let mut hex = [0u8; 64];
        for (e, n) in self.entries.iter().zip(&self.listing.nodes) {
            let (k, v) = w.row(e, n.sha256.as_ref().map(|s| s.hex_in(&mut hex)));
            row(k, v);
        }
    }
}

/// A member found by listing a directory: where it is, its layer path, and whether readdir
/// called it a directory (the walk went into it).
struct Item {
    src: PathBuf,
    to: Vec<u8>,
    dir: bool,
}

/// A member of a directory read by `traverse`: its `lstat`, its hash from the stat cache (a
/// regular file it knows), and for a directory the id of its own read.
struct Member {
    item: Item,
    meta: std::io::Result<Meta>,
    known: Option<[u8; 32]>,
    sub: Option<usize>,
}

/// What a layer entry needs of a member's `lstat`.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    /// `st_mode`: the file type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    dev: u64,
    id: FileId,
}

impl Meta {
    fn of(md: &fs::Metadata) -> Meta {
        Meta {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            nlink: md.nlink(),
            dev: md.dev(),
            id: FileId::of(md),
        }
    }

    /// `lstat` of `name` in the open directory `dir`.
    fn at(dir: &fs::File, name: &std::ffi::OsStr) -> std::io::Result<Meta> {
        use std::os::fd::AsRawFd;
        let name = name.as_bytes();
        if name.contains(&0) {
            return Err(std::io::Error::other("a name with a NUL byte"));
        }
        // The NUL-terminated name on the stack (a directory entry's name is at most 255 bytes).
        let mut buf = [0u8; 256];
        let heap;
        let cname: &[u8] = if name.len() < buf.len() {
            buf[..name.len()].copy_from_slice(name);
            &buf[..=name.len()]
        } else {
            heap = [name, &[0]].concat();
            &heap
        };
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory descriptor, a NUL-terminated name without inner NULs and a
        // buffer of the right type, which fstatat fills on success.
        let r = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                cname.as_ptr().cast(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink as u64,
            dev: st.st_dev,
            id: FileId {
                size: st.st_size as u64,
                mtime: st.st_mtime,
                mtime_ns: st.st_mtime_nsec,
                ino: st.st_ino,
            },
        })
    }

    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

/// A directory for `traverse` to read: its id, path, layer path and path below the mapping.
struct Task {
    id: usize,
    dir: PathBuf,
    to: Vec<u8>,
    rel: PathBuf,
}

/// Reads the tree at `root` (layer path `to`) on up to 4 threads: each directory listed, its
/// members sorted by name, excluded ones dropped, each `lstat`ed relative to the open
/// directory and, when a regular file, looked up in the stat cache. Returns each directory's
/// members by id (0: `root`), subdirectories naming their own id.
fn traverse(
    root: &Path,
    to: &[u8],
    exclude: &GlobSet,
    stat: &StatCache,
) -> Vec<Option<Result<Vec<Member>>>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    struct Queue {
        tasks: Vec<Task>,
        /// Tasks queued or being read.
        pending: usize,
    }
    let queue = Mutex::new(Queue {
        tasks: vec![Task {
            id: 0,
            dir: root.to_path_buf(),
            to: to.to_vec(),
            rel: PathBuf::new(),
        }],
        pending: 1,
    });
    let wake = Condvar::new();
    let next_id = AtomicUsize::new(1);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let work = || {
        let mut done = Vec::new();
        loop {
            let task = {
                let mut q = queue.lock().unwrap();
                loop {
                    if let Some(t) = q.tasks.pop() {
                        break Some(t);
                    }
                    if q.pending == 0 {
                        break None;
                    }
                    q = wake.wait(q).unwrap();
                }
            };
            let Some(task) = task else {
                wake.notify_all();
                return done;
            };
            let (members, subs) = read_dir(&task, exclude, stat, &next_id);
            let mut q = queue.lock().unwrap();
            q.pending += subs.len();
            q.pending -= 1;
            // Deepest first: the tasks of one subtree stay together, memory stays small.
            q.tasks.extend(subs.into_iter().rev());
            drop(q);
            wake.notify_all();
            done.push((task.id, members));
        }
    };
    let done: Vec<(usize, Result<Vec<Member>>)> = std::thread::scope(|s| {
        let others: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for o in others {
            all.extend(o.join().expect("walk worker"));
        }
        all
    });
    let mut out: Vec<Option<Result<Vec<Member>>>> =
        (0..next_id.load(Ordering::SeqCst)).map(|_| None).collect();
    for (id, members) in done {
        out[id] = Some(members);
    }
    out
}

/// One directory of `traverse`: its members, and a task for each subdirectory.
fn read_dir(
    task: &Task,
    exclude: &GlobSet,
    stat: &StatCache,
    next_id: &std::sync::atomic::AtomicUsize,
) -> (Result<Vec<Member>>, Vec<Task>) {
    let dir = &task.dir;
    let listed = fs::read_dir(dir)
        .and_then(|rd| {
            rd.map(|e| {
                let e = e?;
                Ok((e.file_name(), e.file_type()?.is_dir()))
            })
            .collect::<std::io::Result<Vec<_>>>()
        })
        .with_context(|| format!("listing {}", dir.display()));
    let mut children = match listed {
        Ok(c) => c,
        Err(e) => return (Err(e), Vec::new()),
    };
    children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let opened = fs::File::open(dir);
    let mut members = Vec::with_capacity(children.len());
    let mut subs = Vec::new();
    for (name, is_dir) in children {
        // Only exclude patterns need the path relative to the mapping.
        let rel = if exclude.is_empty() {
            PathBuf::new()
        } else {
            let rel = task.rel.join(&name);
            if exclude.is_match(&rel) {
                continue;
            }
            rel
        };
        let mut to = Vec::with_capacity(task.to.len() + 1 + name.len());
        to.extend_from_slice(&task.to);
        if !to.is_empty() {
            to.push(b'/');
        }
        to.extend_from_slice(name.as_bytes());
        let meta = match &opened {
            Ok(d) => Meta::at(d, &name),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        // Exactly as long as the path (`Path::join` leaves up to its length again unused, and
        // the entry keeps this buffer for the whole build).
        let mut src = PathBuf::with_capacity(dir.as_os_str().len() + 1 + name.len());
        src.push(dir);
        src.push(&name);
        let known = match &meta {
            Ok(md) if md.is_file() => stat.lookup(&src, &md.id),
            _ => None,
        };
        let sub = is_dir.then(|| {
            let id = next_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            subs.push(Task {
                id,
                dir: src.clone(),
                to: to.clone(),
                rel,
            });
            id
        });
        members.push(Member {
            item: Item {
                src,
                to,
                dir: is_dir,
            },
            meta,
            known,
            sub,
        });
    }
    (Ok(members), subs)
}

/// `n` in decimal, in `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("digits")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::store::Store;

    fn rows(r: &dyn crate::key::Rows) -> Vec<(String, String)> {
        let mut out = Vec::new();
        r.each(&mut |k, v| out.push((k.to_string(), v.to_string())));
        out
    }

    fn mapping(from: &Path, to: &str) -> Mapping {
        Mapping {
            from: from.to_path_buf(),
            to: image_path(to).unwrap(),
            mode: None,
            owner: None,
            optional: false,
            written: from.display().to_string(),
        }
    }

    /// A project whose files have an mtime long past (the stat cache remembers them).
    fn project() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("pkg/a")).unwrap();
        fs::write(src.join("pkg/z.py"), "z").unwrap();
        fs::write(src.join("pkg/a/x.py"), "a").unwrap();
        // Hard links: the walk meets `pkg/a/x.py` first (the directory `a` and what is in it
        // before `a-link.py`), but `pkg/a-link.py` is first in tar order ('-' < '/').
        fs::hard_link(src.join("pkg/a/x.py"), src.join("pkg/a-link.py")).unwrap();
        std::os::unix::fs::symlink("z.py", src.join("pkg/zz")).unwrap();
        fs::write(t.path().join("main.py"), "main").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
        for p in ["src/pkg/z.py", "src/pkg/a/x.py", "main.py"] {
            fs::File::options()
                .write(true)
                .open(t.path().join(p))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        t
    }

    fn collect(t: &Path, stat: &StatCache) -> Collector {
        let mut c = Collector::new(globs(&[]).unwrap());
        // Parents that no mapping provides: `srv`, `srv/app`, `opt`, `opt/bin`.
        c.add(&mapping(&t.join("src"), "/srv/app/code"), stat)
            .unwrap();
        c.add(&mapping(&t.join("main.py"), "/opt/bin/main.py"), stat)
            .unwrap();
        c.ensure_dir("/var/lib/app/data", Some((1000, 1000)))
            .unwrap();
        c.finish().unwrap();
        c
    }

    #[test]
    fn rows_before_the_write_are_the_rows_of_the_written_layer() {
        let t = project();
        let store = Store::open(t.path().join("store")).unwrap();
        let stat = StatCache::load(&store, t.path());
        let mut c = collect(t.path(), &stat);
        assert_eq!(c.unhashed_files(), 3, "nothing is known yet");
        c.hash_unhashed(&stat).unwrap();
        let before = rows(&c.rows());
        let entries = crate::layer::normalise(std::mem::take(&mut c.entries)).unwrap();
        let (_, listing) =
            crate::layer::write(&entries, 0, Compression::Gzip, 1, &store, &|_| {}).unwrap();
        let after = rows(&WrittenRows {
            entries: &entries,
            listing: &listing,
        });
        assert_eq!(before, after);
        let keys: Vec<&str> = before.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "/srv",
            "/srv/app",
            "/opt",
            "/opt/bin",
            "/var/lib/app",
            "/var/lib/app/data",
        ] {
            assert!(keys.contains(&k), "{k} in {keys:?}");
        }
        let row = |k: &str| &before.iter().find(|(p, _)| p == k).unwrap().1;
        assert_eq!(row("/srv"), "dir 755 0:0");
        assert_eq!(row("/var/lib/app/data"), "dir 755 1000:1000");
        assert!(row("/srv/app/code/pkg/a-link.py").starts_with("file 1 ca978112"));
        assert_eq!(
            row("/srv/app/code/pkg/a/x.py"),
            "link srv/app/code/pkg/a-link.py 644 0:0"
        );
        assert_eq!(row("/srv/app/code/pkg/zz"), "symlink z.py 777 0:0");
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "in key order: {keys:?}"
        );
    }

    #[test]
    fn a_written_layer_teaches_the_stat_cache_every_file_it_did_not_know() {
        let t = project();
        let store = Store::open(t.path().join("store")).unwrap();
        let stat = StatCache::load(&store, t.path());
        let mut c = collect(t.path(), &stat);
        let entries = crate::layer::normalise(std::mem::take(&mut c.entries)).unwrap();
        let (_, listing) =
            crate::layer::write(&entries, 0, Compression::Gzip, 1, &store, &|_| {}).unwrap();
        drop(entries);
        c.learn(&stat, &listing);
        stat.save().unwrap();
        // A new walk knows every file: none is unhashed, and the rows are the written ones.
        let again = StatCache::load(&store, t.path());
        let mut c2 = collect(t.path(), &again);
        assert_eq!(c2.unhashed_files(), 0);
        let known = rows(&c2.rows());
        let entries = crate::layer::normalise(std::mem::take(&mut c2.entries)).unwrap();
        assert_eq!(
            known,
            rows(&WrittenRows {
                entries: &entries,
                listing: &listing,
            })
        );
    }

    #[test]
    fn a_mapped_file_is_found_again_from_its_layer_path() {
        let from = Path::new("/p/src");
        assert_eq!(
            source_of(from, b"app", b"app/a/b.py"),
            Some(PathBuf::from("/p/src/a/b.py"))
        );
        assert_eq!(source_of(from, b"app", b"app"), Some(from.to_path_buf()));
        assert_eq!(
            source_of(from, b"", b"a/b.py"),
            Some(PathBuf::from("/p/src/a/b.py"))
        );
        assert_eq!(source_of(from, b"app", b"apple/b.py"), None);
        assert_eq!(source_of(from, b"app", b"other/b.py"), None);
    }
}
