//! PEP 751 `pylock.toml`: packages selected by their markers, with `extras` and
//! `dependency_groups` of the user's choice.

use super::model::{bad, eval, lock_relative, Artifacts, Choice, Locked, Other, Package, WheelRef};
use crate::python::filename::{basename, normalize};
use crate::python::markers::{self, Env};
use crate::usage;
use anyhow::Result;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize)]
struct Pylock {
    #[serde(rename = "lock-version")]
    lock_version: Option<String>,
    #[serde(default)]
    extras: Vec<String>,
    #[serde(default, rename = "dependency-groups")]
    dependency_groups: Vec<String>,
    #[serde(default, rename = "default-groups")]
    default_groups: Vec<String>,
    #[serde(default)]
    packages: Vec<PyPackage>,
}

#[derive(Deserialize)]
struct PyPackage {
    name: String,
    version: Option<String>,
    marker: Option<String>,
    #[serde(default)]
    wheels: Vec<PyFile>,
    sdist: Option<PyFile>,
    vcs: Option<toml::Value>,
    directory: Option<toml::Value>,
    archive: Option<toml::Value>,
}

#[derive(Deserialize)]
struct PyFile {
    name: Option<String>,
    url: Option<String>,
    path: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

pub(super) fn load(text: &str, path: &Path, env: &Env, choice: &Choice) -> Result<Locked> {
    let lock: Pylock = toml::from_str(text).map_err(|e| bad(path, e))?;
    match lock.lock_version.as_deref() {
        Some(v) if v.starts_with("1.") || v == "1" => {}
        other => {
            return Err(bad(
                path,
                format!("lock-version {other:?} is not supported (expected 1.x)"),
            ))
        }
    }
    for (what, asked, defined) in [
        ("extra", &choice.extras, &lock.extras),
        ("group", &choice.groups, &lock.dependency_groups),
    ] {
        for a in asked {
            if !defined.iter().any(|d| normalize(d) == normalize(a)) {
                return Err(usage!(
                    "{what} `{a}` is not listed by {} (it lists: {})",
                    path.display(),
                    if defined.is_empty() {
                        "none".into()
                    } else {
                        defined.join(", ")
                    }
                ));
            }
        }
    }
    let mut penv = env.clone();
    penv.extras = choice
        .extras
        .iter()
        .map(|e| markers::normalize(e))
        .collect();
    let groups = if choice.groups.is_empty() {
        &lock.default_groups
    } else {
        &choice.groups
    };
    penv.groups = groups.iter().map(|g| markers::normalize(g)).collect();
    let mut out = Locked::default();
    for p in &lock.packages {
        if !eval(p.marker.as_deref(), &penv, path)? {
            continue;
        }
        let file = |f: &PyFile| {
            let loc = f.url.as_deref().or(f.path.as_deref()).unwrap_or("");
            WheelRef {
                filename: f.name.clone().unwrap_or_else(|| basename(loc).to_string()),
                url: f.url.clone(),
                path: f.path.as_ref().map(|x| lock_relative(path, x)),
                sha256: f.hashes.get("sha256").map(|h| h.to_ascii_lowercase()),
                size: f.size,
            }
        };
        let field = |v: &toml::Value, k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let other = if let Some(v) = &p.vcs {
            Some(Other::Git {
                url: field(v, "url"),
                commit: field(v, "commit-id"),
                subdirectory: v
                    .get("subdirectory")
                    .and_then(|x| x.as_str())
                    .map(String::from),
            })
        } else if let Some(d) = &p.directory {
            Some(Other::Local {
                kind: "directory".into(),
                path: field(d, "path"),
            })
        } else {
            p.archive.as_ref().map(|a| Other::Unknown {
                kind: "archive".into(),
                detail: a.to_string(),
            })
        };
        out.packages.push(Package {
            name: p.name.clone(),
            version: p.version.clone().unwrap_or_default(),
            artifacts: Artifacts::Files {
                wheels: p.wheels.iter().map(file).collect(),
                sdist: p.sdist.as_ref().map(file),
                other,
            },
        });
    }
    Ok(out)
}
