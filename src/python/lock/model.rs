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

/// A source the lock names instead of files: git, a local project directory, an archive.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub enum Other {
    /// Locked to `commit` of the repository at `url` (uv `git = "URL?rev=…#COMMIT"`, pylock
    /// `vcs`): only a wheel built from that commit may stand in for it.
    Git {
        url: String,
        commit: String,
        /// The project's directory inside the repository (`subdirectory=`), if not its top.
        subdirectory: Option<String>,
    },
    /// A directory of the project (`kind`: editable, directory or virtual; `path` as written).
    Local { kind: String, path: String },
    /// Anything else the lock names (its kind, and what it says).
    Unknown { kind: String, detail: String },
}

impl std::fmt::Display for Other {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Other::Git {
                url,
                commit,
                subdirectory,
            } => {
                write!(f, "git commit {commit} of {url}")?;
                if let Some(s) = subdirectory {
                    write!(f, " (subdirectory {s})")?;
                }
                Ok(())
            }
            Other::Local { kind, path } => {
                let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                write!(f, "{article} {kind} source (\"{path}\")")
            }
            Other::Unknown { kind, detail } => {
                let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                write!(f, "{article} {kind} source ({detail})")
            }
        }
    }
}

/// Where a distribution's files come from.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub enum Artifacts {
    /// Files named by the lock; `sdist` is the source distribution (built when no wheel fits),
    /// `other` says what else exists (for messages).
    Files {
        wheels: Vec<WheelRef>,
        sdist: Option<WheelRef>,
        other: Option<Other>,
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

/// What the user asked for beyond the lock: extras and groups of the project, exclusions,
/// and which of the project's own packages to install (uv's names and meanings).
#[derive(Clone, Debug)]
pub struct Choice {
    pub groups: Vec<String>,
    pub extras: Vec<String>,
    pub exclude: Vec<String>,
    /// `uv sync --no-install-project` when false.
    pub install_project: bool,
    /// `uv sync --no-install-workspace` when false (the root and every member).
    pub install_workspace: bool,
    /// `uv sync --package NAME`: these members (and their dependencies) instead of the root.
    pub packages: Vec<String>,
    /// `uv sync --all-packages`.
    pub all_packages: bool,
}

impl Default for Choice {
    fn default() -> Choice {
        Choice {
            groups: vec![],
            extras: vec![],
            exclude: vec![],
            install_project: true,
            install_workspace: true,
            packages: vec![],
            all_packages: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Locked {
    pub packages: Vec<Package>,
    /// `--index-url` / `--extra-index-url` of a requirements file, in order.
    pub indexes: Vec<String>,
    pub find_links: Vec<String>,
    /// The registries the lock's files were resolved against (uv.lock `source.registry`).
    pub registries: BTreeSet<String>,
    /// What was left out on purpose and why (virtual roots, `install_project = false`, ...).
    pub notes: Vec<String>,
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
