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
    pub sha256: Option<String>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Every path of one layer, in tar order.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Listing {
    pub nodes: Vec<Node>,
    /// Small text the checks need, by path (see `Capture`): whole `*.dist-info/RECORD`
    /// files, the `#!` line of executable scripts, and for executable ELF files `\x7fELF`
    /// followed by ` ` and the program interpreter (`PT_INTERP`) when they name one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub captured: BTreeMap<String, String>,
}

/// Largest RECORD kept in a listing.
const MAX_CAPTURE: u64 = 16 << 20;
/// How much of an executable is read for its `#!` line.
const HEAD: usize = 512;
/// How much of an executable ELF file is read for its program headers and `PT_INTERP` (the
/// interpreter string sits right after the program headers, well inside this).
const ELF_HEAD: usize = 4096;
/// What an ELF capture starts with: never a `#!` line.
pub const ELF_MAGIC: &str = "\u{7f}ELF";

/// Collects the text of one file as its bytes stream past, when the checks will need it.
pub struct Capture {
    whole: bool,
    head: bool,
    buf: Vec<u8>,
}

impl Capture {
    /// What to keep of the regular file `path` (no leading slash) with `mode` and `size`.
    pub fn new(path: &str, mode: u32, size: u64) -> Capture {
        let whole = path.ends_with(".dist-info/RECORD") && size <= MAX_CAPTURE;
        Capture {
            whole,
            head: !whole && mode & 0o111 != 0 && size > 2,
            buf: Vec::new(),
        }
    }
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.whole {
            self.buf.extend_from_slice(bytes);
        } else if self.head {
            let limit = if self.buf.starts_with(b"\x7fELF") || self.buf.len() < 4 {
                ELF_HEAD
            } else {
                HEAD
            };
            if self.buf.len() < limit {
                let n = bytes.len().min(limit - self.buf.len());
                self.buf.extend_from_slice(&bytes[..n]);
            }
        }
    }
    /// The captured text: the whole file, or the `#!` line of an executable script.
    pub fn finish(self) -> Option<String> {
        if self.whole {
            return Some(String::from_utf8_lossy(&self.buf).into_owned());
        }
        if self.head && self.buf.starts_with(b"\x7fELF") {
            return Some(match elf_interp(&self.buf) {
                Some(i) => format!("{ELF_MAGIC} {i}"),
                None => ELF_MAGIC.to_string(),
            });
        }
        if self.head && self.buf.starts_with(b"#!") {
            let end = self
                .buf
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(self.buf.len());
            return Some(
                String::from_utf8_lossy(&self.buf[..end])
                    .trim_end()
                    .to_string(),
            );
        }
        None
    }
}

/// The program interpreter (`PT_INTERP`) an ELF file names, read from its first bytes
/// (ELF32/ELF64, either byte order). `None` for a static executable or when the headers are
/// not within `head`.
pub fn elf_interp(head: &[u8]) -> Option<String> {
    if head.len() < 52 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let wide = head[4] == 2;
    let le = head[5] == 1;
    let u16_at = |o: usize| -> Option<u64> {
        let b: [u8; 2] = head.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        } as u64)
    };
    let u32_at = |o: usize| -> Option<u64> {
        let b: [u8; 4] = head.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as u64)
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = head.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    // e_phoff, e_phentsize, e_phnum (ELF spec, "ELF Header").
    let (phoff, phentsize, phnum) = if wide {
        (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?)
    } else {
        (u32_at(0x1c)?, u16_at(0x2a)?, u16_at(0x2c)?)
    };
    const PT_INTERP: u64 = 3;
    for i in 0..phnum.min(64) {
        let ph = usize::try_from(phoff + i * phentsize).ok()?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        // p_offset and p_filesz of the segment holding the NUL-terminated path.
        let (off, size) = if wide {
            (u64_at(ph + 8)?, u64_at(ph + 32)?)
        } else {
            (u32_at(ph + 4)?, u32_at(ph + 16)?)
        };
        let (off, size) = (usize::try_from(off).ok()?, usize::try_from(size).ok()?);
        let raw = head.get(off..off.checked_add(size)?)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        return Some(String::from_utf8_lossy(&raw[..end]).into_owned());
    }
    None
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
                (n, Some(hex::encode(h.finalize())))
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
                self.files.insert(n.path.clone(), (n.clone(), layer));
                match listing.captured.get(&n.path) {
                    Some(t) => self.captured.insert(n.path.clone(), t.clone()),
                    None => self.captured.remove(&n.path),
                };
            }
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
