//! Where a built image goes: one `Destination` trait, one implementation per kind
//! (OCI layout, docker-archive; the registry implements it in `registry::push`).

use crate::archive;
use crate::digest::Digest;
use crate::image::{Descriptor, Manifest, MT_MANIFEST};
use crate::layout::{self, Layout};
use crate::store::Store;
use crate::usage;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A built image whose blobs are all in the store.
#[derive(Clone, Debug)]
pub struct Built {
    pub name: String,
    pub repository: Option<String>,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub digest: Digest,
}

impl Built {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: MT_MANIFEST.into(),
            digest: self.digest.clone(),
            size: self.manifest_bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
    /// Every blob the manifest names: config first, then layers.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        std::iter::once(&self.manifest.config)
            .chain(self.manifest.layers.iter())
            .collect()
    }
}

/// What a destination reports back.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// A reference that names the written image, e.g. `oci:DIR:TAG` or `repo@sha256:…`.
    pub reference: String,
    pub uploaded_bytes: u64,
    pub skipped_blobs: usize,
    /// Of the skipped blobs, those mounted from another repository of the same registry.
    pub mounted_blobs: usize,
}

pub trait Destination {
    fn describe(&self) -> String;
    fn write(&self, img: &Built, store: &Store) -> Result<Written>;
}

/// `--output` parsed.
pub enum Output {
    Layout { dir: PathBuf, tag: String },
    DockerArchive { file: PathBuf },
}

impl Output {
    /// Parses `oci:DIR[:TAG]` or `docker-archive:FILE`; relative paths against `cwd`.
    pub fn parse(s: &str, default_tag: &str, cwd: &Path) -> Result<Output> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = layout::split_ref(rest);
            return Ok(Output::Layout {
                dir: cwd.join(dir),
                tag: tag.unwrap_or_else(|| default_tag.to_string()),
            });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                return Err(usage!(
                    "--output docker-archive: needs a file name, e.g. docker-archive:api.tar"
                ));
            }
            return Ok(Output::DockerArchive {
                file: cwd.join(rest),
            });
        }
        Err(usage!(
            "unknown --output `{s}`: use oci:DIR[:TAG] or docker-archive:FILE"
        ))
    }

    pub fn destination(self) -> Box<dyn Destination> {
        match self {
            Output::Layout { dir, tag } => Box::new(LayoutDest { dir, tag }),
            Output::DockerArchive { file } => Box::new(archive::ArchiveDest { file }),
        }
    }
}

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
        for d in img.blobs() {
            if l.blob_path(&d.digest).is_file() {
                w.skipped_blobs += 1;
            } else {
                w.uploaded_bytes += d.size;
            }
            l.put_from_store(store, &d.digest, d.size)?;
        }
        l.put_from_store(store, &img.digest, img.manifest_bytes.len() as u64)?;
        // The index is updated last, so a failure above leaves the old tag intact.
        l.tag(&self.tag, &img.descriptor())?;
        Ok(w)
    }
}
