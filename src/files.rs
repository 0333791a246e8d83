//! File layers: project files and directories mapped into the image, with excludes,
//! guaranteed directories and owner/mode overrides.

use crate::cache::{FileId, StatCache};
use crate::layer::{check_path, Body, Entry, Source};
use crate::usage;
use anyhow::{bail, Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
    /// Content hash of each regular file entry, by path, for the cache key.
    pub hashes: HashMap<Vec<u8>, String>,
    /// Files the stat cache did not know: (layer path, source, metadata taken before reading).
    pub unhashed: Vec<(Vec<u8>, PathBuf, FileId)>,
    pub skipped: Vec<String>,
    inodes: HashMap<(u64, u64), Vec<u8>>,
    /// Where each path came from: a hash of the path → its entry's index (`usize::MAX`: ensure_dirs).
    origin: HashMap<u64, usize>,
}

fn path_hash(p: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

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
            hashes: HashMap::new(),
            unhashed: Vec::new(),
            skipped: Vec::new(),
            inodes: HashMap::new(),
            origin: HashMap::new(),
        }
    }

    /// Adds a mapping: a file becomes the entry `to`; a directory becomes `to` and everything under it.
    pub fn add(&mut self, m: &Mapping, stat: &StatCache) -> Result<()> {
        let md = fs::symlink_metadata(&m.from)
            .with_context(|| format!("reading {}", m.from.display()))?;
        let to = m.to.clone().into_bytes();
        if md.is_dir() {
            self.walk(m, stat, &m.from, &to, Path::new(""))
        } else {
            self.push_path(m, stat, &m.from, &md, to)
        }
    }

    fn excluded(&self, rel: &Path) -> bool {
        !rel.as_os_str().is_empty() && self.exclude.is_match(rel)
    }

    fn walk(
        &mut self,
        m: &Mapping,
        stat: &StatCache,
        dir: &Path,
        to: &[u8],
        rel: &Path,
    ) -> Result<()> {
        let md = fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        if !to.is_empty() {
            self.push_path(m, stat, dir, &md, to.to_vec())?;
        }
        let mut names: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        names.sort();
        for name in names {
            let child = dir.join(&name);
            let child_rel = rel.join(&name);
            if self.excluded(&child_rel) {
                continue;
            }
            let mut child_to = to.to_vec();
            if !child_to.is_empty() {
                child_to.push(b'/');
            }
            child_to.extend_from_slice(name.as_bytes());
            let cmd = fs::symlink_metadata(&child)
                .with_context(|| format!("reading {}", child.display()))?;
            if cmd.is_dir() {
                self.walk(m, stat, &child, &child_to, &child_rel)?;
            } else {
                self.push_path(m, stat, &child, &cmd, child_to)?;
            }
        }
        Ok(())
    }

    fn push_path(
        &mut self,
        m: &Mapping,
        stat: &StatCache,
        src: &Path,
        md: &fs::Metadata,
        path: Vec<u8>,
    ) -> Result<()> {
        check_path(&path).map_err(|e| usage!("{e} (from {})", src.display()))?;
        let (uid, gid) = match m.owner {
            Some(o) => o,
            None if self.keep_owner => (md.uid(), md.gid()),
            None => (0, 0),
        };
        let ft = md.file_type();
        let mut mode = md.mode() & 0o7777;
        let body = if ft.is_dir() {
            Body::Dir
        } else if ft.is_symlink() {
            let t =
                fs::read_link(src).with_context(|| format!("reading link {}", src.display()))?;
            Body::Symlink(t.as_os_str().as_bytes().to_vec())
        } else if ft.is_file() {
            if let Some(mm) = m.mode {
                mode = mm;
            }
            let id = (md.dev(), md.ino());
            if md.nlink() > 1 {
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
                        src,
                    );
                }
                self.inodes.insert(id, path.clone());
            }
            // Known to the stat cache, or hashed later: before the build when the unknown files
            // are few (`hash_unhashed`), else while the layer is written (`hashes_from`).
            let id = FileId::of(md);
            match stat.lookup(src, &id) {
                Some(sha) => {
                    self.hashes.insert(path.clone(), sha);
                }
                None => self.unhashed.push((path.clone(), src.to_path_buf(), id)),
            }
            Body::File {
                src: Source::Disk(src.to_path_buf()),
                size: md.len(),
            }
        } else if self.skip_special || ft.is_socket() {
            self.skipped.push(src.display().to_string());
            return Ok(());
        } else {
            let what = if ft.is_fifo() {
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
            src,
        )
    }

    fn push(&mut self, e: Entry, src: &Path) -> Result<()> {
        if let Some(prev) = self.find(&e.path) {
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
                "{} is written twice in one layer: from {from} and from {}",
                e.display(),
                src.display()
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

    /// Hashes files the stat cache did not know, reading them.
    pub fn hash_unhashed(&mut self, stat: &StatCache) -> Result<()> {
        for (path, src, md) in std::mem::take(&mut self.unhashed) {
            let sha = stat
                .hash(&src, &md)
                .with_context(|| format!("reading {}", src.display()))?;
            self.hashes.insert(path, sha);
        }
        Ok(())
    }

    /// Learns the hashes of unhashed files from the listing of the layer they were written to;
    /// returns (displayed path, size, sha256) of each.
    pub fn hashes_from(
        &mut self,
        stat: &StatCache,
        listing: &crate::rootfs::Listing,
    ) -> Vec<(String, u64, String)> {
        let by_path: HashMap<&str, &str> = listing
            .nodes
            .iter()
            .filter_map(|n| Some((n.path.as_str(), n.sha256.as_deref()?)))
            .collect();
        let mut learned = Vec::new();
        for (path, src, id) in std::mem::take(&mut self.unhashed) {
            let shown = String::from_utf8_lossy(&path).into_owned();
            match by_path.get(shown.as_str()) {
                Some(sha) => {
                    stat.remember(&src, &id, sha);
                    learned.push((format!("/{shown}"), id.size, sha.to_string()));
                }
                None => self.unhashed.push((path, src, id)),
            }
        }
        learned
    }

    pub fn unhashed_bytes(&self) -> u64 {
        self.unhashed.iter().map(|(_, _, id)| id.size).sum()
    }

    /// Per-path input summary (kind, mode, owner, size, hash or link) for cache keys and `-v`.
    pub fn summary(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .map(|e| {
                let what = match &e.body {
                    Body::Dir => "dir".to_string(),
                    Body::File { size, .. } => format!(
                        "file {size} {}",
                        self.hashes.get(&e.path).map(|s| s.as_str()).unwrap_or("")
                    ),
                    Body::Symlink(t) => format!("symlink {}", String::from_utf8_lossy(t)),
                    Body::Link(t) => format!("link {}", String::from_utf8_lossy(t)),
                };
                (
                    e.display(),
                    format!("{what} {:o} {}:{}", e.mode, e.uid, e.gid),
                )
            })
            .collect()
    }
}
