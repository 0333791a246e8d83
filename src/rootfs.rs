//! The filesystem a container sees: per-layer listings merged with whiteouts applied.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Read;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "d")]
    Dir,
    #[serde(rename = "f")]
    File,
    #[serde(rename = "l")]
    Symlink,
    #[serde(rename = "h")]
    Link,
    #[serde(rename = "o")]
    Other,
}

/// One path of one layer. `path` has no leading slash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Node {
    #[serde(rename = "p")]
    pub path: String,
    #[serde(rename = "k")]
    pub kind: Kind,
    #[serde(rename = "m")]
    pub mode: u32,
    #[serde(rename = "s", default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<FileSha>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A file's sha256 in a listing, kept as its 32 bytes (as hex strings, those of a layer of 100k
/// files were 6.4 MB of its build's peak); written and read as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileSha(pub [u8; 32]);

impl FileSha {
    /// From 64 hex digits (either case); `None` for anything else.
    pub fn from_hex(s: &str) -> Option<FileSha> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(FileSha(b))
    }

    /// The lowercase hex, in `buf`.
    pub fn hex_in<'a>(&self, buf: &'a mut [u8; 64]) -> &'a str {
        hex::encode_to_slice(self.0, buf).expect("64 bytes for 32");
        std::str::from_utf8(buf).expect("hex is ASCII")
    }

    pub fn hex(&self) -> String {
        self.hex_in(&mut [0u8; 64]).to_string()
    }
}

impl std::fmt::Display for FileSha {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.hex_in(&mut [0u8; 64]))
    }
}

impl std::fmt::Debug for FileSha {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl PartialEq<str> for FileSha {
    fn eq(&self, other: &str) -> bool {
        FileSha::from_hex(other) == Some(*self)
    }
}

impl Serialize for FileSha {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.hex_in(&mut [0u8; 64]))
    }
}

impl<'de> Deserialize<'de> for FileSha {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FileSha, D::Error> {
        let s = <std::borrow::Cow<str>>::deserialize(d)?;
        FileSha::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a sha256 in hex")))
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Every path of one layer, in tar order.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Listing {
    pub nodes: Vec<Node>,
    /// Small text the checks need, by path (see `Capture`): whole `*.dist-info/RECORD`
    /// files and dynamic-loader configuration (`is_ld_conf`), the `#!` line of executable
    /// scripts, and for every ELF file (any mode) its machine, loader, needed libraries and
    /// search paths (`elf::Info::encode`, starting with `\x7fELF`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub captured: BTreeMap<String, String>,
}

/// Largest RECORD kept in a listing.
const MAX_CAPTURE: u64 = 16 << 20;
/// Largest dynamic-loader configuration file kept.
const MAX_LD_CONF: u64 = 64 << 10;
/// How much of an executable is read for its `#!` line.
const HEAD: usize = 512;
/// What an ELF capture starts with: never a `#!` line (see `elf::Info::encode`).
pub const ELF_MAGIC: &str = crate::elf::TEXT_MAGIC;

/// Whether `path` is a configuration file of the dynamic loader (glibc's `/etc/ld.so.conf`
/// and what it includes, musl's `/etc/ld-musl-ARCH.path`), kept whole in listings.
pub fn is_ld_conf(path: &str) -> bool {
    path == "etc/ld.so.conf"
        || path.ends_with("/ld.so.conf")
        || (path.starts_with("etc/ld.so.conf.d/") && path.ends_with(".conf"))
        || (path.starts_with("etc/ld-musl-") && path.ends_with(".path"))
}

/// Collects the text of one file as its bytes stream past, when the checks will need it.
pub struct Capture {
    state: State,
}

enum State {
    /// The whole file (RECORD, loader configuration).
    Whole(Vec<u8>),
    /// The first bytes, until they say what the file is; `exec` when a `#!` line counts.
    Sniff {
        exec: bool,
        buf: Vec<u8>,
    },
    Script(Vec<u8>),
    Elf(Box<crate::elf::Stream>),
    Off,
}

impl Capture {
    /// What to keep of the regular file `path` (no leading slash) with `mode` and `size`.
    pub fn new(path: &str, mode: u32, size: u64) -> Capture {
        let state = if path.ends_with(".dist-info/RECORD") && size <= MAX_CAPTURE
            || is_ld_conf(path) && size <= MAX_LD_CONF
        {
            State::Whole(Vec::new())
        } else if size > 2 {
            State::Sniff {
                exec: mode & 0o111 != 0,
                buf: Vec::new(),
            }
        } else {
            State::Off
        };
        Capture { state }
    }
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        if let State::Sniff { exec, buf } = &mut self.state {
            let n = bytes.len().min(4 - buf.len());
            buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if buf.len() < 4 {
                return;
            }
            let buf = std::mem::take(buf);
            self.state = if buf == crate::elf::MAGIC {
                let mut s = Box::<crate::elf::Stream>::default();
                s.feed(&buf);
                State::Elf(s)
            } else if buf.starts_with(b"#!") && *exec {
                State::Script(buf)
            } else {
                State::Off
            };
        }
        match &mut self.state {
            State::Whole(buf) => buf.extend_from_slice(bytes),
            State::Script(buf) if buf.len() < HEAD => {
                let n = bytes.len().min(HEAD - buf.len());
                buf.extend_from_slice(&bytes[..n]);
            }
            State::Elf(s) => s.feed(bytes),
            _ => {}
        }
    }
    /// The captured text: the whole file, the `#!` line of an executable script, or what an
    /// ELF file needs to be loaded (`elf::Info::encode`).
    pub fn finish(self) -> Option<String> {
        let script = match self.state {
            State::Whole(buf) => return Some(String::from_utf8_lossy(&buf).into_owned()),
            State::Elf(s) => return Some(s.finish().encode()),
            State::Sniff { exec: true, buf } | State::Script(buf) if buf.starts_with(b"#!") => buf,
            _ => return None,
        };
        let end = script
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(script.len());
        Some(
            String::from_utf8_lossy(&script[..end])
                .trim_end()
                .to_string(),
        )
    }
}

/// The program interpreter (`PT_INTERP`) an ELF file names, read from its first bytes.
/// `None` for a static executable or when the headers are not within `head`.
pub fn elf_interp(head: &[u8]) -> Option<String> {
    crate::elf::read(head)?.interp
}

/// Options for reading a layer tar that did not come from imgbuild.
pub struct ReadLimits {
    /// Refuse device nodes and FIFOs instead of listing them as `Other`.
    pub refuse_devices: bool,
}

impl Listing {
    /// Reads an uncompressed layer tar, hashing every regular file. Entries with absolute paths
    /// or `..` are refused: a layer must never address anything outside the root.
    pub fn from_tar(r: impl Read, limits: &ReadLimits) -> Result<Listing> {
        let mut ar = tar::Archive::new(r);
        let mut nodes = Vec::new();
        let mut captured = BTreeMap::new();
        for entry in ar.entries().context("reading layer tar")? {
            let mut e = entry.context("reading layer tar entry")?;
            let raw = e.path_bytes().into_owned();
            let path = clean_tar_path(&raw)?;
            let kind = match e.header().entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                tar::EntryType::Symlink => Kind::Symlink,
                tar::EntryType::Link => Kind::Link,
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
                t if limits.refuse_devices
                    && (t.is_block_special() || t.is_character_special() || t.is_fifo()) =>
                {
                    bail!("layer entry /{path} is a device node or FIFO; refusing it")
                }
                _ => Kind::Other,
            };
            let mode = e.header().mode().unwrap_or(0) & 0o7777;
            let target = match kind {
                Kind::Symlink | Kind::Link => {
                    let t = e
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    if kind == Kind::Link {
                        Some(clean_tar_path(t.as_bytes())?)
                    } else {
                        Some(t)
                    }
                }
                _ => None,
            };
            let (size, sha256) = if kind == Kind::File {
                let mut cap = Capture::new(&path, mode, e.size());
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                let mut n = 0u64;
                loop {
                    let k = e
                        .read(&mut buf)
                        .with_context(|| format!("reading /{path} from layer"))?;
                    if k == 0 {
                        break;
                    }
                    h.update(&buf[..k]);
                    cap.feed(&buf[..k]);
                    n += k as u64;
                }
                if let Some(text) = cap.finish() {
                    captured.insert(path.clone(), text);
                }
                (n, Some(FileSha(h.finalize().into())))
            } else {
                (0, None)
            };
            nodes.push(Node {
                path,
                kind,
                mode,
                size,
                sha256,
                target,
            });
        }
        Ok(Listing { nodes, captured })
    }
}

#[cfg(test)]
impl Listing {
    /// Test helper: a regular file at `path` (with its parent directories) whose captured text
    /// is `captured`, as a layer read back would list it.
    pub fn add_file(&mut self, path: &str, mode: u32, size: u64, captured: Option<String>) {
        let parts: Vec<&str> = path.split('/').collect();
        for n in 1..parts.len() {
            let dir = parts[..n].join("/");
            if !self.nodes.iter().any(|x| x.path == dir) {
                self.nodes.push(Node {
                    path: dir,
                    kind: Kind::Dir,
                    mode: 0o755,
                    size: 0,
                    sha256: None,
                    target: None,
                });
            }
        }
        self.nodes.push(Node {
            path: path.to_string(),
            kind: Kind::File,
            mode,
            size,
            sha256: None,
            target: None,
        });
        if let Some(t) = captured {
            self.captured.insert(path.to_string(), t);
        }
    }
}

/// Normalises a tar path (`./a/b/` → `a/b`); refuses absolute paths and `..`.
pub fn clean_tar_path(raw: &[u8]) -> Result<String> {
    let s = String::from_utf8_lossy(raw);
    if s.starts_with('/') {
        bail!("layer entry `{s}` has an absolute path; refusing it");
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("layer entry `{s}` has a `..` component; refusing it"),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// The merged view of several layers: path → (node, index of the layer that wrote it).
#[derive(Default, Clone)]
pub struct Rootfs {
    pub files: BTreeMap<String, (Node, usize)>,
    /// The captured text of paths that are still present (see `Listing::captured`).
    pub captured: BTreeMap<String, String>,
    /// Paths of lower layers that a later layer removed (whiteout, opaque directory, or a
    /// non-directory replacing a directory), with the index of that layer.
    pub removed: BTreeMap<String, usize>,
}

const WH: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

impl Rootfs {
    /// Applies one layer on top, honouring whiteouts and opaque directories.
    pub fn apply(&mut self, layer: usize, listing: &Listing) {
        for n in &listing.nodes {
            let text = listing.captured.get(&n.path).cloned();
            self.put(layer, n.clone(), text);
        }
    }

    /// `apply` with a listing no longer needed: its nodes are moved in, not copied (a layer
    /// of 100k files: ~18 MB less while the checks run).
    pub fn apply_owned(&mut self, layer: usize, listing: Listing) {
        let Listing {
            nodes,
            mut captured,
        } = listing;
        for n in nodes {
            let text = captured.remove(&n.path);
            self.put(layer, n, text);
        }
    }

    /// One node of layer `layer`, with its captured text.
    fn put(&mut self, layer: usize, n: Node, text: Option<String>) {
        let (dir, name) = match n.path.rfind('/') {
            Some(i) => (&n.path[..i], &n.path[i + 1..]),
            None => ("", n.path.as_str()),
        };
        if name == OPAQUE {
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            let lower: Vec<String> = self
                .files
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter(|(_, (_, l))| *l < layer)
                .map(|(k, _)| k.clone())
                .collect();
            for k in lower {
                self.drop_path(&k, layer);
            }
        } else if let Some(victim) = name.strip_prefix(WH) {
            let victim = if dir.is_empty() {
                victim.to_string()
            } else {
                format!("{dir}/{victim}")
            };
            self.remove_tree(&victim, layer);
        } else {
            if n.kind != Kind::Dir {
                // A non-directory replaces a directory with everything under it.
                self.remove_tree(&n.path, layer);
            }
            match text {
                Some(t) => self.captured.insert(n.path.clone(), t),
                None => self.captured.remove(&n.path),
            };
            self.files.insert(n.path.clone(), (n, layer));
        }
    }

    fn drop_path(&mut self, path: &str, layer: usize) {
        if self.files.remove(path).is_some() {
            self.removed.insert(path.to_string(), layer);
        }
        self.captured.remove(path);
    }

    fn remove_tree(&mut self, path: &str, layer: usize) {
        self.drop_path(path, layer);
        let prefix = format!("{path}/");
        let under: Vec<String> = self
            .files
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in under {
            self.drop_path(&k, layer);
        }
    }

    /// The layer whose tar holds the bytes of regular file `path` (symlinks followed), and the
    /// path in that tar (a hard link's target there); `None` when it is missing or not a file.
    pub fn file_in_layer(&self, path: &str) -> Option<(usize, String)> {
        let (real, node) = self.resolve(path)?;
        if node.kind != Kind::File {
            return None;
        }
        let (n, layer) = &self.files[&real];
        let inner = match n.kind {
            Kind::Link => n.target.clone().unwrap_or_default(),
            _ => real,
        };
        Some((*layer, inner))
    }

    /// Resolves `path` (absolute or relative to `/`) following symlinks in every component,
    /// as the kernel would inside the container. Returns the final path and its node.
    pub fn resolve(&self, path: &str) -> Option<(String, &Node)> {
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(String::from)
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(c);
            let joined = cur.join("/");
            let (node, _) = self.files.get(&joined)?;
            if node.kind == Kind::Symlink {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let t = node.target.clone().unwrap_or_default();
                cur.pop();
                if t.starts_with('/') {
                    cur.clear();
                }
                for part in t.split('/').filter(|c| !c.is_empty()).rev() {
                    todo.push(part.to_string());
                }
            }
        }
        let joined = cur.join("/");
        if joined.is_empty() {
            return None;
        }
        let (node, _) = self.files.get(&joined)?;
        let node = if node.kind == Kind::Link {
            &self.files.get(node.target.as_deref().unwrap_or(""))?.0
        } else {
            node
        };
        Some((joined, node))
    }

    /// True when `path` exists in the merged view (following symlinks), or is `/`.
    pub fn exists(&self, path: &str) -> bool {
        path.trim_matches('/').is_empty() || self.resolve(path).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_moved_in_merges_as_one_copied_in() {
        let node = |path: &str, kind: Kind, sha: Option<u8>| Node {
            path: path.into(),
            kind,
            mode: 0o644,
            size: 1,
            sha256: sha.map(|b| FileSha([b; 32])),
            target: None,
        };
        let lower = Listing {
            nodes: vec![
                node("a", Kind::Dir, None),
                node("a/x", Kind::File, Some(1)),
                node("b", Kind::File, Some(2)),
            ],
            captured: [("b".to_string(), "#!/bin/sh".to_string())].into(),
        };
        let upper = Listing {
            nodes: vec![
                node("a/.wh.x", Kind::File, None),
                node("b", Kind::File, Some(3)),
                node("c", Kind::File, Some(4)),
            ],
            captured: [("c".to_string(), "#!/usr/bin/env python3".to_string())].into(),
        };
        let mut copied = Rootfs::default();
        copied.apply(0, &lower);
        copied.apply(1, &upper);
        let mut moved = Rootfs::default();
        moved.apply_owned(0, lower);
        moved.apply_owned(1, upper);
        assert_eq!(moved.files, copied.files);
        assert_eq!(moved.captured, copied.captured);
        assert_eq!(moved.removed, copied.removed);
        assert_eq!(moved.files["b"].0.sha256, Some(FileSha([3; 32])));
        assert!(!moved.files.contains_key("a/x") && !moved.captured.contains_key("b"));
    }

    #[test]
    fn a_file_sha_is_written_and_read_as_lowercase_hex() {
        let sha = FileSha([0xab; 32]);
        let json = serde_json::to_string(&sha).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<FileSha>(&json).unwrap(), sha);
        assert_eq!(
            serde_json::from_str::<FileSha>(&format!("\"{}\"", "AB".repeat(32))).unwrap(),
            sha
        );
        let err = serde_json::from_str::<FileSha>("\"abc\"").unwrap_err();
        assert!(err.to_string().contains("not a sha256 in hex"), "{err}");
        assert!(sha.eq("ab".repeat(32).as_str()) && !sha.eq("cd".repeat(32).as_str()));
    }

    fn node(path: &str, kind: Kind, target: Option<&str>) -> Node {
        Node {
            path: path.into(),
            kind,
            mode: 0o755,
            size: 0,
            sha256: None,
            target: target.map(String::from),
        }
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers() {
        let mut fs = Rootfs::default();
        fs.apply(
            0,
            &Listing {
                captured: BTreeMap::new(),
                nodes: vec![
                    node("a", Kind::Dir, None),
                    node("a/x", Kind::File, None),
                    node("a/y", Kind::File, None),
                    node("b", Kind::Dir, None),
                    node("b/z", Kind::File, None),
                ],
            },
        );
        fs.apply(
            1,
            &Listing {
                captured: BTreeMap::new(),
                nodes: vec![
                    node("a/.wh.x", Kind::File, None),
                    node("b/.wh..wh..opq", Kind::File, None),
                    node("b/new", Kind::File, None),
                ],
            },
        );
        assert!(!fs.exists("/a/x"));
        assert!(fs.exists("/a/y"));
        assert!(!fs.exists("/b/z"));
        assert!(fs.exists("/b/new"));
        assert_eq!(fs.files.get("b/new").map(|(_, l)| *l), Some(1));
    }

    #[test]
    fn resolve_follows_relative_and_absolute_symlinks() {
        let mut fs = Rootfs::default();
        fs.apply(
            0,
            &Listing {
                captured: BTreeMap::new(),
                nodes: vec![
                    node("bin", Kind::Symlink, Some("usr/bin")),
                    node("usr", Kind::Dir, None),
                    node("usr/bin", Kind::Dir, None),
                    node("usr/bin/python3", Kind::Symlink, Some("python3.11")),
                    node("usr/bin/python3.11", Kind::File, None),
                    node("loop", Kind::Symlink, Some("/loop")),
                ],
            },
        );
        assert_eq!(fs.resolve("/bin/python3").unwrap().0, "usr/bin/python3.11");
        assert!(
            fs.resolve("/loop").is_none(),
            "symlink loops resolve to nothing"
        );
    }

    #[test]
    fn tar_paths_with_dotdot_or_absolute_are_refused() {
        assert!(clean_tar_path(b"../etc/passwd").is_err());
        assert!(clean_tar_path(b"/etc/passwd").is_err());
        assert_eq!(clean_tar_path(b"./usr/bin/").unwrap(), "usr/bin");
    }
}
