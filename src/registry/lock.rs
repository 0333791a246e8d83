//! `imgbuild.lock`: base images pinned by digest. The first resolution of a tag writes its
//! entry; later builds use the locked digests and never ask the registry what the tag means now.
//! Also the build requirements each sdist was built with (`[python-build."NAME VERSION TARGET"]`,
//! written by `python::sdist`), so that the next build uses exactly the same backend.
//! And the Debian packages each `debian` layer (and each base from the archive) resolved to
//! (`[debian."IMAGE/LAYER"]`, written by `debian`): exact versions, files and sha256s.
//!
//! ```toml
//! [base."registry.example.com/library/python:3.13-slim"]
//! index = "sha256:…"                 # what the tag named, when it was a multi-platform index
//! [base."registry.example.com/library/python:3.13-slim".manifests]
//! "linux/amd64" = "sha256:…"         # the platform's image manifest
//! ```

use crate::digest::Digest;
use crate::store::write_atomic;
use crate::usage;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "imgbuild.lock";
const HEADER: &str = "# imgbuild.lock: base images pinned by digest. Written by imgbuild; commit it.\n\
# Builds use these digests and never re-resolve the tags. Refresh: imgbuild lock --update [IMAGE]\n\n";

impl LockFile {
    /// Reads the lock, changes it with `f` and writes it back (only when `f` changed it).
    pub fn update(root: &Path, f: impl FnOnce(&mut LockFile)) -> Result<()> {
        // One read-modify-write at a time in this process (the platforms of an index build
        // side by side, and each may pin what it resolved).
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let mut l = LockFile::load(root)?;
        let before = l.clone();
        f(&mut l);
        if l != before {
            l.save(root)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    #[serde(default)]
    pub base: BTreeMap<String, Locked>,
    /// Local files a Python lock names without a hash (path relative to the project →
    /// `sha256:…`), pinned at first use; `imgbuild lock --update` drops them to accept changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// `NAME VERSION for TARGET` → the build requirements its sdist was built with.
    #[serde(
        default,
        rename = "python-build",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub python_build: BTreeMap<String, BuildPins>,
    /// `IMAGE/LAYER` (or `IMAGE/[base]`) → the Debian packages it resolved to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub debian: BTreeMap<String, DebianPins>,
}

/// The Debian packages one request resolved to, and what it was resolved against.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DebianPins {
    /// The release (codename) and Debian architecture.
    pub release: String,
    pub architecture: String,
    /// The package names asked for, as imgbuild.toml lists them.
    pub request: Vec<String>,
    /// sha256 (hex) of the base's dpkg status file the request was resolved against (empty
    /// for a base from the archive).
    #[serde(default)]
    pub base: String,
    #[serde(default)]
    pub packages: Vec<DebianPin>,
}

/// One package file, by exact version and hash (from the signed `Packages` index).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct DebianPin {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

/// The build requirements of one sdist for one target, resolved once.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BuildPins {
    /// The sha256 (hex) of the sdist these pins were resolved for (`sdist::pins_id`: for a
    /// source directory, its build system).
    pub sdist: String,
    #[serde(default)]
    pub requires: Vec<PinnedFile>,
}

/// One wheel of a build environment, by exact version and hash.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct PinnedFile {
    pub name: String,
    pub version: String,
    pub filename: String,
    pub url: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Locked {
    /// The index the tag named (absent when the tag named a single manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
    /// Platform (`os/arch[/variant]`) → image manifest digest.
    #[serde(default)]
    pub manifests: BTreeMap<String, Digest>,
}

pub fn path(root: &Path) -> PathBuf {
    root.join(FILE_NAME)
}

impl LockFile {
    pub fn load(root: &Path) -> Result<LockFile> {
        let p = path(root);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockFile::default()),
            Err(e) => return Err(usage!("cannot read {}: {e}", p.display())),
        };
        toml::from_str(&text).map_err(|e| {
            anyhow::Error::new(
                crate::spec::toml_error(&text, &p, &e).hint(
                    "fix it, or delete it and run `imgbuild lock` to resolve the bases again",
                ),
            )
        })
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let body = toml::to_string(self).expect("the lock file serialises");
        write_atomic(&path(root), format!("{HEADER}{body}").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_keys() {
        let d = tempfile::tempdir().unwrap();
        let mut l = LockFile::default();
        let mut e = Locked {
            index: Some(Digest::of(b"i")),
            ..Default::default()
        };
        e.manifests.insert("linux/amd64".into(), Digest::of(b"m"));
        l.base.insert("127.0.0.1:5000/bb:1".into(), e);
        l.save(d.path()).unwrap();
        let text = std::fs::read_to_string(path(d.path())).unwrap();
        assert!(text.starts_with("# imgbuild.lock"), "{text}");
        assert!(
            text.contains("[base.\"127.0.0.1:5000/bb:1\".manifests]"),
            "{text}"
        );
        assert_eq!(LockFile::load(d.path()).unwrap(), l);
        std::fs::write(path(d.path()), "[base.\"x\"]\nmanifest = \"a\"\n").unwrap();
        let err = LockFile::load(d.path()).unwrap_err().to_string();
        assert!(err.contains("imgbuild.lock:2:1"), "{err}");
        assert!(LockFile::load(&d.path().join("none"))
            .unwrap()
            .base
            .is_empty());
    }
}
