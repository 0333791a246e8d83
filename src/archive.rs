//! `docker-archive` output: the tarball `docker load` reads (manifest.json, config, layers).

use crate::digest::HashReader;
use crate::image::Built;
use crate::store::{temp_path, Store};
use crate::target::{Destination, Written};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::PathBuf;

pub struct ArchiveDest {
    pub file: PathBuf,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Item {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

impl Destination for ArchiveDest {
    fn describe(&self) -> String {
        format!("docker-archive:{}", self.file.display())
    }

    fn write(&self, img: &Built, store: &Store) -> Result<Written> {
        if img.is_index() {
            let platforms: Vec<_> = img.platforms.iter().map(|(p, _)| p.clone()).collect();
            return Err(one_platform(&img.name, &platforms));
        }
        let dir = self
            .file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = temp_path(dir, "archive");
        let res = write_archive(img, store, &tmp).and_then(|_| Ok(fs::rename(&tmp, &self.file)?));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.with_context(|| format!("writing {}", self.describe()))?;
        let size = fs::metadata(&self.file)?.len();
        Ok(Written {
            reference: self.describe(),
            uploaded_bytes: size,
            ..Default::default()
        })
    }
}

/// docker's archive format (`docker save`) holds one platform's image: the error for image
/// `name` of several `platforms`.
pub fn one_platform(name: &str, platforms: &[crate::image::Platform]) -> anyhow::Error {
    crate::usage!(
        "image `{name}` is built for {} platforms ({}), but a docker-archive holds one",
        platforms.len(),
        platforms
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
    .context("pass --platform OS/ARCH for one of them, or write an OCI layout (--output oci:DIR:TAG), which holds the index")
}

fn write_archive(img: &Built, store: &Store, path: &std::path::Path) -> Result<()> {
    let f = BufWriter::new(File::create(path)?);
    let mut tar = tar::Builder::new(f);
    let config = &img.manifest.config;
    let config_name = format!("{}.json", config.digest.hex());
    let mut layers = Vec::new();
    let mut files = vec![(config_name.clone(), config.digest.clone(), config.size)];
    for l in &img.manifest.layers {
        let ext = match crate::compress::Compression::from_media_type(&l.media_type) {
            Some(crate::compress::Compression::Gzip) => "tar.gz",
            Some(crate::compress::Compression::Zstd) => "tar.zst",
            _ => "tar",
        };
        let name = format!("{}.{ext}", l.digest.hex());
        if !layers.contains(&name) {
            files.push((name.clone(), l.digest.clone(), l.size));
        }
        layers.push(name);
    }
    let tag = match &img.repository {
        Some(r) => format!("{r}:latest"),
        None => format!("{}:latest", img.name),
    };
    let manifest = serde_json::to_vec(&[Item {
        config: config_name,
        repo_tags: vec![tag],
        layers,
    }])?;
    let header = |size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(size);
        h.set_mtime(0);
        h
    };
    for (name, digest, size) in files {
        let mut r = HashReader::new(store.open_blob(&digest)?);
        tar.append_data(&mut header(size), &name, &mut r)?;
        let (got, n) = r.finish();
        if got != digest || n != size {
            bail!("stored blob {digest} is corrupt; run `imgbuild store fsck`");
        }
    }
    tar.append_data(
        &mut header(manifest.len() as u64),
        "manifest.json",
        io::Cursor::new(&manifest),
    )?;
    let f = tar.into_inner()?;
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}
