//! Deterministic layer tars: entries in, one content-addressed blob out.
//!
//! Rules (DESIGN.md "Layers"): entries sorted by path bytes (parents first), uid/gid as given
//! (0 by default), no user names, one fixed mtime, modes kept including setuid, symlinks and hard
//! links stored as links, long names as GNU `././@LongLink` records. The tar, its diff_id and the
//! compressed digest are produced in one pass.

pub mod member;
pub mod read;
pub mod sink;
pub mod unpack;

use crate::compress::Compression;
use crate::digest::Digest;
use crate::rootfs::{Capture, Kind, Listing, Node};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Bump when the bytes written for the same entries change; part of every cache key.
pub const TAR_FORMAT: u32 = 1;

/// Where a regular file's bytes come from.
#[derive(Clone, Debug)]
pub enum Source {
    Disk(PathBuf),
    Bytes(Arc<[u8]>),
    /// Member `index` of a zip archive (a wheel).
    Zip {
        archive: Arc<PathBuf>,
        index: usize,
    },
    /// Bytes at `offset` of a file (a member of an uncompressed tar).
    Range {
        file: Arc<PathBuf>,
        offset: u64,
    },
}

#[derive(Clone, Debug)]
pub enum Body {
    Dir,
    File {
        src: Source,
        size: u64,
    },
    Symlink(Vec<u8>),
    /// A hard link to an earlier path of the same layer.
    Link(Vec<u8>),
}

/// One tar entry. `path` is relative to `/`, without leading or trailing slash.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: Vec<u8>,
    pub body: Body,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Entry {
    pub fn dir(path: impl Into<Vec<u8>>, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            body: Body::Dir,
            mode,
            uid: 0,
            gid: 0,
        }
    }
    pub fn bytes(path: impl Into<Vec<u8>>, mode: u32, data: impl Into<Arc<[u8]>>) -> Entry {
        let data: Arc<[u8]> = data.into();
        let size = data.len() as u64;
        Entry {
            path: path.into(),
            body: Body::File {
                src: Source::Bytes(data),
                size,
            },
            mode,
            uid: 0,
            gid: 0,
        }
    }
    pub fn display(&self) -> String {
        format!("/{}", String::from_utf8_lossy(&self.path))
    }
}

/// Checks that a layer path is relative, normalised and free of `..`.
pub fn check_path(p: &[u8]) -> Result<(), String> {
    let s = || String::from_utf8_lossy(p);
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.starts_with(b"/") {
        return Err(format!("absolute path `{}`", s()));
    }
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" => return Err(format!("path `{}` has an empty component", s())),
            b"." | b".." => {
                return Err(format!(
                    "path `{}` has a `{}` component",
                    s(),
                    String::from_utf8_lossy(c)
                ))
            }
            _ if c.contains(&0) => return Err(format!("path `{}` contains a NUL byte", s())),
            _ => {}
        }
    }
    Ok(())
}

/// Sorts entries by path bytes and adds any missing parent directories (mode 0755, root).
/// Two entries with the same path are an error naming it.
pub fn normalise(mut entries: Vec<Entry>) -> Result<Vec<Entry>> {
    use std::collections::HashSet;
    // The paths are borrowed, not copied (100k of them were ~7 MB more at a cold build's peak).
    let have: HashSet<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
    let mut added: HashSet<Vec<u8>> = HashSet::new();
    for e in &entries {
        let mut p = e.path.as_slice();
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            // A parent there already sees to its own parents.
            if have.contains(p) || !added.insert(p.to_vec()) {
                break;
            }
        }
    }
    drop(have);
    entries.extend(added.into_iter().map(|p| Entry::dir(p, 0o755)));
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    for w in entries.windows(2) {
        if w[0].path == w[1].path {
            bail!(
                "two entries for the same path {} in one layer",
                w[0].display()
            );
        }
    }
    relink(&mut entries)?;
    Ok(entries)
}

/// Makes every hard link point at the first path of its group in tar order (the least path:
/// the entries need not be sorted), moving the file body there: a tar reader can only link to
/// a path it has already extracted. Returns each body's move, (from, to) by index.
pub fn relink(entries: &mut [Entry]) -> Result<Vec<(usize, usize)>> {
    let mut moves = Vec::new();
    if !entries.iter().any(|e| matches!(e.body, Body::Link(_))) {
        return Ok(moves);
    }
    let pos: HashMap<&[u8], usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.as_slice(), i))
        .collect();
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Body::Link(t) = &e.body {
            let Some(&ti) = pos.get(t.as_slice()) else {
                bail!(
                    "hard link {} points at {}, which is not in the layer",
                    e.display(),
                    String::from_utf8_lossy(t)
                );
            };
            if !matches!(entries[ti].body, Body::File { .. }) {
                bail!(
                    "hard link {} points at {}, which is not a regular file",
                    e.display(),
                    entries[ti].display()
                );
            }
            groups.entry(ti).or_default().push(i);
        }
    }
    drop(pos);
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_unstable();
    for (target, links) in groups {
        let first = *links
            .iter()
            .min_by(|&&a, &&b| entries[a].path.cmp(&entries[b].path))
            .unwrap();
        if entries[first].path > entries[target].path {
            continue;
        }
        let file = std::mem::replace(&mut entries[target].body, Body::Dir);
        entries[first].body = file;
        moves.push((target, first));
        let first_path = entries[first].path.clone();
        for i in links
            .into_iter()
            .chain(std::iter::once(target))
            .filter(|&i| i != first)
        {
            entries[i].body = Body::Link(first_path.clone());
        }
    }
    Ok(moves)
}

/// What a written layer is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerBlob {
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// Observer of bytes written, for progress bars.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// From the first layer written on, this process gets no transparent huge pages: every 2 MiB
/// page the write's buffers touch would be resident whole. Measured while the allocator still
/// asked for them: a 200 MB zstd layer peaked at 46 MiB with them and 41 without, an 800 MB gzip
/// layer at 60 and 51 MiB. The binary turns them off at its start (main.rs); this covers the
/// library used on its own, and the processes started afterwards (sdist builds in runc), where
/// it changes only the same memory accounting.
fn no_huge_pages() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments only sets a flag of this process.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    });
}

/// Writes `entries` (already `normalise`d) as a layer into the store.
/// Returns the blob facts and the layer's listing (every path with its content hash).
pub fn write(
    entries: &[Entry],
    mtime: u64,
    compression: Compression,
    gzip_level: u32,
    store: &Store,
    progress: Progress,
) -> Result<(LayerBlob, Listing)> {
    no_huge_pages();
    let tmp = store.writer()?;
    // The diff_id, the compressor and the blob's digest run on their own threads (`sink`).
    let mut tar = tar::Builder::new(sink::Sink::new(compression, gzip_level, tmp)?);
    tar.follow_symlinks(false);
    tar.sparse(false);
    let mut zips = ZipCache::default();
    let mut listing = Vec::with_capacity(entries.len());
    let mut captured = std::collections::BTreeMap::new();
    for e in entries {
        check_path(&e.path).map_err(|m| anyhow::anyhow!("refusing layer entry: {m}"))?;
        let (node, text) = append(&mut tar, e, mtime, &mut zips)
            .with_context(|| format!("writing {}", e.display()))?;
        progress(node.size);
        if let Some(t) = text {
            captured.insert(node.path.clone(), t);
        }
        listing.push(node);
    }
    let sink = tar.into_inner()?; // writes the two zero blocks
    let sink::Finished {
        out: tmp,
        diff_id,
        digest,
        size,
    } = sink.finish()?;
    let digest = tmp.commit(&digest)?;
    let blob = LayerBlob {
        diff_id,
        digest,
        size,
        media_type: compression.layer_media_type().to_string(),
    };
    Ok((
        blob,
        Listing {
            nodes: listing,
            captured,
        },
    ))
}

fn header(e: &Entry, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(e.mode & 0o7777);
    h.set_uid(e.uid as u64);
    h.set_gid(e.gid as u64);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    e: &Entry,
    mtime: u64,
    zips: &mut ZipCache,
) -> Result<(Node, Option<String>)> {
    let mut h = header(e, mtime);
    let path = OsStr::from_bytes(&e.path);
    let mut node = Node {
        path: String::from_utf8_lossy(&e.path).into_owned(),
        kind: Kind::Dir,
        mode: e.mode & 0o7777,
        size: 0,
        sha256: None,
        target: None,
    };
    let mut text = None;
    match &e.body {
        Body::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            let mut p = e.path.clone();
            p.push(b'/');
            tar.append_data(&mut h, OsStr::from_bytes(&p), io::empty())?;
        }
        Body::File { src, size } => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(*size);
            let reader = zips.open(src)?;
            let mut hashing = Checked {
                inner: reader,
                hasher: Sha256::new(),
                n: 0,
                capture: Capture::new(&node.path, node.mode, *size),
            };
            tar.append_data(&mut h, path, (&mut hashing).take(*size))?;
            // Only a file on disk can grow; a tar range or zip member reads on past its end.
            let grew = matches!(src, Source::Disk(_)) && hashing.inner.read(&mut [0u8; 1])? != 0;
            if hashing.n != *size || grew {
                bail!("file changed while it was being read (expected {size} bytes)");
            }
            node.kind = Kind::File;
            node.size = *size;
            text = hashing.capture.finish();
            node.sha256 = Some(crate::rootfs::FileSha(hashing.hasher.finalize().into()));
        }
        Body::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut h, path, OsStr::from_bytes(target))?;
            node.kind = Kind::Symlink;
            node.target = Some(String::from_utf8_lossy(target).into_owned());
        }
        Body::Link(target) => {
            h.set_entry_type(tar::EntryType::Link);
            tar.append_link(&mut h, path, OsStr::from_bytes(target))?;
            node.kind = Kind::Link;
            node.target = Some(String::from_utf8_lossy(target).into_owned());
        }
    }
    Ok((node, text))
}

/// Hashes file contents on their way into the tar.
struct Checked<R> {
    inner: R,
    hasher: Sha256,
    n: u64,
    capture: Capture,
}
impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.capture.feed(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// The contents of regular-file entries whose path `want` accepts (paths as in the layer,
/// without a leading slash): what the SBOM keeps of a layer it has just written.
pub fn read_entries(
    entries: &[Entry],
    want: impl Fn(&str) -> bool,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let mut zips = ZipCache::default();
    let mut out = std::collections::BTreeMap::new();
    for e in entries {
        let Body::File { src, .. } = &e.body else {
            continue;
        };
        let path = String::from_utf8_lossy(&e.path).into_owned();
        if !want(&path) {
            continue;
        }
        let mut buf = Vec::new();
        zips.open(src)?.read_to_end(&mut buf)?;
        out.insert(path, buf);
    }
    Ok(out)
}

/// Keeps wheel archives open while their members are streamed in path order.
#[derive(Default)]
struct ZipCache {
    open: HashMap<Arc<PathBuf>, zip::ZipArchive<File>>,
}

impl ZipCache {
    fn open<'a>(&'a mut self, src: &'a Source) -> Result<Box<dyn Read + 'a>> {
        Ok(match src {
            Source::Disk(p) => {
                Box::new(File::open(p).with_context(|| format!("opening {}", p.display()))?)
            }
            Source::Bytes(b) => Box::new(&b[..]),
            Source::Range { file, offset } => {
                use std::io::Seek;
                let mut f = File::open(file.as_path())
                    .with_context(|| format!("opening {}", file.display()))?;
                f.seek(io::SeekFrom::Start(*offset))?;
                Box::new(f)
            }
            Source::Zip { archive, index } => {
                if !self.open.contains_key(archive) {
                    let f = File::open(archive.as_path())
                        .with_context(|| format!("opening {}", archive.display()))?;
                    let z = zip::ZipArchive::new(f)
                        .with_context(|| format!("reading zip {}", archive.display()))?;
                    self.open.insert(archive.clone(), z);
                }
                let z = self.open.get_mut(archive).unwrap();
                Box::new(
                    z.by_index(*index).with_context(|| {
                        format!("reading member {index} of {}", archive.display())
                    })?,
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Entry {
        Entry::bytes(path, 0o644, &b"x"[..])
    }

    fn link(path: &str, to: &str) -> Entry {
        Entry {
            body: Body::Link(to.as_bytes().to_vec()),
            ..Entry::dir(path, 0o644)
        }
    }

    #[test]
    fn relinking_unsorted_entries_moves_each_file_to_the_least_path_of_its_group() {
        // Walk order: the file at `a/x` came first, its link `a-b` sorts first in a tar.
        let mut entries = vec![file("a/x"), link("a-b", "a/x"), link("c", "a/x")];
        let moves = relink(&mut entries).unwrap();
        assert_eq!(moves, vec![(0, 1)]);
        assert!(matches!(entries[1].body, Body::File { .. }));
        for i in [0, 2] {
            assert!(matches!(&entries[i].body, Body::Link(t) if t == b"a-b"));
        }
        // Normalised, nothing moves again.
        let sorted = normalise(entries).unwrap();
        let paths: Vec<&[u8]> = sorted.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(paths, [&b"a"[..], b"a-b", b"a/x", b"c"]);
        assert!(matches!(sorted[1].body, Body::File { .. }));
    }

    #[test]
    fn normalising_adds_each_missing_parent_once() {
        let sorted = normalise(vec![file("a/b/c/d"), file("a/b/e"), file("f/g")]).unwrap();
        let paths: Vec<String> = sorted
            .iter()
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect();
        assert_eq!(paths, ["a", "a/b", "a/b/c", "a/b/c/d", "a/b/e", "f", "f/g"]);
        assert!(sorted
            .iter()
            .filter(|e| matches!(e.body, Body::Dir))
            .all(|e| e.mode == 0o755 && e.uid == 0));
    }

    /// The process's THP flag as the kernel reports it (`THP_enabled` in /proc/self/status).
    fn thp_enabled() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .expect("the kernel reports THP_enabled");
        line.split_whitespace().nth(1) == Some("1")
    }

    #[test]
    fn writing_a_layer_turns_off_transparent_huge_pages_for_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entries = vec![Entry {
            path: b"a".to_vec(),
            body: Body::File {
                src: Source::Bytes(Arc::from(&b"hello"[..])),
                size: 5,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
        }];
        write(&entries, 0, Compression::Gzip, 5, &store, &|_| {}).unwrap();
        assert!(!thp_enabled());
    }
}
