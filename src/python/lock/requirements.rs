//! A fully pinned `requirements.txt` with `--hash` lines (pip-compile, `uv export`): exact
//! versions and the allowed sha256s; the files themselves are found through the index.

use super::model::{eval, sha256_of, Artifacts, Locked, Package, WheelRef};
use crate::python::filename::basename;
use crate::python::markers::Env;
use crate::usage;
use anyhow::Result;
use std::path::Path;

/// Logical lines (continuations joined, comments removed) with their first line number.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        if cur.is_empty() {
            start = i + 1;
        }
        let line = match raw.find(" #").or_else(|| raw.starts_with('#').then_some(0)) {
            Some(k) => &raw[..k],
            None => raw,
        };
        let line = line.trim_end();
        if let Some(l) = line.strip_suffix('\\') {
            cur.push_str(l);
            cur.push(' ');
            continue;
        }
        cur.push_str(line);
        if !cur.trim().is_empty() {
            out.push((start, cur.trim().to_string()));
        }
        cur.clear();
    }
    if !cur.trim().is_empty() {
        out.push((start, cur.trim().to_string()));
    }
    out
}

pub(super) fn load(text: &str, path: &Path, env: &Env) -> Result<Locked> {
    let mut out = Locked::default();
    let at = |n: usize| format!("{}:{n}", path.display());
    for (n, line) in logical_lines(text) {
        if line.starts_with('-') {
            let mut words = line.split_whitespace();
            let opt = words.next().unwrap_or("");
            let (name, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (opt, words.next().map(String::from)),
            };
            match name {
                "-i" | "--index-url" | "--extra-index-url" => {
                    let v = value.ok_or_else(|| usage!("{}: {name} needs a URL", at(n)))?;
                    if name == "--extra-index-url" {
                        out.indexes.push(v);
                    } else {
                        out.indexes.insert(0, v);
                    }
                }
                "-f" | "--find-links" => out
                    .find_links
                    .push(value.ok_or_else(|| usage!("{}: {name} needs a location", at(n)))?),
                "-r" | "--requirement" | "-c" | "--constraint" => {
                    return Err(usage!("{}: `{name}` (nested files) is not supported; export one complete file (`uv export --format requirements-txt` or `pip-compile --generate-hashes`)", at(n)))
                }
                "-e" | "--editable" => {
                    return Err(usage!("{}: editable requirements cannot be installed into an image; build a wheel into `find_links` and pin it", at(n)))
                }
                _ => {} // --no-binary, --only-binary, --pre, --trusted-host, --require-hashes, ...
            }
            continue;
        }
        let (req, hashes) = split_hashes(&line);
        let (spec, marker) = match req.split_once(';') {
            Some((s, m)) => (s.trim(), Some(m.trim())),
            None => (req.trim(), None),
        };
        if !eval(marker, env, path).map_err(|e| usage!("{}: {e}", at(n)))? {
            continue;
        }
        if hashes.is_empty() {
            return Err(usage!("{}: `{spec}` has no --hash=sha256:…; imgbuild installs only hash-pinned files (generate the file with `--generate-hashes`)", at(n)));
        }
        if let Some((name, url)) = spec.split_once(" @ ").or_else(|| spec.split_once('@')) {
            let name = name.split('[').next().unwrap_or(name).trim().to_string();
            let url = url.trim();
            let filename = basename(url).to_string();
            let w = crate::python::filename::WheelName::parse(&filename).ok_or_else(|| {
                usage!("{}: `{name}` points at {filename}, which is not a wheel; build a wheel into `find_links` and pin it by version", at(n))
            })?;
            out.packages.push(Package {
                name,
                version: w.version,
                artifacts: Artifacts::Files {
                    wheels: vec![WheelRef {
                        filename,
                        url: Some(url.to_string()),
                        path: None,
                        sha256: Some(hashes[0].clone()),
                        size: None,
                    }],
                    sdist: None,
                    other: None,
                },
            });
            continue;
        }
        let Some((name, version)) = spec.split_once("===").or_else(|| spec.split_once("==")) else {
            return Err(usage!("{}: `{spec}` is not pinned with `==`; imgbuild installs exactly what the file pins (`uv pip compile --generate-hashes` or `pip-compile --generate-hashes` writes such a file)", at(n)));
        };
        let name = name.split('[').next().unwrap_or(name).trim().to_string();
        let version = version.trim();
        if version.contains([',', '*', '<', '>']) || version.is_empty() {
            return Err(usage!("{}: `{spec}` is not an exact pin", at(n)));
        }
        out.packages.push(Package {
            name,
            version: version.to_string(),
            artifacts: Artifacts::Hashes(hashes),
        });
    }
    Ok(out)
}

/// Splits `--hash=sha256:…` options off a requirement line.
fn split_hashes(line: &str) -> (String, Vec<String>) {
    let mut req = Vec::new();
    let mut hashes = Vec::new();
    let mut words = line.split_whitespace().peekable();
    while let Some(w) = words.next() {
        let h = match w {
            "--hash" => words.next().map(String::from),
            w if w.starts_with("--hash=") => Some(w["--hash=".len()..].to_string()),
            w => {
                req.push(w);
                None
            }
        };
        if let Some(h) = h.as_deref().and_then(sha256_of) {
            hashes.push(h);
        }
    }
    (req.join(" "), hashes)
}
