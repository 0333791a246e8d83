//! Blobs on a repository: HEAD, download into the store (digest and size checked, fetched
//! again when wrong), upload sessions (a cross-repository mount or a plain upload), and the
//! upload itself: one PUT when small, else ≤ 4 MiB PATCHes resumed from the registry's `Range`.

use super::error::{is_final, RegistryError};
use super::repo::Repo;
use super::transport::{backoff, max_attempts, registry_error, retry_after, Retry};
use crate::digest::Digest;
use crate::store::Store;
use anyhow::{bail, Context, Result};
use reqwest::blocking::Response;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

/// Largest chunk sent in one PATCH (one large registry refuses more), and the size up to
/// which a blob goes up in one PUT.
pub const CHUNK: u64 = 4 * 1024 * 1024;
/// Blob transfers may take long; the client's default timeout is for small requests.
const BLOB_TIMEOUT: Duration = Duration::from_secs(3600);

/// The chunk size: 4 MiB, or `IMGBUILD_REGISTRY_CHUNK_SIZE` bytes (at least 64 KiB) for a
/// registry known to take other sizes.
pub fn chunk_size() -> u64 {
    std::env::var("IMGBUILD_REGISTRY_CHUNK_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(|n: u64| n.max(64 * 1024))
        .unwrap_or(CHUNK)
}

/// What `start_upload` found.
pub enum Start {
    Mounted,
    Upload(Url),
}

impl<'a> Repo<'a> {
    /// HEADs a blob: its size when present.
    pub fn head_blob(&self, d: &Digest) -> Result<Option<u64>> {
        let url = self.client.url(&format!("v2/{}/blobs/{d}", self.name));
        let what = format!("checking blob {d} in {}", self.where_());
        let resp = self.send(&what, Retry::Yes, &|h| h.head(url.clone()))?;
        match resp.status() {
            StatusCode::OK => Ok(Some(
                resp.headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            status => bail!(RegistryError::Status {
                what,
                status,
                detail: None
            }),
        }
    }

    /// Downloads a blob into the store, checking digest and size; retried when the connection
    /// drops or the content is wrong. Returns the bytes downloaded.
    pub fn fetch_blob(&self, d: &Digest, size: u64, store: &Store) -> Result<u64> {
        if store.has(d) {
            return Ok(0);
        }
        let url = self.client.url(&format!("v2/{}/blobs/{d}", self.name));
        let what = format!("downloading blob {d} from {}", self.where_());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(resp) = self.send_found(&what, Retry::Yes, &|h| {
                h.get(url.clone())
                    .timeout(crate::http::timeout(BLOB_TIMEOUT))
            })?
            else {
                bail!(RegistryError::NotFound { what });
            };
            match store.put_reader(resp, d, Some(size)) {
                Ok(()) => return Ok(size),
                // A dropped connection or bytes that do not match: fetched again (the path may
                // be at fault, not the registry); the same mismatch every time is final.
                Err(_) if attempt < max_attempts() => {
                    std::thread::sleep(backoff(attempt));
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "{what}: the registry sent content that does not match the descriptor"
                    )))
                }
            }
        }
    }

    /// Opens an upload session, or mounts `d` from `from` when given (201 = mounted).
    pub fn start_upload(&self, mount: Option<(&Digest, &str)>) -> Result<Start> {
        let mut url = self.client.url(&format!("v2/{}/blobs/uploads/", self.name));
        if let Some((d, from)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", d.as_str())
                .append_pair("from", from);
        }
        let what = match mount {
            Some((d, from)) => format!("mounting blob {d} from {from} into {}", self.where_()),
            None => format!("starting an upload to {}", self.where_()),
        };
        let resp = self.send(&what, Retry::Yes, &|h| {
            h.post(url.clone()).header(CONTENT_LENGTH, "0")
        })?;
        match resp.status() {
            StatusCode::CREATED if mount.is_some() => Ok(Start::Mounted),
            StatusCode::ACCEPTED => Ok(Start::Upload(self.client.location(resp.headers())?)),
            status => {
                let e = registry_error(resp).unwrap_or_default();
                bail!(RegistryError::Status {
                    what,
                    status,
                    detail: Some(e)
                })
            }
        }
    }

    /// Uploads a stored blob into an open session: one PUT when it is small, else ≤ 4 MiB
    /// PATCHes in order, resumed from the registry's `Range` after a failure, then the PUT.
    pub fn upload(&self, session: Url, d: &Digest, size: u64, store: &Store) -> Result<()> {
        let what = format!("uploading blob {d} to {}", self.where_());
        let chunk = chunk_size();
        if size <= chunk {
            let bytes = bytes::Bytes::from(store.read(d)?);
            let mut url = session;
            url.query_pairs_mut().append_pair("digest", d.as_str());
            let resp = self.send(&what, Retry::Yes, &|h| {
                h.put(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.clone())
            })?;
            return self.finished(resp, d, &what);
        }
        let mut file = store.open_blob(d)?;
        let mut url = session;
        let mut offset = 0u64;
        let mut failures = 0;
        while offset < size {
            let n = (size - offset).min(chunk) as usize;
            file.seek(SeekFrom::Start(offset))?;
            let mut buf = vec![0u8; n];
            file.read_exact(&mut buf)
                .with_context(|| format!("reading blob {d} from the store"))?;
            // Shared, not copied, by the request builder.
            let body = bytes::Bytes::from(buf);
            let end = offset + n as u64 - 1;
            let res = self.send(&what, Retry::No, &|h| {
                h.patch(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header("content-range", format!("{offset}-{end}"))
                    .header(CONTENT_LENGTH, n.to_string())
                    .body(body.clone())
                    .timeout(crate::http::timeout(BLOB_TIMEOUT))
            });
            match res {
                Ok(r)
                    if r.status() == StatusCode::ACCEPTED
                        || r.status() == StatusCode::NO_CONTENT =>
                {
                    url = self.client.location(r.headers()).unwrap_or(url);
                    offset = match range_end(r.headers()) {
                        Some(e) if e + 1 > offset => e + 1,
                        _ => end + 1,
                    };
                    failures = 0;
                }
                other => {
                    // Auth and usage errors are final; anything else: ask where to resume.
                    if let Err(e) = &other {
                        if is_final(e) {
                            return Err(other.err().unwrap());
                        }
                    }
                    failures += 1;
                    if failures >= max_attempts() {
                        return match other {
                            Ok(r) => {
                                let status = r.status();
                                let e = registry_error(r).unwrap_or_default();
                                bail!(RegistryError::Status {
                                    what: format!("{what}: chunk {offset}-{end}"),
                                    status,
                                    detail: Some(e)
                                })
                            }
                            Err(e) => Err(e.context(format!("{what}: chunk {offset}-{end}"))),
                        };
                    }
                    if let Ok(r) = &other {
                        if let Some(w) = retry_after(r.headers()) {
                            std::thread::sleep(w);
                        }
                    }
                    std::thread::sleep(backoff(failures));
                    let (u, resume) = self.upload_status(&url, &what)?;
                    url = u;
                    offset = resume;
                }
            }
        }
        let mut put = url;
        put.query_pairs_mut().append_pair("digest", d.as_str());
        let resp = self.send(&what, Retry::Yes, &|h| {
            h.put(put.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, "0")
        })?;
        self.finished(resp, d, &what)
    }

    /// Where an interrupted upload resumes: the session's URL and the next offset.
    fn upload_status(&self, url: &Url, what: &str) -> Result<(Url, u64)> {
        let resp = self.send(what, Retry::Yes, &|h| h.get(url.clone()))?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            let s = resp.status();
            bail!(RegistryError::SessionGone(format!(
                "{what}: the registry dropped the upload session ({s}) instead of resuming it"
            )));
        }
        let u = self
            .client
            .location(resp.headers())
            .unwrap_or_else(|_| url.clone());
        Ok((u, range_end(resp.headers()).map(|e| e + 1).unwrap_or(0)))
    }

    /// The answer to an upload's final PUT: 201, and the digest the registry stored it as.
    fn finished(&self, resp: Response, d: &Digest, what: &str) -> Result<()> {
        let status = resp.status();
        if status != StatusCode::CREATED {
            let e = registry_error(resp).unwrap_or_default();
            bail!(RegistryError::Status {
                what: what.to_string(),
                status,
                detail: Some(e)
            });
        }
        if let Some(h) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if h != d.as_str() {
                bail!("{what}: the registry stored it as {h}");
            }
        }
        Ok(())
    }
}

/// The last byte the registry has, from `Range: 0-N` (`bytes=0-N` on some registries).
fn range_end(h: &HeaderMap) -> Option<u64> {
    let v = h.get("range")?.to_str().ok()?;
    let v = v.trim().trim_start_matches("bytes=");
    v.split_once('-')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_header_forms() {
        let mut h = HeaderMap::new();
        h.insert("range", "0-4194303".parse().unwrap());
        assert_eq!(range_end(&h), Some(4194303));
        h.insert("range", "bytes=0-9".parse().unwrap());
        assert_eq!(range_end(&h), Some(9));
    }
}
