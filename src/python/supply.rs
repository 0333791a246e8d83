//! What a Python layer reports for the SBOM and the provenance: each distribution it installs
//! (name, version, the wheel's sha256, where it came from — said without index hosts or
//! credentials), the lock file's sha256 and each wheel, sdist and git commit it resolved.

use super::lock::WheelRef;
use super::select::{Origin, Pick, SourceRef};
use crate::sbom::{pypi_purl, Ecosystem, Input, Package, Supply};
use std::collections::BTreeMap;
use std::path::Path;

/// The report of a layer that installs `picks` from the lock `lock` (a path under `root`).
pub fn supply(root: &Path, lock: &Path, picks: &[Pick]) -> Supply {
    let mut s = Supply::default();
    let rel = lock
        .strip_prefix(root)
        .unwrap_or(lock)
        .display()
        .to_string();
    let mut deps = BTreeMap::new();
    if let Ok(bytes) = std::fs::read(lock) {
        deps = crate::sbom::pylock::dependencies(&String::from_utf8_lossy(&bytes));
        s.inputs.push(input(
            format!("file:{rel}"),
            "sha256",
            crate::digest::Digest::of(&bytes).hex().to_string(),
        ));
    }
    for p in picks {
        let purl = pypi_purl(&p.name, &p.version);
        let file_input = |filename: &str, sha: &str| {
            input(
                format!("{purl}?file_name={}", crate::sbom::purl_encode(filename)),
                "sha256",
                sha.to_string(),
            )
        };
        let (sha256, source) = match &p.origin {
            Origin::Lock { url, .. } => {
                s.inputs.push(file_input(&p.filename, &p.sha256));
                let whence = if url.is_some() {
                    "a package index"
                } else {
                    "a local path in the lock"
                };
                (
                    Some(p.sha256.clone()),
                    format!("wheel {} from {whence}", p.filename),
                )
            }
            Origin::Local(_) => {
                s.inputs.push(file_input(&p.filename, &p.sha256));
                (
                    Some(p.sha256.clone()),
                    format!("wheel {} from find_links", p.filename),
                )
            }
            Origin::Index { hashes, .. } => {
                let known = !p.sha256.is_empty() && !p.filename.is_empty();
                if known {
                    s.inputs.push(file_input(&p.filename, &p.sha256));
                }
                (
                    known.then(|| p.sha256.clone()),
                    format!(
                        "wheel from a package index, one of {} hashes the requirements allow",
                        hashes.len()
                    ),
                )
            }
            Origin::Sdist(WheelRef {
                filename, sha256, ..
            }) => {
                let sha = sha256.clone().unwrap_or_else(|| p.sha256.clone());
                s.inputs.push(file_input(filename, &sha));
                (None, format!("built from sdist {filename} (sha256 {sha})"))
            }
            Origin::Source(SourceRef::Dir(d)) => {
                let d = d.strip_prefix(root).unwrap_or(d).display().to_string();
                (None, format!("built from the project directory {d}"))
            }
            Origin::Source(SourceRef::Git { url, commit, .. }) => {
                let url = without_userinfo(url);
                s.inputs.push(input(
                    format!("git+{url}@{commit}"),
                    "gitCommit",
                    commit.clone(),
                ));
                (None, format!("built from git commit {commit} of {url}"))
            }
        };
        s.packages.push(Package {
            ecosystem: Ecosystem::Python,
            name: p.name.clone(),
            version: p.version.clone(),
            arch: None,
            sha256,
            digests: BTreeMap::new(),
            source: Some(source),
            license: None,
            depends_on: crate::sbom::pylock::of(&deps, &p.name, &p.version),
        });
    }
    s
}

fn input(uri: String, alg: &str, value: String) -> Input {
    let mut digest = BTreeMap::new();
    digest.insert(alg.to_string(), value);
    Input { uri, digest }
}

/// A URL without `user[:password]@`.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, tail) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = auth.rsplit_once('@').map(|(_, h)| h).unwrap_or(auth);
            format!("{scheme}://{host}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn git_urls_lose_their_credentials() {
        assert_eq!(
            super::without_userinfo("https://user:tok@git.example.com/a/b.git"),
            "https://git.example.com/a/b.git"
        );
        assert_eq!(super::without_userinfo("ssh://git@h/x"), "ssh://h/x");
    }
}
