//! Store maintenance: `imgbuild store fsck` (every blob matches its name, every record points
//! at a blob that exists, no temp file left by a dead build) and `imgbuild store gc`.

use super::Store;
use crate::digest::{Digest, HashReader};
use anyhow::Result;
use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs whose content does not hash to their name (removed when repairing).
    pub corrupt: Vec<String>,
    /// Cache records that point at missing or wrong-sized blobs (removed when repairing).
    pub dangling: Vec<String>,
    /// Unreadable record files (removed when repairing).
    pub bad_records: Vec<String>,
    pub temps_removed: usize,
}

impl FsckReport {
    pub fn problems(&self) -> usize {
        self.corrupt.len() + self.dangling.len() + self.bad_records.len()
    }
}

/// Checks the whole store; with `repair`, removes what is wrong (a rebuild recreates it).
pub fn fsck(store: &Store, repair: bool) -> Result<FsckReport> {
    let mut r = FsckReport::default();
    let blobs = store.root.join("blobs/sha256");
    for e in fs::read_dir(&blobs)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if let Some(pid) = super::temp_owner(&name) {
            if !Path::new(&format!("/proc/{pid}")).exists() && fs::remove_file(&path).is_ok() {
                r.temps_removed += 1;
            }
            continue;
        }
        let ok = match (
            Digest::parse(&format!("sha256:{name}")),
            fs::File::open(&path),
        ) {
            (Ok(d), Ok(f)) => match HashReader::new(f).drain() {
                Ok((got, n)) => {
                    r.bytes += n;
                    got == d
                }
                Err(_) => false,
            },
            _ => false,
        };
        r.blobs += 1;
        if !ok {
            r.corrupt.push(name);
            if repair {
                let _ = fs::remove_file(&path);
            }
        }
    }
    r.temps_removed += super::remove_dead_temps(&store.root.join("tmp"));
    for (kind, path) in records(store) {
        r.temps_removed += super::remove_dead_temps(path.parent().unwrap());
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            r.bad_records.push(path.display().to_string());
            if repair {
                let _ = fs::remove_file(&path);
            }
            continue;
        };
        if kind == "layers" {
            let digest = v["blob"]["digest"]
                .as_str()
                .and_then(|d| Digest::parse(d).ok());
            let size = v["blob"]["size"].as_u64();
            let fine = match (digest, size) {
                (Some(d), Some(s)) => {
                    store.size(&d) == Some(s) && !r.corrupt.iter().any(|c| c == d.hex())
                }
                _ => false,
            };
            if !fine {
                r.dangling.push(path.display().to_string());
                if repair {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
    Ok(r)
}

/// Every record file in the store, with its kind (directory name).
fn records(store: &Store) -> Vec<(String, std::path::PathBuf)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&store.root) else {
        return out;
    };
    for d in rd.flatten() {
        let kind = d.file_name().to_string_lossy().into_owned();
        if kind == "blobs" || kind == "tmp" || !d.path().is_dir() {
            continue;
        }
        for f in fs::read_dir(d.path()).into_iter().flatten().flatten() {
            if f.path().extension().is_some_and(|e| e == "json") {
                out.push((kind.clone(), f.path()));
            }
        }
    }
    out
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub kept: usize,
    pub removed: usize,
    pub freed: u64,
    pub records_expired: usize,
}

/// Removes blobs no record mentions. Records (cache entries, build roots) older than
/// `max_age` are dropped first. Takes the store exclusively: running builds finish first.
pub fn gc(store: &Store, max_age: Option<Duration>) -> Result<GcReport> {
    let mut r = GcReport::default();
    let mut live = HashSet::new();
    let now = SystemTime::now();
    for (_, path) in records(store) {
        if let Some(age) = max_age {
            let old = fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() > age)
                .unwrap_or(false);
            if old && fs::remove_file(&path).is_ok() {
                r.records_expired += 1;
                continue;
            }
        }
        if let Ok(text) = fs::read_to_string(&path) {
            collect_digests(&text, &mut live);
        }
    }
    // Manifests named by roots keep their config and layers.
    for hex in live.clone() {
        if let Ok(d) = Digest::parse(&format!("sha256:{hex}")) {
            if let Ok(bytes) = fs::read(store.blob_path(&d)) {
                if bytes.len() < 4 << 20 && bytes.first() == Some(&b'{') {
                    collect_digests(&String::from_utf8_lossy(&bytes), &mut live);
                }
            }
        }
    }
    for e in fs::read_dir(store.root.join("blobs/sha256"))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if live.contains(&name) {
            r.kept += 1;
        } else if super::temp_owner(&name).is_none() {
            // A blob also linked into an OCI layout frees nothing while the layout keeps it.
            use std::os::unix::fs::MetadataExt;
            r.freed += e
                .metadata()
                .map(|m| if m.nlink() > 1 { 0 } else { m.len() })
                .unwrap_or(0);
            if fs::remove_file(e.path()).is_ok() {
                r.removed += 1;
            }
        }
    }
    // The unpacked build roots of sdist builds: a cache, made again when needed.
    let roots = store.root.join("build-roots");
    if roots.is_dir() {
        r.freed += dir_bytes(&roots);
        fs::remove_dir_all(&roots)?;
    }
    Ok(r)
}

/// The bytes of the regular files under `dir` (each inode once).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && seen.insert(m.ino()) {
                total += m.len();
            }
        }
    }
    total
}

/// Every 64-hex-digit run in `text` (digests with or without `sha256:`).
fn collect_digests(text: &str, out: &mut HashSet<String>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 64 <= b.len() {
        let run = b[i..]
            .iter()
            .take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            .count();
        if run == 64 {
            out.insert(text[i..i + 64].to_string());
        }
        i += run.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsck_finds_corrupt_blobs_and_dangling_records_and_repairs_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let good = s.put(b"good").unwrap();
        let bad = s.put(b"bad").unwrap();
        fs::write(s.blob_path(&bad), b"tampered").unwrap();
        let missing = Digest::of(b"never stored");
        s.put_record(
            "layers",
            "k1",
            &serde_json::json!({"blob": {"digest": missing.to_string(), "size": 1}}),
        )
        .unwrap();
        s.put_record(
            "layers",
            "k2",
            &serde_json::json!({"blob": {"digest": good.to_string(), "size": 4}}),
        )
        .unwrap();
        fs::write(dir.path().join("tmp/.blob.999999999.0.0.tmp"), b"half").unwrap();
        let r = fsck(&s, false).unwrap();
        assert_eq!(r.corrupt, vec![bad.hex().to_string()]);
        assert_eq!(r.dangling.len(), 1);
        assert_eq!(r.temps_removed, 1, "a dead build's temp file is removed");
        let r = fsck(&s, true).unwrap();
        assert_eq!(r.problems(), 2);
        assert_eq!(fsck(&s, false).unwrap().problems(), 0, "repaired");
        assert!(s.has(&good));
    }

    #[test]
    fn gc_keeps_what_records_name_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let layer = s.put(b"layer").unwrap();
        let config = s.put(b"{}").unwrap();
        let manifest = s.put(format!("{{\"config\":{{\"digest\":\"{config}\"}},\"layers\":[{{\"digest\":\"{layer}\"}}]}}").as_bytes()).unwrap();
        let junk = s.put(b"junk").unwrap();
        s.put_record(
            "roots",
            manifest.hex(),
            &serde_json::json!({"digest": manifest.to_string()}),
        )
        .unwrap();
        let r = gc(&s, None).unwrap();
        assert_eq!((r.kept, r.removed), (3, 1));
        assert_eq!(r.freed, 4, "junk's 4 bytes (and no build roots)");
        assert!(s.has(&layer) && s.has(&config) && s.has(&manifest) && !s.has(&junk));
    }

    #[test]
    fn gc_counts_no_bytes_freed_for_a_blob_a_layout_still_links() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("store")).unwrap();
        let old = s.put(b"an old layer").unwrap();
        let kept = dir.path().join("layout-blob");
        fs::hard_link(s.blob_path(&old), &kept).unwrap();
        let r = gc(&s, None).unwrap();
        assert_eq!((r.removed, r.freed), (1, 0));
        assert!(!s.has(&old));
        assert_eq!(fs::read(kept).unwrap(), b"an old layer");
    }
}
