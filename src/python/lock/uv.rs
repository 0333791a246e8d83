//! `uv.lock`: the project's dependencies walked from its root package, with markers, extras
//! and dependency groups evaluated for the target.

use super::model::{
    bad, eval, lock_relative, sha256_of, Artifacts, Choice, Locked, Other, Package, WheelRef,
};
use crate::python::filename::{basename, normalize};
use crate::python::markers::{self, Env};
use crate::usage;
use anyhow::Result;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Deserialize)]
struct UvLock {
    #[serde(default)]
    package: Vec<UvPackage>,
    manifest: Option<UvManifest>,
}

#[derive(Deserialize)]
struct UvManifest {
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
struct UvPackage {
    name: String,
    version: Option<String>,
    #[serde(default)]
    source: BTreeMap<String, toml::Value>,
    #[serde(default)]
    dependencies: Vec<UvDep>,
    #[serde(default, rename = "optional-dependencies")]
    optional: BTreeMap<String, Vec<UvDep>>,
    #[serde(default, rename = "dev-dependencies")]
    dev: BTreeMap<String, Vec<UvDep>>,
    #[serde(default)]
    wheels: Vec<UvFile>,
    sdist: Option<UvFile>,
    #[serde(default, rename = "resolution-markers")]
    resolution_markers: Vec<String>,
}

#[derive(Deserialize)]
struct UvDep {
    name: String,
    version: Option<String>,
    marker: Option<String>,
    #[serde(default)]
    extra: Vec<String>,
}

#[derive(Deserialize)]
struct UvFile {
    url: Option<String>,
    path: Option<String>,
    filename: Option<String>,
    hash: Option<String>,
    size: Option<u64>,
}

pub(super) fn load(text: &str, path: &Path, env: &Env, choice: &Choice) -> Result<Locked> {
    let lock: UvLock = toml::from_str(text).map_err(|e| bad(path, e))?;
    let pk = &lock.package;
    let is_root = |p: &UvPackage| {
        ["editable", "virtual"]
            .iter()
            .any(|k| p.source.get(*k).and_then(|v| v.as_str()) == Some("."))
    };
    let mut roots: Vec<usize> = (0..pk.len()).filter(|&i| is_root(&pk[i])).collect();
    if roots.is_empty() {
        if let Some(m) = &lock.manifest {
            let members: BTreeSet<String> = m.members.iter().map(|n| normalize(n)).collect();
            roots = (0..pk.len())
                .filter(|&i| members.contains(&normalize(&pk[i].name)))
                .collect();
        }
    }
    if roots.is_empty() {
        return Err(bad(path, "no project package (source = { editable = \".\" } or { virtual = \".\" }) to start from"));
    }
    // The workspace: its root package(s) and the manifest's members.
    let mut members: BTreeSet<String> = lock
        .manifest
        .iter()
        .flat_map(|m| m.members.iter().map(|n| normalize(n)))
        .collect();
    members.extend(roots.iter().map(|&i| normalize(&pk[i].name)));
    let project_roots = roots.clone();
    if choice.all_packages {
        // `uv sync --all-packages`: every member (and what each needs).
        roots = (0..pk.len())
            .filter(|&i| members.contains(&normalize(&pk[i].name)))
            .collect();
    } else if !choice.packages.is_empty() {
        // `uv sync --package NAME`: those members instead of the root.
        roots = Vec::new();
        for want in &choice.packages {
            let Some(i) = (0..pk.len()).find(|&i| {
                normalize(&pk[i].name) == normalize(want) && members.contains(&normalize(want))
            }) else {
                return Err(usage!(
                    "packages: `{want}` is not a member of the workspace in {} (members: {})",
                    path.display(),
                    members.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            };
            roots.push(i);
        }
    }
    let root_names: Vec<&str> = roots.iter().map(|&i| pk[i].name.as_str()).collect();
    for (what, asked, defined) in [
        (
            "extra",
            &choice.extras,
            roots
                .iter()
                .flat_map(|&i| pk[i].optional.keys())
                .collect::<Vec<_>>(),
        ),
        (
            "group",
            &choice.groups,
            roots
                .iter()
                .flat_map(|&i| pk[i].dev.keys())
                .collect::<Vec<_>>(),
        ),
    ] {
        for a in asked {
            if !defined.iter().any(|d| normalize(d) == normalize(a)) {
                let list: Vec<&str> = defined.iter().map(|s| s.as_str()).collect();
                return Err(usage!(
                    "{what} `{a}` is not defined by {} in {} (defined: {})",
                    root_names.join(", "),
                    path.display(),
                    if list.is_empty() {
                        "none".to_string()
                    } else {
                        list.join(", ")
                    }
                ));
            }
        }
    }
    let find = |d: &UvDep| -> Result<usize> {
        let n = normalize(&d.name);
        let cands: Vec<usize> = (0..pk.len())
            .filter(|&i| normalize(&pk[i].name) == n)
            .filter(|&i| d.version.is_none() || pk[i].version == d.version)
            .collect();
        let pick = match cands.as_slice() {
            [one] => Some(*one),
            [] => None,
            many => many.iter().copied().find(|&i| {
                pk[i].resolution_markers.is_empty()
                    || pk[i]
                        .resolution_markers
                        .iter()
                        .any(|m| markers::evaluate(m, env).unwrap_or(false))
            }),
        };
        pick.ok_or_else(|| {
            bad(
                path,
                format!("dependency `{}` names no [[package]] of the lock", d.name),
            )
        })
    };
    let mut active: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut todo: Vec<(usize, BTreeSet<String>)> = Vec::new();
    let wanted = |v: &Vec<String>| {
        v.iter()
            .map(|s| markers::normalize(s))
            .collect::<BTreeSet<_>>()
    };
    let (extras, groups) = (wanted(&choice.extras), wanted(&choice.groups));
    for &r in &roots {
        let p = &pk[r];
        let renv = env.with_extras(&extras);
        let mut edges: Vec<&UvDep> = p.dependencies.iter().collect();
        for (k, v) in &p.optional {
            if extras.contains(&markers::normalize(k)) {
                edges.extend(v);
            }
        }
        for (k, v) in &p.dev {
            if groups.contains(&markers::normalize(k)) {
                edges.extend(v);
            }
        }
        for d in edges {
            if eval(d.marker.as_deref(), &renv, path)? {
                todo.push((
                    find(d)?,
                    d.extra.iter().map(|e| markers::normalize(e)).collect(),
                ));
            }
        }
    }
    while let Some((i, ex)) = todo.pop() {
        if roots.contains(&i) {
            continue;
        }
        let (new_pkg, fresh) = match active.get_mut(&i) {
            None => {
                active.insert(i, ex.clone());
                (true, ex)
            }
            Some(seen) => {
                let fresh: BTreeSet<String> = ex.difference(seen).cloned().collect();
                seen.extend(fresh.iter().cloned());
                (false, fresh)
            }
        };
        if !new_pkg && fresh.is_empty() {
            continue;
        }
        let p = &pk[i];
        let penv = env.with_extras(&active[&i]);
        let mut edges: Vec<&UvDep> = if new_pkg {
            p.dependencies.iter().collect()
        } else {
            Vec::new()
        };
        for (k, v) in &p.optional {
            if fresh.contains(&markers::normalize(k)) {
                edges.extend(v);
            }
        }
        for d in edges {
            if eval(d.marker.as_deref(), &penv, path)? {
                todo.push((
                    find(d)?,
                    d.extra.iter().map(|e| markers::normalize(e)).collect(),
                ));
            }
        }
    }
    let mut out = Locked::default();
    let mut emit: BTreeSet<usize> = active.keys().copied().collect();
    emit.extend(roots.iter().copied());
    for i in emit {
        let p = &pk[i];
        let name = normalize(&p.name);
        let what = format!("{} {}", p.name, p.version.as_deref().unwrap_or(""));
        if let Some(Other::Local { kind, path: dir }) = uv_other(&p.source) {
            if kind == "virtual" {
                out.notes.push(format!(
                    "{} is virtual (source = {{ virtual = \"{dir}\" }}): it has no files of its own; only its dependencies are installed",
                    what.trim_end()
                ));
                continue;
            }
            if members.contains(&name) {
                let is_project = project_roots.contains(&i);
                let off = if is_project && !choice.install_project {
                    Some("install_project = false")
                } else if !choice.install_workspace {
                    Some("install_workspace = false")
                } else {
                    None
                };
                if let Some(off) = off {
                    out.notes.push(format!(
                        "{} ({kind} source \"{dir}\") is not installed: {off}",
                        what.trim_end()
                    ));
                    continue;
                }
            }
        }
        if let Some(r) = p.source.get("registry").and_then(|v| v.as_str()) {
            if r.contains("://") {
                out.registries.insert(r.to_string());
            }
        }
        out.packages.push(uv_package(p, path)?);
    }
    Ok(out)
}

/// What a `source` other than a registry or a plain URL/path says.
fn uv_other(source: &BTreeMap<String, toml::Value>) -> Option<Other> {
    let text = |v: &toml::Value| {
        v.as_str()
            .map(String::from)
            .unwrap_or_else(|| v.to_string())
    };
    if let Some(g) = source.get("git") {
        // `URL?rev=…#COMMIT` (or `URL?tag=…`, `URL?branch=…`): the fragment is the commit.
        let g = text(g);
        let (rest, commit) = g.rsplit_once('#').unwrap_or((&g, ""));
        let (url, query) = rest.split_once('?').unwrap_or((rest, ""));
        let subdirectory = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("subdirectory="))
            .map(String::from);
        return Some(Other::Git {
            url: url.to_string(),
            commit: commit.to_string(),
            subdirectory,
        });
    }
    ["editable", "directory", "virtual"]
        .iter()
        .find_map(|k| source.get(*k).map(|v| (k, v)))
        .map(|(k, v)| Other::Local {
            kind: k.to_string(),
            path: text(v),
        })
}

fn uv_package(p: &UvPackage, path: &Path) -> Result<Package> {
    let version = p.version.clone().unwrap_or_default();
    let other = uv_other(&p.source);
    // A find-links directory as the registry: its files' paths are relative to it.
    let local_registry = p
        .source
        .get("registry")
        .and_then(|v| v.as_str())
        .filter(|r| !r.contains("://"))
        .map(|r| lock_relative(path, r));
    let file_path = |f: &str| match &local_registry {
        Some(dir) => dir.join(f),
        None => lock_relative(path, f),
    };
    // A `path` source is one archive (a wheel or an sdist), relative to the lock's directory:
    // uv records its hash and filename, not its path again (`wheels = [{ filename, hash }]`,
    // `sdist = { hash }`).
    let path_source = p
        .source
        .get("path")
        .and_then(|v| v.as_str())
        .map(|f| lock_relative(path, f));
    let mut wheels = Vec::new();
    for w in &p.wheels {
        let loc = w.url.as_deref().or(w.path.as_deref()).unwrap_or("");
        let filename = w
            .filename
            .clone()
            .unwrap_or_else(|| basename(loc).to_string());
        wheels.push(WheelRef {
            filename,
            url: w.url.clone(),
            path: w
                .path
                .as_deref()
                .map(file_path)
                .or_else(|| w.url.is_none().then(|| path_source.clone()).flatten()),
            sha256: w.hash.as_deref().and_then(sha256_of),
            size: w.size,
        });
    }
    let sdist = p.sdist.as_ref().map(|s| WheelRef {
        filename: s
            .filename
            .clone()
            .or_else(|| {
                s.url
                    .as_deref()
                    .or(s.path.as_deref())
                    .map(|u| basename(u).to_string())
                    .or_else(|| {
                        path_source
                            .as_ref()
                            .and_then(|p| p.file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                    })
            })
            .unwrap_or_else(|| "an sdist".into()),
        url: s.url.clone(),
        path: s
            .path
            .as_ref()
            .map(|x| lock_relative(path, x))
            .or_else(|| s.url.is_none().then(|| path_source.clone()).flatten()),
        sha256: s.hash.as_deref().and_then(sha256_of),
        size: s.size,
    });
    Ok(Package {
        name: p.name.clone(),
        version,
        artifacts: Artifacts::Files {
            wheels,
            sdist,
            other,
        },
    })
}
