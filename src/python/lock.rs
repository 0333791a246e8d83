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
pub use model::{Artifacts, Choice, Locked, Package, WheelRef};
use std::collections::BTreeSet;
use std::path::Path;

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
