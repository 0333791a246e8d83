//! Wheel selection: for each locked distribution, the best wheel for the target's tags, from
//! the lock, a `find_links` directory, or (requirements.txt) the index's files.

use super::filename::{normalize, WheelName};
use super::lock::{Artifacts, Locked, Other, Package, WheelRef};
use super::tags::Tags;
use super::target::Target;
use super::version::Version;
use crate::cache::StatCache;
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A wheel in a `find_links` directory.
#[derive(Clone, Debug, Serialize)]
pub struct LocalWheel {
    pub path: PathBuf,
    pub filename: String,
    pub sha256: String,
}

/// Where the chosen wheel comes from.
#[derive(Clone, Debug, Serialize)]
pub enum Origin {
    /// A URL or path named by the lock.
    Lock {
        url: Option<String>,
        path: Option<PathBuf>,
    },
    /// A wheel the user built into `find_links`.
    Local(PathBuf),
    /// No wheel fits (or `no_binary` names the package): a wheel built from this sdist
    /// (`python::sdist`). Until it is built, the pick's `filename`/`sha256` are the sdist's.
    Sdist(WheelRef),
    /// A wheel built from source (`python::sdist`): the project itself or a workspace member
    /// (a directory, as the lock writes it, relative to the lock's directory), or a git
    /// commit. Until it is built, the pick's `sha256` is the source's identity and its
    /// `filename` empty.
    Source(SourceRef),
    /// requirements.txt: one of `hashes`, found through the index when the layer is built
    /// (`fallback`: a `find_links` wheel for when the index has none for the target).
    Index {
        hashes: Vec<String>,
        fallback: Option<LocalWheel>,
    },
}

/// A source a wheel is built from.
#[derive(Clone, Debug, Serialize)]
pub enum SourceRef {
    Dir(PathBuf),
    Git {
        url: String,
        commit: String,
        subdirectory: Option<String>,
    },
}

/// The wheel chosen for one distribution.
#[derive(Clone, Debug, Serialize)]
pub struct Pick {
    pub name: String,
    pub version: String,
    /// Empty until an `Origin::Index` pick is resolved.
    pub filename: String,
    pub sha256: String,
    pub origin: Origin,
}

/// Lists the wheels of `find_links` directories (hashes through the stat cache).
pub fn scan_find_links(dirs: &[PathBuf], stat: &StatCache) -> Result<Vec<LocalWheel>> {
    let mut out = Vec::new();
    for d in dirs {
        let rd = std::fs::read_dir(d).map_err(|e| {
            crate::usage!(
                "find_links {}: {e} (it must be a local directory of wheels)",
                d.display()
            )
        })?;
        let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let Some(filename) = p.file_name().and_then(|n| n.to_str()).map(String::from) else {
                continue;
            };
            if WheelName::parse(&filename).is_none() {
                continue;
            }
            let md = std::fs::metadata(&p)?;
            let sha256 = stat.hash(&p, &crate::cache::FileId::of(&md))?;
            out.push(LocalWheel {
                path: p,
                filename,
                sha256,
            });
        }
    }
    Ok(out)
}

fn same_release(name: &str, version: &str, w: &WheelName) -> bool {
    normalize(&w.dist) == normalize(name)
        && match (Version::parse(&w.version), Version::parse(version)) {
            (Some(a), Some(b)) => a == b,
            _ => w.version == version,
        }
}

/// The best local wheel for a package, if any.
pub fn best_local<'a>(p: &Package, local: &'a [LocalWheel], tags: &Tags) -> Option<&'a LocalWheel> {
    local
        .iter()
        .filter_map(|l| {
            let w = WheelName::parse(&l.filename)?;
            same_release(&p.name, &p.version, &w).then_some(())?;
            Some((tags.best(&w.tags)?, l))
        })
        .min_by_key(|(r, _)| *r)
        .map(|(_, l)| l)
}

/// The git origin a wheel records (PEP 610 `direct_url.json` in its `.dist-info`): the
/// repository URL and commit it was built from.
pub fn built_from(path: &Path) -> Option<(String, String)> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).ok()?).ok()?;
    let name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .find(|n| n.ends_with(".dist-info/direct_url.json") && n.matches('/').count() == 1)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut zip.by_name(&name).ok()?, &mut text).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let vcs = v.get("vcs_info")?;
    (vcs.get("vcs")?.as_str()? == "git").then_some(())?;
    Some((
        v.get("url")?.as_str()?.to_string(),
        vcs.get("commit_id")?.as_str()?.to_string(),
    ))
}

fn same_repo(a: &str, b: &str) -> bool {
    let t = |u: &str| {
        u.trim_start_matches("git+")
            .trim_end_matches('/')
            .trim_end_matches(".git")
            .to_ascii_lowercase()
    };
    t(a) == t(b)
}

/// A package locked to a git commit: a `find_links` wheel of its name and version counts only
/// when it records that it was built from that commit of that repository; an index wheel never.
fn git_pick(
    p: &Package,
    (url, commit, subdirectory): (&str, &str, &Option<String>),
    local: &[LocalWheel],
    tags: &Tags,
    lock: &str,
    target: &Target,
) -> Result<Pick, String> {
    let mut ignored = Vec::new();
    for l in local {
        let Some(w) = WheelName::parse(&l.filename) else {
            continue;
        };
        if !same_release(&p.name, &p.version, &w) || tags.best(&w.tags).is_none() {
            continue;
        }
        match built_from(&l.path) {
            Some((u, c)) if same_repo(&u, url) && !commit.is_empty() && c == commit => {
                return Ok(Pick {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    filename: l.filename.clone(),
                    sha256: l.sha256.clone(),
                    origin: Origin::Local(l.path.clone()),
                });
            }
            Some((u, c)) => ignored.push(format!("{} (built from {c} of {u})", l.filename)),
            None => ignored.push(format!("{} (it records no git origin)", l.filename)),
        }
    }
    if !commit.is_empty() {
        // Built from that commit (`python::sdist::source`), never from a wheel of the same
        // version found elsewhere.
        return Ok(Pick {
            name: p.name.clone(),
            version: p.version.clone(),
            filename: String::new(),
            sha256: String::new(),
            origin: Origin::Source(SourceRef::Git {
                url: url.to_string(),
                commit: commit.to_string(),
                subdirectory: subdirectory.clone(),
            }),
        });
    }
    let seen = if ignored.is_empty() {
        String::new()
    } else {
        format!(
            "; not used from find_links, as nothing shows it is that commit: {}",
            ignored.join(", ")
        )
    };
    Err(format!(
        "{} {} is locked to git commit {commit} of {url} in {lock}; a wheel of the same name and version from an index or find_links may be other code, so only a wheel built from that commit counts{seen}. the lock names no commit, so imgbuild cannot build it (`uv lock` records one): build a wheel from that commit for CPython {} on {} {}, with its origin recorded in `{}-{}.dist-info/direct_url.json` (PEP 610: `{{\"url\": \"{url}\", \"vcs_info\": {{\"vcs\": \"git\", \"commit_id\": \"{commit}\"}}}}`, listed in its RECORD), put it in a directory and set `find_links` to it; or leave the package out with `exclude = [\"{}\"]`",
        p.name,
        p.version,
        target.minor_version(),
        target.libc,
        target.arch,
        super::filename::dist_info_name(&p.name),
        p.version,
        p.name
    ))
}

/// Explains a package without a usable wheel: what exists, what the target takes, what to do.
pub fn no_wheel(
    p: &Package,
    lock: &str,
    files: &[String],
    sdist: Option<&str>,
    other: Option<&Other>,
    target: &Target,
) -> String {
    let what = format!("{} {}", p.name, p.version);
    if let Some(Other::Local { path, .. }) = other {
        let o = other.unwrap();
        return format!("{what} comes from {o} in {lock}: imgbuild builds only `editable` and `directory` sources of the project; build its wheel (e.g. `uv build --wheel {path} -o wheels/`) and set `find_links = \"wheels\"` in the layer's `python` table, or leave it out (`install_project = false`, `install_workspace = false` or `exclude = [\"{}\"]`)", p.name);
    }
    let todo = format!(
        "build a wheel for the target (e.g. `pip wheel --no-deps {}=={} -w wheels/` with CPython {} on {} {}) into a directory and set `find_links = \"wheels\"` in the layer's `python` table",
        p.name, p.version, target.minor_version(), target.libc, target.arch
    );
    if let Some(o) = other {
        return format!("{what} comes from {o} in {lock}; imgbuild installs wheels only and never builds: {todo}");
    }
    if files.is_empty() {
        let s = sdist.map(|s| format!(" ({s})")).unwrap_or_default();
        return format!("{what} has only a source distribution{s} in {lock}, no wheel; imgbuild installs wheels only and never builds: {todo}");
    }
    let mut shown: Vec<&str> = files.iter().map(|s| s.as_str()).take(6).collect();
    if files.len() > 6 {
        shown.push("…");
    }
    format!(
        "{what} has no wheel for the target ({}): {lock} has {}; the target accepts {}; {todo}",
        target.describe(),
        shown.join(", "),
        target.tags().describe()
    )
}

/// The pick of a package built from its sdist `s` (which must be hash-pinned and locatable).
pub fn sdist_pick(p: &Package, s: &WheelRef, lock: &str) -> Result<Pick, String> {
    let Some(sha) = &s.sha256 else {
        return Err(format!(
            "{} {}: {lock} gives no sha256 for its sdist {}; imgbuild builds only hash-pinned sdists",
            p.name, p.version, s.filename
        ));
    };
    if s.url.is_none() && s.path.is_none() {
        return Err(format!(
            "{} {}: {lock} names neither a URL nor a path for its sdist {}",
            p.name, p.version, s.filename
        ));
    }
    Ok(Pick {
        name: p.name.clone(),
        version: p.version.clone(),
        filename: s.filename.clone(),
        sha256: sha.clone(),
        origin: Origin::Sdist(s.clone()),
    })
}

/// Chooses a wheel for every package; all packages without one are reported together.
/// A local file the lock gives no hash for is refused (see `select_with`).
pub fn select(
    locked: &Locked,
    target: &Target,
    local: &[LocalWheel],
    lock: &str,
) -> Result<Vec<Pick>> {
    select_with(locked, target, local, lock, &|_| Ok(None))
}

/// What `select_with` asks of a local file the lock names without a hash: its sha256 (hex,
/// pinned by the caller), `None` to refuse it, or an error to report.
pub type HashLocal<'a> = dyn Fn(&Path) -> Result<Option<String>, String> + 'a;

/// `select`, with local files without a lock hash hashed (and pinned) by `hash_local`.
pub fn select_with(
    locked: &Locked,
    target: &Target,
    local: &[LocalWheel],
    lock: &str,
    hash_local: &HashLocal,
) -> Result<Vec<Pick>> {
    let tags = target.tags();
    let mut picks = Vec::new();
    let mut problems = Vec::new();
    for p in &locked.packages {
        match &p.artifacts {
            Artifacts::Files {
                wheels,
                sdist,
                other,
            } => {
                let best = wheels
                    .iter()
                    .filter_map(|w| Some((tags.best(&WheelName::parse(&w.filename)?.tags)?, w)))
                    .min_by_key(|(r, _)| *r)
                    .map(|(_, w)| w);
                if let Some(Other::Git {
                    url,
                    commit,
                    subdirectory,
                }) = other
                {
                    match git_pick(p, (url, commit, subdirectory), local, &tags, lock, target) {
                        Ok(pick) => picks.push(pick),
                        Err(e) => problems.push(e),
                    }
                    continue;
                }
                if let Some(Other::Local { kind, path }) = other {
                    if kind == "editable" || kind == "directory" {
                        picks.push(Pick {
                            name: p.name.clone(),
                            version: p.version.clone(),
                            filename: String::new(),
                            sha256: String::new(),
                            origin: Origin::Source(SourceRef::Dir(PathBuf::from(path))),
                        });
                        continue;
                    }
                }
                if let Some(w) = best {
                    let pinned = match (&w.sha256, &w.path) {
                        (Some(s), _) => Some(s.clone()),
                        (None, Some(path)) => match hash_local(path) {
                            Ok(s) => s,
                            Err(e) => {
                                problems.push(format!("{} {}: {e}", p.name, p.version));
                                continue;
                            }
                        },
                        (None, None) => None,
                    };
                    let Some(sha) = &pinned else {
                        problems.push(format!("{} {}: {lock} gives no sha256 for {}; imgbuild installs only hash-pinned files (local files are hashed and pinned in imgbuild.lock, remote ones never)", p.name, p.version, w.filename));
                        continue;
                    };
                    picks.push(Pick {
                        name: p.name.clone(),
                        version: p.version.clone(),
                        filename: w.filename.clone(),
                        sha256: sha.clone(),
                        origin: Origin::Lock {
                            url: w.url.clone(),
                            path: w.path.clone(),
                        },
                    });
                } else if let Some(l) = best_local(p, local, &tags) {
                    picks.push(Pick {
                        name: p.name.clone(),
                        version: p.version.clone(),
                        filename: l.filename.clone(),
                        sha256: l.sha256.clone(),
                        origin: Origin::Local(l.path.clone()),
                    });
                } else if let (Some(s), None) = (sdist, other) {
                    match sdist_pick(p, s, lock) {
                        Ok(pick) => picks.push(pick),
                        Err(e) => problems.push(e),
                    }
                } else {
                    let names: Vec<String> = wheels.iter().map(|w| w.filename.clone()).collect();
                    problems.push(no_wheel(
                        p,
                        lock,
                        &names,
                        sdist.as_ref().map(|s| s.filename.as_str()),
                        other.as_ref(),
                        target,
                    ));
                }
            }
            Artifacts::Hashes(hashes) => {
                // A find_links wheel with a locked hash counts only when it installs on the
                // target: an x86_64 wheel is not an arm64 image's, whatever its hash.
                let exact = local.iter().find(|l| {
                    hashes.contains(&l.sha256)
                        && WheelName::parse(&l.filename)
                            .is_some_and(|w| tags.best(&w.tags).is_some())
                });
                let (filename, sha256, origin) = match exact {
                    Some(l) => (
                        l.filename.clone(),
                        l.sha256.clone(),
                        Origin::Local(l.path.clone()),
                    ),
                    None => (
                        String::new(),
                        String::new(),
                        Origin::Index {
                            hashes: hashes.clone(),
                            fallback: best_local(p, local, &tags).cloned(),
                        },
                    ),
                };
                picks.push(Pick {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    filename,
                    sha256,
                    origin,
                });
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} package{} without a usable wheel for {}:\n    {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            target.describe(),
            problems.join("\n    ")
        );
    }
    Ok(picks)
}

/// Resolves the directory of a `find_links` entry written relative to `base`.
pub fn find_links_dir(base: &Path, entry: &str) -> Result<PathBuf> {
    if entry.contains("://") {
        return Err(crate::usage!(
            "find_links `{entry}`: only a local directory of wheels is supported"
        ));
    }
    Ok(base.join(entry))
}

#[cfg(test)]
mod tests;
