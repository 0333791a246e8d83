//! Build requirements resolved to exact wheels with sha256 hashes from the index.
//!
//! This is a **simple greedy resolver**, not a backtracking one: requirements are taken in
//! order (breadth first); each name gets the newest version that satisfies the first
//! requirement naming it, the target's `Requires-Python` and has a wheel for the target's tags
//! (pre-releases only when no final release fits); a later requirement that the chosen version
//! does not satisfy is an error naming both. Dependencies come from each chosen wheel's
//! `METADATA` `Requires-Dist`, markers evaluated for the target (and the requested extras).
//! Build requirements are small trees (setuptools, hatchling, flit-core…), where this is enough;
//! the result is pinned in `imgbuild.lock`, so it runs once per sdist.

use crate::python::filename::{normalize, WheelName};
use crate::python::index::{self, IndexFile, Want};
use crate::python::markers::{self, Env};
use crate::python::target::Target;
use crate::python::version::{satisfies, Version};
use crate::registry::lock::PinnedFile;
use crate::store::Store;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;

/// A PEP 508 requirement (URL requirements are refused).
#[derive(Clone, Debug, PartialEq)]
pub struct Req {
    pub name: String,
    pub extras: BTreeSet<String>,
    /// Comma-separated specifiers, e.g. `>=40.8.0,<81` (empty: any version).
    pub spec: String,
    pub marker: Option<String>,
}

impl std::fmt::Display for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        if !self.extras.is_empty() {
            let e: Vec<&str> = self.extras.iter().map(|s| s.as_str()).collect();
            write!(f, "[{}]", e.join(","))?;
        }
        write!(f, "{}", self.spec)
    }
}

/// Parses `name[extra,…] specifiers ; marker` (specifiers optionally in parentheses).
pub fn parse_req(s: &str) -> Result<Req, String> {
    let (body, marker) = match s.split_once(';') {
        Some((b, m)) => (
            b.trim(),
            Some(m.trim().to_string()).filter(|m| !m.is_empty()),
        ),
        None => (s.trim(), None),
    };
    let end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        .unwrap_or(body.len());
    let name = &body[..end];
    if name.is_empty() {
        return Err(format!("`{s}` is not a requirement (no project name)"));
    }
    let mut rest = body[end..].trim_start();
    let mut extras = BTreeSet::new();
    if let Some(r) = rest.strip_prefix('[') {
        let close = r
            .find(']')
            .ok_or_else(|| format!("`{s}`: unclosed `[` of extras"))?;
        extras = r[..close]
            .split(',')
            .map(|e| markers::normalize(e.trim()))
            .filter(|e| !e.is_empty())
            .collect();
        rest = r[close + 1..].trim_start();
    }
    if rest.starts_with('@') {
        return Err(format!(
            "`{s}`: a URL requirement; build requirements must come from the index"
        ));
    }
    let rest = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(rest);
    let spec: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
    if !spec.is_empty() && !spec.starts_with(['<', '>', '=', '!', '~']) {
        return Err(format!("`{s}`: cannot read the version specifier `{spec}`"));
    }
    Ok(Req {
        name: name.to_string(),
        extras,
        spec,
        marker,
    })
}

/// `Requires-Dist` values of a wheel's METADATA.
pub fn requires_dist(metadata: &str) -> Vec<String> {
    let header = metadata.split("\n\n").next().unwrap_or("");
    header
        .lines()
        .filter_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("Requires-Dist"))
                .map(|(_, v)| v.trim().to_string())
        })
        .collect()
}

/// The METADATA of a wheel file.
fn wheel_metadata(path: &std::path::Path, filename: &str) -> Result<String> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path)?)
        .with_context(|| format!("wheel {filename} is not a valid zip archive"))?;
    let name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i)?.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with(".dist-info/METADATA") && n.matches('/').count() == 1)
        .ok_or_else(|| anyhow!("wheel {filename} has no .dist-info/METADATA"))?;
    let mut text = String::new();
    zip.by_name(&name)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Where the wheel of a pin is fetched from (`imgbuild.lock` pinned its hash).
pub fn want(p: &PinnedFile) -> Want {
    Want {
        filename: p.filename.clone(),
        sha256: p.sha256.clone(),
        urls: vec![p.url.clone()],
        path: None,
        pinned_by: "imgbuild.lock (python-build)".into(),
    }
}

/// The greedy resolver's state: what was chosen, with which extras already expanded.
pub struct Resolver<'a> {
    store: &'a Store,
    indexes: &'a [String],
    target: &'a Target,
    env: Env,
    client: Option<reqwest::blocking::Client>,
    /// normalised name → (pin, extras expanded, the requirement that chose it)
    chosen: BTreeMap<String, (PinnedFile, BTreeSet<String>, String)>,
}

impl<'a> Resolver<'a> {
    pub fn new(store: &'a Store, indexes: &'a [String], target: &'a Target) -> Resolver<'a> {
        Resolver {
            store,
            indexes,
            target,
            env: target.marker_env(),
            client: None,
            chosen: BTreeMap::new(),
        }
    }

    /// Everything chosen so far, by name.
    pub fn pins(&self) -> Vec<PinnedFile> {
        self.chosen.values().map(|(p, _, _)| p.clone()).collect()
    }

    fn files(&mut self, name: &str) -> Result<Vec<IndexFile>> {
        if self.client.is_none() {
            self.client = Some(crate::http::client()?);
        }
        let client = self.client.as_ref().unwrap();
        let mut errors = Vec::new();
        for i in self.indexes {
            match index::project_files(client, i, name) {
                Ok(f) => return Ok(f),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        bail!("{}", errors.join("; "))
    }

    /// The newest release of `req` with a wheel for the target.
    fn choose(&mut self, req: &Req) -> Result<PinnedFile> {
        let files = self.files(&req.name)?;
        let tags = self.target.tags();
        let py = Version::parse(&self.target.version);
        let mut by_version: BTreeMap<Version, Vec<(usize, &IndexFile, String)>> = BTreeMap::new();
        for f in &files {
            let Some(w) = WheelName::parse(&f.filename) else {
                continue;
            };
            let (Some(rank), Some(v), Some(_)) =
                (tags.best(&w.tags), Version::parse(&w.version), &f.sha256)
            else {
                continue;
            };
            if f.yanked {
                continue;
            }
            if let (Some(rp), Some(py)) = (&f.requires_python, &py) {
                if !satisfies(py, rp) {
                    continue;
                }
            }
            by_version.entry(v).or_default().push((rank, f, w.version));
        }
        let fits = |v: &Version| satisfies(v, &req.spec);
        let pick = by_version
            .iter()
            .rev()
            .find(|(v, _)| !v.is_prerelease() && fits(v))
            .or_else(|| by_version.iter().rev().find(|(v, _)| fits(v)));
        let Some((_, wheels)) = pick else {
            bail!(
                "no release of {} on {} satisfies `{req}` with a wheel for the target ({}; {} releases have such a wheel)",
                req.name,
                self.indexes.join(", "),
                self.target.describe(),
                by_version.len()
            );
        };
        let (_, f, version) = wheels.iter().min_by_key(|(r, _, _)| *r).unwrap();
        Ok(PinnedFile {
            name: normalize(&req.name),
            version: version.clone(),
            filename: f.filename.clone(),
            url: f.url.clone(),
            sha256: f.sha256.clone().unwrap_or_default(),
        })
    }

    /// Adds `roots` and everything they need; returns the pins added by this call.
    pub fn add(&mut self, roots: &[String]) -> Result<Vec<PinnedFile>> {
        let mut added = Vec::new();
        let mut todo: VecDeque<(Req, String)> = VecDeque::new();
        for r in roots {
            let req = parse_req(r).map_err(|e| anyhow!("build requirement {e}"))?;
            todo.push_back((req, "the build".into()));
        }
        while let Some((req, by)) = todo.pop_front() {
            let env = self.env.with_extras(&BTreeSet::new());
            let active = markers::evaluate(req.marker.as_deref().unwrap_or(""), &env)
                .map_err(|e| anyhow!("build requirement `{req}` (of {by}): {e}"))?;
            if !active {
                continue;
            }
            let key = normalize(&req.name);
            let (new_extras, fresh): (BTreeSet<String>, bool) = match self.chosen.get(&key) {
                Some((pin, done, chosen_by)) => {
                    let v = Version::parse(&pin.version);
                    if !v.as_ref().is_some_and(|v| satisfies(v, &req.spec)) {
                        bail!(
                            "build requirements conflict: {by} needs `{req}`, but {} {} was already chosen for {chosen_by} (imgbuild's build-requirement resolver is greedy and does not backtrack; put a wheel for the target in `find_links` instead)",
                            pin.name, pin.version
                        );
                    }
                    let n: BTreeSet<String> = req.extras.difference(done).cloned().collect();
                    if n.is_empty() {
                        continue;
                    }
                    (n, false)
                }
                None => {
                    let pin = self
                        .choose(&req)
                        .with_context(|| format!("resolving build requirement `{req}` of {by}"))?;
                    added.push(pin.clone());
                    self.chosen
                        .insert(key.clone(), (pin, BTreeSet::new(), by.clone()));
                    (req.extras.clone(), true)
                }
            };
            let pin = self.chosen[&key].0.clone();
            let path = index::ensure_file(self.store, &want(&pin))?;
            let meta = wheel_metadata(&path, &pin.filename)?;
            let extras_env = new_extras.clone();
            for dep in requires_dist(&meta) {
                let d = parse_req(&dep)
                    .map_err(|e| anyhow!("{} {}: Requires-Dist {e}", pin.name, pin.version))?;
                // Base dependencies once (when first chosen), extras' ones when asked for.
                let base =
                    markers::evaluate(d.marker.as_deref().unwrap_or(""), &env).unwrap_or(false);
                let with = markers::evaluate(
                    d.marker.as_deref().unwrap_or(""),
                    &self.env.with_extras(&extras_env),
                )
                .unwrap_or(false);
                if (fresh && base) || (with && !base) {
                    let mut d = d;
                    d.marker = None;
                    todo.push_back((d, format!("{} {}", pin.name, pin.version)));
                }
            }
            self.chosen.get_mut(&key).unwrap().1.extend(new_extras);
        }
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_parse_as_pep_508_says() {
        let r = parse_req("setuptools>=40.8.0").unwrap();
        assert_eq!(
            (r.name.as_str(), r.spec.as_str()),
            ("setuptools", ">=40.8.0")
        );
        let r = parse_req("Foo.Bar[Baz, qux] (>= 1.0, < 2) ; python_version < '3.8'").unwrap();
        assert_eq!(r.name, "Foo.Bar");
        assert_eq!(
            r.extras,
            ["baz", "qux"].iter().map(|s| s.to_string()).collect()
        );
        assert_eq!(r.spec, ">=1.0,<2");
        assert_eq!(r.marker.as_deref(), Some("python_version < '3.8'"));
        assert_eq!(parse_req("wheel").unwrap().spec, "");
        assert!(parse_req("pkg @ https://example.invalid/p.whl")
            .unwrap_err()
            .contains("URL requirement"));
        assert!(parse_req(">=1").is_err());
        assert!(parse_req("x foo").is_err());
    }

    #[test]
    fn requires_dist_reads_the_header_only() {
        let m = "Metadata-Version: 2.1\nName: a\nRequires-Dist: b>=1\nRequires-Dist: c; extra == \"t\"\n\nRequires-Dist: not-me\n";
        assert_eq!(requires_dist(m), ["b>=1", "c; extra == \"t\""]);
    }
}
