//! Package indexes: which index to use, the simple API (PEP 691 JSON, PEP 503 HTML), and
//! wheel downloads into the content-addressed store (sha256 checked before anything uses them).

use super::filename::{normalize, WheelName};
use super::hint::hinted;
use super::version::Version;
use super::wheel;
use crate::digest::Digest;
use crate::store::Store;
use crate::usage;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Index URLs from the environment, in the order uv and pip read them.
const ENV_INDEX: &[&str] = &["UV_INDEX_URL", "UV_DEFAULT_INDEX", "PIP_INDEX_URL"];
const ENV_EXTRA: &[&str] = &["UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL"];

fn env_index() -> Option<String> {
    ENV_INDEX
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
}

/// An index that replaces the one a lock was resolved against (`index_url`, else the
/// environment), for mirrors and proxies.
pub fn mirror(spec_index: Option<&str>) -> Option<String> {
    spec_index.map(String::from).or_else(env_index)
}

/// `global.index-url` (or `install.index-url`) from pip's configuration files.
fn pip_conf_index() -> Option<String> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut files: Vec<PathBuf> = vec!["/etc/xdg/pip/pip.conf".into(), "/etc/pip.conf".into()];
    if let Some(h) = &home {
        files.push(h.join(".pip/pip.conf"));
        files.push(h.join(".config/pip/pip.conf"));
    }
    if let Some(f) = std::env::var_os("PIP_CONFIG_FILE") {
        files.push(f.into());
    }
    let mut found = None;
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.trim().to_string();
            } else if let Some((k, v)) = line.split_once('=') {
                let k = k.trim().replace('_', "-");
                if k == "index-url" && (section == "global" || section == "install") {
                    found = Some(v.trim().to_string());
                }
            }
        }
    }
    found
}

/// The indexes to search for requirements.txt files: `index_url`, the file's own
/// `--index-url`/`--extra-index-url`, the environment, pip.conf; else an error.
pub fn indexes(spec_index: Option<&str>, from_file: &[String]) -> Result<Vec<String>> {
    if let Some(i) = spec_index {
        return Ok(vec![i.to_string()]);
    }
    if !from_file.is_empty() {
        return Ok(from_file.to_vec());
    }
    let mut out: Vec<String> = env_index().or_else(pip_conf_index).into_iter().collect();
    if out.is_empty() {
        return Err(hinted(
            "no package index is configured to find the wheels of a requirements file".into(),
            "set `index_url` in the layer's `python` table, or PIP_INDEX_URL / UV_INDEX_URL, or `index-url` under [global] in pip.conf",
        ));
    }
    for k in ENV_EXTRA {
        if let Ok(v) = std::env::var(k) {
            out.extend(v.split_whitespace().map(String::from));
        }
    }
    Ok(out)
}

/// One file of a project on an index.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexFile {
    pub filename: String,
    pub url: String,
    pub sha256: Option<String>,
    #[serde(default)]
    pub yanked: bool,
    /// PEP 503 `data-requires-python` / PEP 691 `requires-python`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_python: Option<String>,
}

const ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = tag[at + name.len()..].trim_start();
        let Some(rest) = rest.strip_prefix('=').filter(|_| before_ok) else {
            continue;
        };
        let rest = rest.trim_start();
        let q = rest.chars().next()?;
        return Some(if q == '"' || q == '\'' {
            unescape(&rest[1..][..rest[1..].find(q)?])
        } else {
            unescape(rest.split(|c: char| c.is_whitespace() || c == '>').next()?)
        });
    }
    None
}

/// Parses a PEP 503 project page. URLs are resolved against `page`.
pub fn parse_html(body: &str, page: &reqwest::Url) -> Vec<IndexFile> {
    let mut out = Vec::new();
    let lower = body.to_ascii_lowercase();
    let mut pos = 0;
    while let Some(i) = lower[pos..].find("<a") {
        let start = pos + i;
        let Some(end) = lower[start..].find('>').map(|e| start + e) else {
            break;
        };
        let tag = &body[start..end];
        let close = lower[end..]
            .find("</a>")
            .map(|c| end + c)
            .unwrap_or(end + 1);
        let text = unescape(body[end + 1..close.max(end + 1)].trim());
        pos = close.max(end + 1);
        let Some(href) = attr(tag, "href") else {
            continue;
        };
        let Ok(url) = page.join(&href) else { continue };
        let sha256 = url
            .fragment()
            .and_then(|f| f.strip_prefix("sha256="))
            .map(|h| h.to_ascii_lowercase());
        let filename = if text.is_empty() {
            super::filename::basename(url.as_str()).to_string()
        } else {
            text
        };
        let mut clean = url.clone();
        clean.set_fragment(None);
        out.push(IndexFile {
            filename,
            url: clean.to_string(),
            sha256,
            yanked: attr(tag, "data-yanked").is_some()
                || tag.to_ascii_lowercase().contains(" data-yanked"),
            requires_python: attr(tag, "data-requires-python"),
        });
    }
    out
}

/// Parses a PEP 691 JSON project page.
pub fn parse_json(body: &str, page: &reqwest::Url) -> Result<Vec<IndexFile>> {
    #[derive(Deserialize)]
    struct Page {
        files: Vec<F>,
    }
    #[derive(Deserialize)]
    struct F {
        filename: String,
        url: String,
        #[serde(default)]
        hashes: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        yanked: serde_json::Value,
        #[serde(default, rename = "requires-python")]
        requires_python: Option<String>,
    }
    let p: Page = serde_json::from_str(body).context("parsing the index's JSON project page")?;
    Ok(p.files
        .into_iter()
        .filter_map(|f| {
            Some(IndexFile {
                url: page.join(&f.url).ok()?.to_string(),
                sha256: f.hashes.get("sha256").map(|h| h.to_ascii_lowercase()),
                yanked: !matches!(
                    f.yanked,
                    serde_json::Value::Bool(false) | serde_json::Value::Null
                ),
                filename: f.filename,
                requires_python: f.requires_python,
            })
        })
        .collect())
}

/// The files of `name` on `index`, via the simple API.
pub fn project_files(
    client: &reqwest::blocking::Client,
    index: &str,
    name: &str,
) -> Result<Vec<IndexFile>> {
    let page = format!("{}/{}/", index.trim_end_matches('/'), normalize(name));
    let url = reqwest::Url::parse(&page).map_err(|e| usage!("index URL `{index}`: {e}"))?;
    let resp =
        crate::http::send_retrying(|| client.get(url.clone()).header("Accept", ACCEPT).send())
            .with_context(|| format!("asking {page} for {name}"))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        bail!("the index {index} has no project `{name}` ({page} answered 404)");
    }
    if !resp.status().is_success() {
        bail!("{page} answered {}", resp.status());
    }
    let json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let final_url = resp.url().clone();
    let body = resp.text().with_context(|| format!("reading {page}"))?;
    if json {
        parse_json(&body, &final_url)
    } else {
        Ok(parse_html(&body, &final_url))
    }
}

/// The files of `name` `version` whose sha256 is in `hashes`, over several indexes; remembered
/// in the store so that a later build asks no index.
pub fn hashed_files(
    store: &Store,
    indexes: &[String],
    name: &str,
    version: &str,
    hashes: &[String],
) -> Result<Vec<IndexFile>> {
    let key = crate::key::python_index(indexes, &normalize(name), version, hashes);
    if let Some(v) = store.get_record::<Vec<IndexFile>>("python-index", &key) {
        return Ok(v);
    }
    let client = crate::http::client()?;
    let want = Version::parse(version);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for index in indexes {
        match project_files(&client, index, name) {
            Ok(files) => out.extend(files.into_iter().filter(|f| {
                f.sha256.as_ref().is_some_and(|h| hashes.contains(h))
                    && release_of(&f.filename)
                        .is_some_and(|v| Version::parse(&v) == want || v == version)
            })),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if out.is_empty() && !errors.is_empty() {
        bail!("{name} {version}: {}", errors.join("; "));
    }
    if !out.is_empty() {
        // An empty answer is not remembered: the wheel may be published later.
        store.put_record("python-index", &key, &out)?;
    }
    Ok(out)
}

fn release_of(filename: &str) -> Option<String> {
    if let Some(w) = WheelName::parse(filename) {
        return Some(w.version);
    }
    let stem = [".tar.gz", ".zip", ".tar.bz2", ".tgz"]
        .iter()
        .find_map(|e| filename.strip_suffix(e))?;
    Some(stem.rsplit_once('-')?.1.to_string())
}

/// A wheel that must be in the store: where to get it and what it must hash to.
#[derive(Clone, Debug)]
pub struct Want {
    pub filename: String,
    pub sha256: String,
    /// URLs to try in order, or a local file.
    pub urls: Vec<String>,
    pub path: Option<PathBuf>,
    /// Who pinned the hash, for messages (`uv.lock`, `find_links`...).
    pub pinned_by: String,
}

/// Streams `r` into the store, refusing it unless it hashes to `sha256`.
fn put_checked(store: &Store, mut r: impl Read, want: &Want, from: &str) -> Result<()> {
    let mut w = store.writer()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r
            .read(&mut buf)
            .with_context(|| format!("reading {from}"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n])?;
    }
    let got = hex::encode(h.finalize());
    if got != want.sha256 {
        bail!(
            "wheel {} from {from}: sha256 mismatch: {} pins {}, the file hashes to {got}; refusing it (tampered, truncated or re-uploaded)",
            want.filename, want.pinned_by, want.sha256
        );
    }
    w.commit(&Digest::parse(&format!("sha256:{got}")).map_err(|e| anyhow!(e))?)?;
    Ok(())
}

fn fetch(store: &Store, client: &reqwest::blocking::Client, want: &Want) -> Result<()> {
    if let Some(p) = &want.path {
        let f = std::fs::File::open(p).map_err(|e| usage!("wheel {}: {e}", p.display()))?;
        return put_checked(store, f, want, &p.display().to_string());
    }
    let mut errors = Vec::new();
    for url in &want.urls {
        // A body cut off mid-way is downloaded again; a wrong hash is not.
        let got = crate::http::download_retrying(|| {
            let resp = crate::http::send_retrying(|| client.get(url).send())?;
            if !resp.status().is_success() {
                bail!("{url} answered {}", resp.status());
            }
            put_checked(store, resp, want, url)
        });
        match got {
            Ok(()) => return Ok(()),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    bail!(
        "cannot download wheel {}: {}",
        want.filename,
        errors.join("; ")
    )
}

/// Makes one file (an sdist, a build requirement) present in the store, sha256 checked; a stored
/// blob that no longer matches is fetched again. Unlike `ensure`, the file is not read as a wheel.
pub fn ensure_file(store: &Store, want: &Want) -> Result<PathBuf> {
    let d = stored(store, want, &std::sync::OnceLock::new())?;
    Ok(store.blob_path(&d))
}

/// The digest of `want`, its blob made present: a stored blob is re-hashed (and removed when it
/// no longer matches), a missing one fetched with `client` (made on first use).
fn stored(
    store: &Store,
    want: &Want,
    client: &std::sync::OnceLock<reqwest::blocking::Client>,
) -> Result<Digest> {
    let d = Digest::parse(&format!("sha256:{}", want.sha256))
        .map_err(|e| anyhow!("{}: {e}", want.filename))?;
    if store.has(&d) && store.check(&d).is_err() {
        std::fs::remove_file(store.blob_path(&d))?;
    }
    if !store.has(&d) {
        if client.get().is_none() {
            let _ = client.set(crate::http::client()?);
        }
        fetch(store, client.get().unwrap(), want)?;
    }
    Ok(d)
}

/// Makes every wanted wheel present in the store: a stored blob is re-hashed before use
/// (and fetched again when it does not match), missing ones are downloaded in parallel, and
/// each wheel is checked once against its own RECORD. All failures are reported together.
pub fn ensure(store: &Store, wants: &[Want]) -> Result<()> {
    ensure_each(store, wants, &AtomicBool::new(false), &|_| Ok(()))
}

/// [`ensure`], with `ready(i)` run on the download worker as soon as `wants[i]` is in the store
/// and checked, while the other wheels are still downloading (the python layer installs each
/// wheel there). Once `stop` is set no further wheel is started (a build failed beside it).
/// The failures of `ready` are reported with the downloads'.
pub fn ensure_each(
    store: &Store,
    wants: &[Want],
    stop: &AtomicBool,
    ready: &(dyn Fn(usize) -> Result<()> + Sync),
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let errors = Mutex::new(Vec::new());
    let client = std::sync::OnceLock::new();
    let workers = wants.len().clamp(1, 8);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(w) = wants.get(i) else { break };
                let res = (|| -> Result<()> {
                    let d = stored(store, w, &client)?;
                    if store
                        .get_record::<String>("python-wheels", &w.sha256)
                        .is_none()
                    {
                        wheel::verify_archive(&store.blob_path(&d), &w.filename)?;
                        store.put_record("python-wheels", &w.sha256, &w.filename)?;
                    }
                    ready(i)
                })();
                if let Err(e) = res {
                    errors.lock().unwrap().push((i, format!("{e:#}")));
                }
            });
        }
    });
    let mut errors = errors.into_inner().unwrap();
    if !errors.is_empty() {
        // In the order of `wants`, whichever worker met them first.
        errors.sort();
        let lines: Vec<String> = errors.into_iter().map(|(_, e)| e).collect();
        bail!("{}", lines.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
