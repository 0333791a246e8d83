//! Manifests on a repository: GET (digest and size checked, fetched again when cut short or
//! wrong), HEAD, PUT (asked again while the registry does not see a just-pushed blob) and
//! DELETE.

use super::error::RegistryError;
use super::repo::Repo;
use super::transport::{backoff, max_attempts, registry_error, Retry};
use crate::digest::Digest;
use crate::image::{MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_INDEX, MT_MANIFEST};
use anyhow::{bail, Result};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use std::io::Read;

const MAX_MANIFEST: usize = 4 * 1024 * 1024;

pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A manifest as fetched: bytes, media type and digest (checked).
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl Fetched {
    pub fn is_index(&self) -> bool {
        self.media_type == MT_INDEX || self.media_type == MT_DOCKER_LIST
    }
}

impl<'a> Repo<'a> {
    /// GETs a manifest by tag or digest; `None` when the registry does not have it. A body
    /// cut short or bytes that do not match are fetched again, like blobs.
    pub fn get_manifest(&self, reference: &str) -> Result<Option<Fetched>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.get_manifest_once(reference) {
                Err(e) if attempt < max_attempts() && RegistryError::is_transient(&e) => {
                    std::thread::sleep(backoff(attempt));
                }
                other => return other,
            }
        }
    }

    fn get_manifest_once(&self, reference: &str) -> Result<Option<Fetched>> {
        let url = self
            .client
            .url(&format!("v2/{}/manifests/{reference}", self.name));
        let sep = if reference.contains(':') { '@' } else { ':' };
        let what = format!("reading manifest {}{sep}{reference}", self.where_());
        let Some(resp) = self.send_found(&what, Retry::Yes, &|h| {
            h.get(url.clone()).header(ACCEPT, MANIFEST_ACCEPT)
        })?
        else {
            return Ok(None);
        };
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let mut bytes = Vec::new();
        if let Err(e) = resp.take(MAX_MANIFEST as u64 + 1).read_to_end(&mut bytes) {
            bail!(RegistryError::Transient(format!("{what}: {e}")));
        }
        if bytes.len() > MAX_MANIFEST {
            bail!("{what}: the manifest is larger than 4 MiB");
        }
        let digest = Digest::of(&bytes);
        if let Ok(want) = Digest::parse(reference) {
            if digest != want {
                bail!(RegistryError::Transient(format!(
                    "{what}: the registry sent content that hashes to {digest}, not the \
                     requested {want}"
                )));
            }
        } else if let Some(h) = header_digest.and_then(|h| Digest::parse(&h).ok()) {
            if h != digest {
                bail!("{what}: Docker-Content-Digest says {h}, but the content hashes to {digest}");
            }
        }
        // Fall back to the document's own mediaType when the header is generic.
        let media_type = if [MT_MANIFEST, MT_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST]
            .contains(&media_type.as_str())
        {
            media_type
        } else {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                })
                .unwrap_or(media_type)
        };
        Ok(Some(Fetched {
            bytes,
            media_type,
            digest,
        }))
    }

    /// HEADs a manifest; the digest it names, when present.
    pub fn head_manifest(&self, reference: &str) -> Result<Option<Option<Digest>>> {
        let url = self
            .client
            .url(&format!("v2/{}/manifests/{reference}", self.name));
        let what = format!("checking manifest {}:{reference}", self.where_());
        let resp = self.send(&what, Retry::Yes, &|h| {
            h.head(url.clone()).header(ACCEPT, MANIFEST_ACCEPT)
        })?;
        match resp.status() {
            StatusCode::OK => Ok(Some(
                resp.headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| Digest::parse(s).ok()),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            status => bail!(RegistryError::Status {
                what,
                status,
                detail: None
            }),
        }
    }

    /// PUTs a manifest under `reference` (digest or tag). A registry that does not see a
    /// just-confirmed blob yet (`MANIFEST_BLOB_UNKNOWN`, eventually consistent storage) is asked
    /// again after a pause.
    pub fn put_manifest(&self, reference: &str, bytes: &[u8], media_type: &str) -> Result<()> {
        self.put_manifest_headers(reference, bytes, media_type)
            .map(|_| ())
    }

    /// `put_manifest`, returning the response's headers (a registry with the referrers API
    /// answers a manifest with a `subject` with `OCI-Subject`).
    pub fn put_manifest_headers(
        &self,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<reqwest::header::HeaderMap> {
        let url = self
            .client
            .url(&format!("v2/{}/manifests/{reference}", self.name));
        let what = format!("putting manifest {}:{reference}", self.where_());
        let body = bytes::Bytes::copy_from_slice(bytes);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.send(&what, Retry::Yes, &|h| {
                h.put(url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone())
            })?;
            let status = resp.status();
            if status == StatusCode::CREATED || status.is_success() {
                return Ok(resp.headers().clone());
            }
            let d = registry_error(resp).unwrap_or_default();
            if d.contains("BLOB_UNKNOWN") && attempt < max_attempts() {
                std::thread::sleep(backoff(attempt));
                continue;
            }
            bail!(RegistryError::Status {
                what,
                status,
                detail: Some(d)
            });
        }
    }

    /// DELETE a manifest by digest (used by `imgbuild` tests and tools, not by builds).
    pub fn delete_manifest(&self, d: &Digest) -> Result<()> {
        let url = self.client.url(&format!("v2/{}/manifests/{d}", self.name));
        let what = format!("deleting manifest {d} from {}", self.where_());
        let resp = self.send(&what, Retry::Yes, &|h| {
            h.request(Method::DELETE, url.clone())
        })?;
        if !resp.status().is_success() {
            bail!(RegistryError::Status {
                status: resp.status(),
                what,
                detail: None
            });
        }
        Ok(())
    }
}
