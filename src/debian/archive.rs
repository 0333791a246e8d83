//! One Debian archive (mirror, release, architecture, keyring) as imgbuild reads it:
//! `dists/RELEASE/InRelease` (signature checked), `main/binary-ARCH/Packages.gz` (sha256 from
//! the signed release, fetched by hash when the archive offers it, kept in the store), and
//! `.deb` files, each downloaded once into the store and checked against the sha256 that
//! `imgbuild.lock` pins (which came from the signed index).
//!
//! Plain HTTP mirrors are accepted (as apt accepts them): integrity comes from the signature
//! and the hashes, not from the transport. Only `main` is read.

use super::index::Index;
use super::release::{self, Release};
use crate::digest::{Digest, HashWriter};
use crate::error::Hint;
use crate::store::Store;
use crate::usage;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Where packages come from.
#[derive(Clone, Debug)]
pub struct Archive {
    pub mirror: String,
    pub release: String,
    pub arch: String,
    pub keyring: PathBuf,
}

/// A package file to fetch: the pins of one package.
pub struct Wanted<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub filename: &'a str,
    pub sha256: &'a str,
}

const HINT_MIRROR: &str = "set `debian_mirror` in [defaults] of imgbuild.toml or IMGBUILD_DEBIAN_MIRROR to a reachable Debian mirror";

impl Archive {
    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.mirror.trim_end_matches('/'), path)
    }

    fn get(
        &self,
        client: &reqwest::blocking::Client,
        url: &str,
    ) -> Result<reqwest::blocking::Response> {
        let resp = crate::http::send_retrying(|| client.get(url).send())
            .map_err(|e| usage!("cannot fetch {url}: {e}").hint(HINT_MIRROR))?;
        if !resp.status().is_success() {
            return Err(usage!("cannot fetch {url}: HTTP {}", resp.status()).hint(HINT_MIRROR));
        }
        Ok(resp)
    }

    /// The release file, its signature verified with the keyring.
    pub fn release(&self, client: &reqwest::blocking::Client) -> Result<Release> {
        let keys = std::fs::read(&self.keyring).map_err(|e| {
            usage!("cannot read the Debian archive keyring {}: {e}", self.keyring.display())
                .hint("install the Debian package `debian-archive-keyring`, or name a keyring file with `keyring = \"FILE\"` in the layer's `debian` table")
        })?;
        let keys = release::keyring(&keys)
            .map_err(|e| usage!("keyring {}: {e}", self.keyring.display()))?;
        let url = self.url(&format!("dists/{}/InRelease", self.release));
        let mut text = String::new();
        self.get(client, &url)?
            .read_to_string(&mut text)
            .with_context(|| format!("reading {url}"))?;
        let r = release::verify(&text, &keys).map_err(|e| {
            usage!("{url}: {e}").hint(format!(
                "nothing from this mirror is used; check the mirror, or give the keyring that signs it with `keyring = \"FILE\"` (now {})",
                self.keyring.display()
            ))
        })?;
        if r.codename != self.release && r.suite != self.release {
            return Err(usage!(
                "{url} is the release of `{}` ({}), not `{}`",
                r.codename,
                r.suite,
                self.release
            ));
        }
        Ok(r)
    }

    /// The `main` packages of the release for the architecture (and `all`).
    pub fn index(&self, store: &Store) -> Result<Index> {
        let client = crate::http::shared()?;
        let rel = self.release(client)?;
        let path = format!("main/binary-{}/Packages.gz", self.arch);
        let (sha, size) = rel.sha256.get(&path).cloned().ok_or_else(|| {
            usage!(
                "the release `{}` of {} lists no {path}: is `{}` an architecture it has?",
                self.release,
                self.mirror,
                self.arch
            )
        })?;
        let by_hash = format!("main/binary-{}/by-hash/SHA256/{sha}", self.arch);
        let digest =
            self.fetch_listed(client, rel.by_hash, store, &path, &by_hash, (&sha, size))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::io::BufReader::new(store.open_blob(&digest)?))
            .read_to_string(&mut text)
            .with_context(|| format!("reading {path} of {}", self.release))?;
        Index::parse(&text, &self.arch)
            .map_err(|e| anyhow::anyhow!("{path} of {}: {e}", self.release))
    }

    /// `main/Contents-ARCH.gz` (which package ships which file) in the store, fetched by the
    /// sha256 the signed release lists when missing.
    pub fn contents(&self, store: &Store) -> Result<PathBuf> {
        let client = crate::http::shared()?;
        let rel = self.release(client)?;
        let path = format!("main/Contents-{}.gz", self.arch);
        let (sha, size) = rel
            .sha256
            .get(&path)
            .cloned()
            .ok_or_else(|| usage!("the release `{}` lists no {path}", self.release))?;
        let by_hash = format!("main/by-hash/SHA256/{sha}");
        let digest =
            self.fetch_listed(client, rel.by_hash, store, &path, &by_hash, (&sha, size))?;
        Ok(store.blob_path(&digest))
    }

    /// A file the signed release lists at `path` with its sha256 and size, in the store: fetched
    /// when missing (from `by_hash`, relative to the release's directory, where the archive has
    /// by-hash directories) and checked against that sha256.
    fn fetch_listed(
        &self,
        client: &reqwest::blocking::Client,
        use_by_hash: bool,
        store: &Store,
        path: &str,
        by_hash: &str,
        (sha256, size): (&str, u64),
    ) -> Result<Digest> {
        let digest = Digest::parse(&format!("sha256:{sha256}")).map_err(|e| anyhow::anyhow!(e))?;
        if !store.has(&digest) {
            let rel = if use_by_hash { by_hash } else { path };
            let url = self.url(&format!("dists/{}/{rel}", self.release));
            crate::http::download_retrying(|| {
                let resp = self.get(client, &url)?;
                store
                    .put_reader(resp, &digest, Some(size))
                    .with_context(|| {
                        format!("{url} does not match the sha256 its signed release lists")
                    })
            })?;
        }
        Ok(digest)
    }

    /// The package file in the store, downloaded when missing; its bytes must have the sha256
    /// `w` pins.
    pub fn fetch(&self, store: &Store, w: &Wanted) -> Result<PathBuf> {
        let digest = Digest::parse(&format!("sha256:{}", w.sha256))
            .map_err(|e| usage!("imgbuild.lock: package {} {}: {e}", w.name, w.version))?;
        if let Some(p) = in_store(store, &digest) {
            return Ok(p);
        }
        let client = crate::http::shared()?;
        let url = self.url(w.filename);
        // A connection reset mid-file (parallel downloads from a busy mirror) starts the file
        // again; what was half-written is never committed.
        let (writer, got) = crate::http::download_retrying(|| {
            let mut resp = self.get(client, &url)?;
            let mut out = HashWriter::new(store.writer()?);
            std::io::copy(&mut resp, &mut out).with_context(|| format!("downloading {url}"))?;
            out.flush()?;
            let (writer, got, _) = out.finish();
            Ok((writer, got))
        })?;
        if got != digest {
            return Err(usage!(
                "package {} {}: {url} has {got}, but imgbuild.lock pins sha256:{} — the archive changed after it was locked (nothing was written)",
                w.name,
                w.version,
                w.sha256
            )
            .hint("if the new file is expected, run `imgbuild lock --update` to resolve the packages again"));
        }
        writer.commit(&digest)?;
        // A record names the package file, so that `imgbuild store gc` keeps it while the
        // record lives (a rebuild of the layer then needs no mirror).
        store.put_record(
            "debian-debs",
            digest.hex(),
            &serde_json::json!({ "package": w.name, "version": w.version, "digest": digest.to_string() }),
        )?;
        Ok(store.blob_path(&digest))
    }
}

/// The stored package file of `digest`, if the store has it.
pub fn in_store(store: &Store, digest: &Digest) -> Option<PathBuf> {
    store.has(digest).then(|| store.blob_path(digest))
}

/// Whether `path` is the default keyring's.
pub fn default_keyring() -> &'static Path {
    Path::new(release::DEFAULT_KEYRING)
}
