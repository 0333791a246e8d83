//! Lock files: `uv.lock`, PEP 751 `pylock.toml`, and fully pinned, hashed `requirements.txt`.
//! Each becomes the list of distributions to install for the target (markers evaluated for it).

use super::filename::{basename, normalize};
use super::markers::{self, Env};
use crate::usage;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let mut locked = if name.ends_with(".toml") && name.starts_with("pylock") {
        pylock(&text, path, env, choice)?
    } else if name.ends_with(".lock") {
        uv(&text, path, env, choice)?
    } else if name.ends_with(".txt") || name.ends_with(".in") {
        if !choice.groups.is_empty() || !choice.extras.is_empty() {
            return Err(usage!("{}: `groups` and `extras` apply to uv.lock and pylock.toml; a requirements file already lists everything to install", path.display()));
        }
        requirements(&text, path, env)?
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

fn bad(path: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    usage!("{}: {e}", path.display())
}

fn sha256_of(hash: &str) -> Option<String> {
    hash.strip_prefix("sha256:")
        .or_else(|| hash.strip_prefix("sha256="))
        .map(|h| h.to_ascii_lowercase())
}

// ---- uv.lock ----

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

fn uv(text: &str, path: &Path, env: &Env, choice: &Choice) -> Result<Locked> {
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
    for &i in active.keys() {
        let p = &pk[i];
        if let Some(r) = p.source.get("registry").and_then(|v| v.as_str()) {
            out.registries.insert(r.to_string());
        }
        out.packages.push(uv_package(p, path)?);
    }
    Ok(out)
}

fn eval(marker: Option<&str>, env: &Env, path: &Path) -> Result<bool> {
    markers::evaluate(marker.unwrap_or(""), env).map_err(|e| bad(path, e))
}

fn uv_package(p: &UvPackage, path: &Path) -> Result<Package> {
    let version = p.version.clone().unwrap_or_default();
    let other = ["git", "directory", "editable", "virtual"]
        .iter()
        .find(|k| p.source.contains_key(**k))
        .map(|k| format!("a {k} source ({})", p.source[*k]));
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
            path: w.path.as_ref().map(|p| lock_relative(path, p)),
            sha256: w.hash.as_deref().and_then(sha256_of),
            size: w.size,
        });
    }
    let sdist = p.sdist.as_ref().map(|s| {
        s.url
            .as_deref()
            .or(s.path.as_deref())
            .map(|u| basename(u).to_string())
            .unwrap_or_else(|| "an sdist".into())
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

fn lock_relative(lock: &Path, p: &str) -> PathBuf {
    lock.parent().unwrap_or(Path::new(".")).join(p)
}

// ---- pylock.toml (PEP 751) ----

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

fn pylock(text: &str, path: &Path, env: &Env, choice: &Choice) -> Result<Locked> {
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
        let other = [
            ("vcs", &p.vcs),
            ("directory", &p.directory),
            ("archive", &p.archive),
        ]
        .iter()
        .find(|(_, v)| v.is_some())
        .map(|(k, _)| format!("a {k} source"));
        out.packages.push(Package {
            name: p.name.clone(),
            version: p.version.clone().unwrap_or_default(),
            artifacts: Artifacts::Files {
                wheels: p.wheels.iter().map(file).collect(),
                sdist: p.sdist.as_ref().map(|s| file(s).filename),
                other,
            },
        });
    }
    Ok(out)
}

// ---- requirements.txt ----

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

fn requirements(text: &str, path: &Path, env: &Env) -> Result<Locked> {
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
            let w = super::filename::WheelName::parse(&filename).ok_or_else(|| {
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

#[cfg(test)]
mod tests;
