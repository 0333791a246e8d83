//! File layers: project files and directories mapped into the image, with excludes,
//! guaranteed directories and owner/mode overrides.

use crate::cache::{FileId, PathMap, StatCache};
use crate::layer::{check_path, Body, Entry, Source};
use crate::usage;
use anyhow::{bail, Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::{BTreeMap, HashMap};
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
    /// Files the stat cache did not know: (entry index, layer path, source, metadata taken
    /// before reading).
    pub unhashed: Vec<(usize, Vec<u8>, PathBuf, FileId)>,
    pub skipped: Vec<String>,
    inodes: HashMap<(u64, u64), Vec<u8>>,
    /// Where each path came from: a hash of the path → its entry's index (`usize::MAX`: ensure_dirs).
    origin: PathMap<u64, usize>,
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
        }
    }

    /// Adds a mapping: a file becomes the entry `to`; a directory becomes `to` and everything under it.
    pub fn add(&mut self, m: &Mapping, stat: &StatCache) -> Result<()> {
        let md = fs::symlink_metadata(&m.from)
            .with_context(|| format!("reading {}", m.from.display()))?;
        let meta = Meta::of(&md);
        let to = m.to.clone().into_bytes();
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
                None => self
                    .unhashed
                    .push((index, path.clone(), src.clone(), md.id)),
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

    fn set_hash(&mut self, index: usize, sha: [u8; 32]) {
        if self.hashes.len() <= index {
            self.hashes.resize(index + 1, None);
        }
        self.hashes[index] = Some(sha);
    }

    /// Hashes files the stat cache did not know, reading them.
    pub fn hash_unhashed(&mut self, stat: &StatCache) -> Result<()> {
        for (index, _, src, md) in std::mem::take(&mut self.unhashed) {
            let sha = stat
                .hash(&src, &md)
                .with_context(|| format!("reading {}", src.display()))?;
            let mut raw = [0u8; 32];
            hex::decode_to_slice(&sha, &mut raw).expect("a sha256 in hex");
            self.set_hash(index, raw);
        }
        Ok(())
    }

    /// Learns the hashes of unhashed files from the listing of the layer they were written to,
    /// and calls `learned` with each one's displayed path (`/`-rooted), size and sha256 as it
    /// goes (collected, those of a layer of 100k new files were held at the build's peak).
    pub fn hashes_from(
        &mut self,
        stat: &StatCache,
        listing: &crate::rootfs::Listing,
        mut learned: impl FnMut(&str, u64, &str),
    ) {
        let by_path: HashMap<&str, &str> = listing
            .nodes
            .iter()
            .filter_map(|n| Some((n.path.as_str(), n.sha256.as_deref()?)))
            .collect();
        let mut shown = String::from("/");
        for (index, path, src, id) in std::mem::take(&mut self.unhashed) {
            shown.truncate(1);
            shown.push_str(&String::from_utf8_lossy(&path));
            match by_path.get(&shown[1..]) {
                Some(sha) => {
                    stat.remember(&src, &id, sha);
                    learned(&shown, id.size, sha);
                }
                None => self.unhashed.push((index, path, src, id)),
            }
        }
    }

    pub fn unhashed_bytes(&self) -> u64 {
        self.unhashed.iter().map(|(_, _, _, id)| id.size).sum()
    }

    /// One summary row: the entry's displayed path, and what it is.
    fn row(&self, index: usize, e: &Entry) -> (String, String) {
        use std::fmt::Write as _;
        let mut what = String::with_capacity(96);
        match &e.body {
            Body::Dir => what.push_str("dir"),
            Body::File { size, .. } => {
                what.push_str("file ");
                what.push_str(itoa(*size, &mut [0u8; 20]));
                what.push(' ');
                if let Some(Some(sha)) = self.hashes.get(index) {
                    let mut hex = [0u8; 64];
                    hex::encode_to_slice(sha, &mut hex).expect("64 bytes for 32");
                    what.push_str(std::str::from_utf8(&hex).expect("hex is ASCII"));
                }
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
        let _ = write!(what, " {:o} ", e.mode);
        what.push_str(itoa(e.uid as u64, &mut [0u8; 20]));
        what.push(':');
        what.push_str(itoa(e.gid as u64, &mut [0u8; 20]));
        let mut path = String::with_capacity(e.path.len() + 1);
        path.push('/');
        path.push_str(&String::from_utf8_lossy(&e.path));
        (path, what)
    }

    /// Per-path input summary (kind, mode, owner, size, hash or link) for cache keys and `-v`.
    /// Each value is `KIND [SIZE HASH | TARGET] MODE UID:GID`; written without `format!`, since
    /// a no-op rebuild of a large tree makes one per file.
    pub fn summary(&self) -> BTreeMap<String, String> {
        // A large layer's rows are made on two threads (a no-op rebuild makes one per file).
        let mut rows: Vec<(String, String)> = if self.entries.len() >= 4096 {
            let half = self.entries.len() / 2;
            let (a, b) = self.entries.split_at(half);
            std::thread::scope(|s| {
                let second = s.spawn(|| {
                    b.iter()
                        .enumerate()
                        .map(|(i, e)| self.row(half + i, e))
                        .collect::<Vec<_>>()
                });
                let mut rows: Vec<_> = a.iter().enumerate().map(|(i, e)| self.row(i, e)).collect();
                rows.extend(second.join().expect("summary rows"));
                rows
            })
        } else {
            self.entries
                .iter()
                .enumerate()
                .map(|(i, e)| self.row(i, e))
                .collect()
        };
        // Walk order is nearly sorted: a cheap sort, then a bulk build of the map.
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rows.into_iter().collect()
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
