//! Lock files: `uv.lock`, PEP 751 `pylock.toml`, and fully pinned, hashed `requirements.txt`.
//! Each becomes the list of distributions to install for the target (markers evaluated for it).

use super::filename::normalize;
use super::markers::Env;
use crate::usage;

mod model;
mod pylock;
mod requirements;
mod uv;
use anyhow::Result;
pub use model::{Artifacts, Choice, Locked, Other, Package, WheelRef};
use std::collections::BTreeSet;
use std::path::Path;

/// The lock's own `requires-python` (the top-level key of uv.lock and pylock.toml).
pub fn requires_python(path: &Path) -> Result<Option<String>> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !(name.ends_with(".lock") || name.ends_with(".toml")) {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "requires-python")]
        requires_python: Option<String>,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage!("cannot read lock file {}: {e}", path.display()))?;
    let head: Head = toml::from_str(&text).map_err(|e| model::bad(path, e))?;
    Ok(head.requires_python)
}

/// Refuses a target whose Python the lock was not resolved for (uv refuses it up front too:
/// the lock's markers are simplified for its `requires-python`, so they would be wrong here).
pub fn check_requires_python(path: &Path, version: &str, interpreter: &str) -> Result<()> {
    let Some(spec) = requires_python(path)? else {
        return Ok(());
    };
    let Some(v) = super::version::Version::parse(version) else {
        return Ok(());
    };
    if super::version::satisfies(&v, &spec) {
        return Ok(());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Err(anyhow::Error::new(crate::error::UsageError::new(format!(
        "The lock requires Python {spec}, but the image's interpreter {interpreter} is {version} ({name} was resolved for `requires-python = \"{spec}\"`; its markers and wheels do not describe Python {version})"
    ))
    .hint(format!(
        "use a base image whose Python satisfies {spec}, or lower `requires-python` in pyproject.toml and run `uv lock` again"
    ))))
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

#[cfg(test)]
mod tests;
