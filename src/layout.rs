//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/…`): read bases from
//! them and write built images into them, with their referrers (SBOM, provenance) listed by
//! an index tagged `sha256-<image digest hex>`, as a registry without the referrers API does.

use crate::digest::{Digest, HashReader};
use crate::image::{
    self, Built, Descriptor, Index, Manifest, Platform, Referrer, ANN_REF_NAME, MT_DOCKER_LIST,
    MT_INDEX,
};
use crate::store::{temp_path, write_atomic, Store};
use crate::target::{Destination, Written};
use crate::usage;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// Opens an existing layout for reading.
    pub fn open(dir: &Path) -> Result<Layout> {
        if !dir.join("index.json").is_file() {
            bail!(usage!(
                "{} is not an OCI image layout (no index.json)",
                dir.display()
            ));
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens or creates a layout for writing.
    pub fn create(dir: &Path) -> Result<Layout> {
        fs::create_dir_all(dir.join("blobs/sha256"))
            .with_context(|| format!("creating OCI layout {}", dir.display()))?;
        let marker = dir.join("oci-layout");
        if !marker.is_file() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !dir.join("index.json").is_file() {
            let empty = Index {
                schema_version: 2,
                media_type: Some(MT_INDEX.into()),
                manifests: vec![],
                annotations: BTreeMap::new(),
            };
            write_atomic(&dir.join("index.json"), &image::to_bytes(&empty))?;
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    pub fn index(&self) -> Result<Index> {
        let p = self.dir.join("index.json");
        let bytes = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| usage!("{} is not a valid OCI index: {e}", p.display()))
    }

    /// Reads a blob, checking its digest (and size, when a descriptor gives one).
    pub fn read_blob(&self, d: &Digest, size: Option<u64>) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let bytes = fs::read(&p)
            .with_context(|| format!("blob {d} is missing from layout {}", self.dir.display()))?;
        if let Some(s) = size {
            if bytes.len() as u64 != s {
                bail!(
                    "blob {d} in {} has {} bytes, but its descriptor says {s}",
                    self.dir.display(),
                    bytes.len()
                );
            }
        }
        let got = Digest::of(&bytes);
        if &got != d {
            bail!(
                "blob {d} in {} does not match its digest (content hashes to {got})",
                self.dir.display()
            );
        }
        Ok(bytes)
    }

    /// The document a descriptor names (a manifest, an index, a config), digest and size
    /// checked.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, d: &Descriptor) -> Result<T> {
        Ok(serde_json::from_slice(
            &self.read_blob(&d.digest, Some(d.size))?,
        )?)
    }

    /// Finds the manifest tagged `tag` (or the only one), descending into an index for `platform`.
    pub fn resolve(
        &self,
        tag: Option<&str>,
        platform: &Platform,
    ) -> Result<(Descriptor, Manifest)> {
        let index = self.index()?;
        let desc = match tag {
            Some(t) => index
                .manifests
                .iter()
                .find(|m| m.annotations.get(ANN_REF_NAME).map(|s| s.as_str()) == Some(t)),
            None => {
                // Referrers (SBOM, provenance) are listed beside the images they refer to.
                let images: Vec<&Descriptor> = index
                    .manifests
                    .iter()
                    .filter(|m| !is_referrers_tag(m))
                    .collect();
                if images.len() == 1 {
                    images.first().copied()
                } else {
                    None
                }
            }
        };
        let Some(desc) = desc.cloned() else {
            let tags: Vec<&str> = index
                .manifests
                .iter()
                .filter_map(|m| m.annotations.get(ANN_REF_NAME))
                .map(|s| s.as_str())
                .collect();
            return Err(usage!(
                "no image {} in OCI layout {} (tags there: {})",
                tag.map(|t| format!("tagged `{t}`"))
                    .unwrap_or_else(|| "without a tag".into()),
                self.dir.display(),
                if tags.is_empty() {
                    "none".to_string()
                } else {
                    tags.join(", ")
                }
            ));
        };
        self.manifest_for(desc, platform)
    }

    fn manifest_for(
        &self,
        desc: Descriptor,
        platform: &Platform,
    ) -> Result<(Descriptor, Manifest)> {
        let bytes = self.read_blob(&desc.digest, Some(desc.size))?;
        if desc.media_type == MT_INDEX || desc.media_type == MT_DOCKER_LIST {
            let idx: Index = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing index {}", desc.digest))?;
            let m = idx
                .for_platform(platform)
                .map_err(|e| usage!("image index {} {e}", desc.digest))?;
            return self.manifest_for(m.clone(), platform);
        }
        let m: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing manifest {}", desc.digest))?;
        Ok((desc, m))
    }

    /// Puts a blob of the store into the layout unless the layout already has it with the
    /// right size: a hard link where the two share a file system (blobs are never written in
    /// place, so the two names cannot diverge), else a copy. A blob this process did not write
    /// is re-hashed first (read once: linked, it needs no second write and fsync; the bench's
    /// cold api build spent 112 ms copying and syncing its base's blobs).
    pub fn put_from_store(&self, store: &Store, d: &Digest, size: u64) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let dest = self.blob_path(d);
        let fresh = store.is_fresh(d);
        if let Ok(m) = fs::metadata(&dest) {
            // A blob this build wrote replaces any other file of that name (one edited in
            // place, or left when the store's corrupt copy was repaired): linking is free.
            let stale = fresh
                && fs::metadata(store.blob_path(d))
                    .map(|s| (s.dev(), s.ino()) != (m.dev(), m.ino()))
                    .unwrap_or(false);
            if m.len() == size && !stale {
                return Ok(());
            }
        }
        let tmp = temp_path(&self.dir.join("blobs/sha256"), "blob");
        let res = (|| -> Result<()> {
            if fs::hard_link(store.blob_path(d), &tmp).is_ok() {
                // Synced when it was stored; hashed as this process wrote it, or now.
                if !fresh {
                    let n = store.check(d)?;
                    if n != size {
                        bail!("stored blob {d} is corrupt ({n} bytes, {size} expected); run `imgbuild store fsck`");
                    }
                }
            } else if fresh {
                fs::copy(store.blob_path(d), &tmp)?;
                File::open(&tmp)?.sync_all()?;
            } else {
                let mut r = HashReader::new(store.open_blob(d)?);
                let mut f = File::create(&tmp)?;
                io::copy(&mut r, &mut f)?;
                f.sync_all()?;
                let (got, n) = r.finish();
                if &got != d || n != size {
                    bail!("stored blob {d} is corrupt (hashes to {got}, {n} bytes); run `imgbuild store fsck`");
                }
            }
            fs::rename(&tmp, &dest)?;
            Ok(())
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.with_context(|| format!("writing blob {d} into {}", self.dir.display()))
    }

    /// Points `tag` at `desc` in index.json (atomically, under a lock).
    pub fn tag(&self, tag: &str, desc: &Descriptor) -> Result<()> {
        let lock = File::create(self.dir.join(".index.lock"))?;
        // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error()).context("locking index.json");
        }
        let mut index = self.index()?;
        index
            .manifests
            .retain(|m| m.annotations.get(ANN_REF_NAME).map(|s| s.as_str()) != Some(tag));
        let mut d = desc.clone();
        d.annotations.insert(ANN_REF_NAME.into(), tag.into());
        index.manifests.push(d);
        index.manifests.sort_by(|a, b| {
            a.annotations
                .get(ANN_REF_NAME)
                .cmp(&b.annotations.get(ANN_REF_NAME))
        });
        write_atomic(&self.dir.join("index.json"), &image::to_bytes(&index))
    }

    /// Lists `referrers` of the image `subject` the way a registry without the referrers API
    /// does (distribution-spec 1.1, "Referrers Tag Schema"; regclient's layouts do the same): an
    /// image index of their descriptors, tagged `sha256-<subject hex>` in index.json. Then drops
    /// the referrers tags whose subject no other tag names any more (the image was re-tagged).
    pub fn attach(&self, subject: &Digest, referrers: &[Referrer]) -> Result<()> {
        let tag = referrers_tag(subject);
        if !referrers.is_empty() {
            let mut listed: Vec<Descriptor> = referrers.iter().map(|r| r.descriptor()).collect();
            listed
                .sort_by(|a, b| (&a.artifact_type, &a.digest).cmp(&(&b.artifact_type, &b.digest)));
            let index = Index {
                schema_version: 2,
                media_type: Some(MT_INDEX.into()),
                manifests: listed,
                annotations: BTreeMap::new(),
            };
            let bytes = image::to_bytes(&index);
            let d = Digest::of(&bytes);
            let path = self.blob_path(&d);
            if !path.is_file() {
                write_atomic(&path, &bytes)?;
            }
            self.tag(
                &tag,
                &Descriptor {
                    media_type: MT_INDEX.into(),
                    digest: d,
                    size: bytes.len() as u64,
                    platform: None,
                    artifact_type: None,
                    annotations: BTreeMap::new(),
                },
            )?;
        }
        let index = self.index()?;
        // The images tags name, and the platforms' images of a tagged index.
        let mut tagged: Vec<String> = Vec::new();
        for m in index.manifests.iter().filter(|m| !is_referrers_tag(m)) {
            tagged.push(referrers_tag(&m.digest));
            if m.media_type == MT_INDEX {
                if let Ok(inner) = self.read_json::<Index>(m) {
                    tagged.extend(inner.manifests.iter().map(|d| referrers_tag(&d.digest)));
                }
            }
        }
        let stale: Vec<String> = index
            .manifests
            .iter()
            .filter(|m| is_referrers_tag(m))
            .filter_map(|m| m.annotations.get(ANN_REF_NAME).cloned())
            .filter(|t| !tagged.contains(t))
            .collect();
        if !stale.is_empty() {
            self.untag(&stale)?;
        }
        Ok(())
    }

    /// Removes `tags` from index.json (atomically, under the lock).
    fn untag(&self, tags: &[String]) -> Result<()> {
        let lock = File::create(self.dir.join(".index.lock"))?;
        // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error()).context("locking index.json");
        }
        let mut index = self.index()?;
        index.manifests.retain(|m| {
            !m.annotations
                .get(ANN_REF_NAME)
                .is_some_and(|t| tags.contains(t))
        });
        write_atomic(&self.dir.join("index.json"), &image::to_bytes(&index))
    }

    /// The referrers of the manifest `subject` this layout lists (manifests checked).
    pub fn referrers(&self, subject: &Digest) -> Result<Vec<Referrer>> {
        let tag = referrers_tag(subject);
        let index = self.index()?;
        let Some(d) = index
            .manifests
            .iter()
            .find(|m| m.annotations.get(ANN_REF_NAME) == Some(&tag))
        else {
            return Ok(vec![]);
        };
        let listed: Index = serde_json::from_slice(&self.read_blob(&d.digest, Some(d.size))?)
            .with_context(|| format!("the referrers index {tag} in {}", self.dir.display()))?;
        let mut out = Vec::new();
        for m in listed.manifests {
            let bytes = self.read_blob(&m.digest, Some(m.size))?;
            if let Some(r) = Referrer::parse(&bytes) {
                if r.manifest.subject.as_ref().map(|s| &s.digest) == Some(subject) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

/// The tag that lists the referrers of `subject`: `sha256-<hex>`.
pub fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// The entry of `index` that tag `tag` names (else the first image that is not a referrers
/// index).
pub fn image_entry<'a>(index: &'a Index, tag: Option<&str>) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|m| {
        !is_referrers_tag(m)
            && (tag.is_none() || m.annotations.get(ANN_REF_NAME).map(String::as_str) == tag)
    })
}

/// Whether an index.json entry is a referrers list (tagged `sha256-` and 64 hex digits).
pub fn is_referrers_tag(d: &Descriptor) -> bool {
    d.annotations.get(ANN_REF_NAME).is_some_and(|t| {
        t.strip_prefix("sha256-")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// Writes a built image into an OCI layout under a tag.
pub struct LayoutDest {
    pub dir: PathBuf,
    pub tag: String,
}

impl Destination for LayoutDest {
    fn describe(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }
    fn write(&self, img: &Built, store: &Store) -> Result<Written> {
        let l = Layout::create(&self.dir)?;
        let mut w = Written {
            reference: self.describe(),
            ..Default::default()
        };
        // Each image (an index's every platform): blobs, manifest, then its referrers (SBOM,
        // provenance): blobs, manifests.
        for one in img.images() {
            for d in one.blobs() {
                if l.blob_path(&d.digest).is_file() {
                    w.skipped_blobs += 1;
                } else {
                    w.uploaded_bytes += d.size;
                }
                l.put_from_store(store, &d.digest, d.size)?;
            }
            l.put_from_store(store, &one.digest, one.manifest_bytes.len() as u64)?;
            for r in &one.referrers {
                for d in r.blobs() {
                    if !l.blob_path(&d.digest).is_file() {
                        w.referrer_bytes += d.size;
                    }
                    l.put_from_store(store, &d.digest, d.size)?;
                }
                l.put_from_store(store, &r.digest, r.manifest_bytes.len() as u64)?;
            }
        }
        if img.is_index() {
            l.put_from_store(store, &img.digest, img.manifest_bytes.len() as u64)?;
        }
        // The index is updated last, so a failure above leaves the old tag intact.
        l.tag(&self.tag, &img.descriptor())?;
        for one in img.images() {
            l.attach(&one.digest, &one.referrers)?;
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn store_blobs_are_linked_into_the_layout_and_older_ones_checked_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let layout = Layout::create(&dir.path().join("oci")).unwrap();
        let fresh = store.put(b"written by this build").unwrap();
        layout.put_from_store(&store, &fresh, 21).unwrap();
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&layout.blob_path(&fresh)),
            ino(&store.blob_path(&fresh)),
            "a blob written and hashed by this process is linked, not copied"
        );

        // A store opened anew has written nothing: its blobs are re-hashed, then linked.
        let older = store.put(b"from an earlier run").unwrap();
        let again = Store::open(dir.path().join("store")).unwrap();
        layout.put_from_store(&again, &older, 19).unwrap();
        assert_eq!(
            ino(&layout.blob_path(&older)),
            ino(&again.blob_path(&older))
        );

        let bad = store.put(b"will be corrupted").unwrap();
        fs::write(again.blob_path(&bad), b"was be corrupted!").unwrap();
        let other = Layout::create(&dir.path().join("oci2")).unwrap();
        let err = other.put_from_store(&again, &bad, 17).unwrap_err();
        assert!(format!("{err:#}").contains("corrupt"), "{err:#}");
        let left: Vec<_> = fs::read_dir(dir.path().join("oci2/blobs/sha256"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "nothing half-written: {left:?}");
    }

    #[test]
    fn a_blob_this_build_wrote_replaces_a_stale_file_of_its_name_in_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let layout = Layout::create(&dir.path().join("oci")).unwrap();
        let d = Digest::of(b"the layer");
        // Left by an earlier build: the same size, other bytes (edited in place, say).
        fs::write(layout.blob_path(&d), b"the lamer").unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(b"the layer").unwrap();
        w.commit(&d).unwrap();
        layout.put_from_store(&store, &d, 9).unwrap();
        assert_eq!(fs::read(layout.blob_path(&d)).unwrap(), b"the layer");
    }
}
