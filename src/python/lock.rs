//! Lock files: `uv.lock`, PEP 751 `pylock.toml`, and fully pinned, hashed `requirements.txt`.
//! Each becomes the list of distributions to install for the target (markers evaluated for it).

use super::filename::normalize;
use super::markers::{self, Env};
use crate::usage;

mod pylock;
mod requirements;
mod uv;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A wheel the lock names.
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
    /// Files named by the lock; `sdist` and `other` say what else exists (for messages).
    Files {
        wheels: Vec<WheelRef>,
        sdist: Option<String>,
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

/// Reads the lock at `path` and selects the distributions the target needs.
pub fn load(path: &Path, env: &Env, choice: &Choice) -> Result<Locked> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage!("cannot read lock file {}: {e}", path.display()))?;
    load_text(&text, path, env, choice)
}

/// Parses lock `text` as the file at `path` (whose name says the format).
pub fn load_text(text: &str, path: &Path, env: &Env, choice: &Choice) -> Result<Locked> {
    let text = text.to_string();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let mut locked = if name.ends_with(".toml") && name.starts_with("pylock") {
        pylock::load(&text, path, env, choice)?
    } else if name.ends_with(".lock") {
        uv::load(&text, path, env, choice)?
    } else if name.ends_with(".txt") || name.ends_with(".in") {
        if !choice.groups.is_empty() || !choice.extras.is_empty() {
            return Err(usage!("{}: `groups` and `extras` apply to uv.lock and pylock.toml; a requirements file already lists everything to install", path.display()));
        }
        requirements::load(&text, path, env)?
    } else {
        return Err(usage!(
            "lock file {}: expected uv.lock, pylock.toml (or pylock.NAME.toml) or a requirements .txt",
            path.display()
        ));
    };
    let present: BTreeSet<String> = locked.packages.iter().map(|p| normalize(&p.name)).collect();
    for x in &choice.exclude {
        if !present.contains(&normalize(x)) {
            return Err(usage!(
                "exclude `{x}`: {} installs no package of that name for this target",
                path.display()
            ));
        }
    }
    let excluded: BTreeSet<String> = choice.exclude.iter().map(|x| normalize(x)).collect();
    locked
        .packages
        .retain(|p| !excluded.contains(&normalize(&p.name)));
    locked.packages.sort_by_key(|p| normalize(&p.name));
    Ok(locked)
}

pub(super) fn bad(path: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    usage!("{}: {e}", path.display())
}

pub(super) fn sha256_of(hash: &str) -> Option<String> {
    hash.strip_prefix("sha256:")
        .or_else(|| hash.strip_prefix("sha256="))
        .map(|h| h.to_ascii_lowercase())
}

pub(super) fn eval(marker: Option<&str>, env: &Env, path: &Path) -> Result<bool> {
    markers::evaluate(marker.unwrap_or(""), env).map_err(|e| bad(path, e))
}

pub(super) fn lock_relative(lock: &Path, p: &str) -> PathBuf {
    lock.parent().unwrap_or(Path::new(".")).join(p)
}

#[cfg(test)]
mod tests;
