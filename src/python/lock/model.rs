//! What a lock file says, whatever its format: the distributions to install and where their
//! files are; and the helpers every format's reader shares.

use crate::python::markers::{self, Env};
use crate::usage;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A file the lock names (a wheel, or the sdist).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WheelRef {
    pub filename: String,
    pub url: Option<String>,
    /// A local wheel (relative paths are resolved against the lock's directory).
    pub path: Option<PathBuf>,
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

/// Where a distribution's files come from.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub enum Artifacts {
    /// Files named by the lock; `sdist` is the source distribution (built when no wheel fits),
    /// `other` says what else exists (for messages).
    Files {
        wheels: Vec<WheelRef>,
        sdist: Option<WheelRef>,
        other: Option<String>,
    },
    /// Only the allowed sha256 hashes (requirements.txt): the files are found through the index.
    Hashes(Vec<String>),
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub artifacts: Artifacts,
}

/// What the user asked for beyond the lock: extras and groups of the project, exclusions.
#[derive(Clone, Debug, Default)]
pub struct Choice {
    pub groups: Vec<String>,
    pub extras: Vec<String>,
    pub exclude: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Locked {
    pub packages: Vec<Package>,
    /// `--index-url` / `--extra-index-url` of a requirements file, in order.
    pub indexes: Vec<String>,
    pub find_links: Vec<String>,
    /// The registries the lock's files were resolved against (uv.lock `source.registry`).
    pub registries: BTreeSet<String>,
}

pub fn bad(path: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    usage!("{}: {e}", path.display())
}

pub fn sha256_of(hash: &str) -> Option<String> {
    hash.strip_prefix("sha256:")
        .or_else(|| hash.strip_prefix("sha256="))
        .map(|h| h.to_ascii_lowercase())
}

pub fn eval(marker: Option<&str>, env: &Env, path: &Path) -> Result<bool> {
    markers::evaluate(marker.unwrap_or(""), env).map_err(|e| bad(path, e))
}

pub fn lock_relative(lock: &Path, p: &str) -> PathBuf {
    lock.parent().unwrap_or(Path::new(".")).join(p)
}
