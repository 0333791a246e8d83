//! The npm packages of a files layer, as the lock npm wrote states them (lockfileVersion 2
//! and 3: the `packages` map keyed by `node_modules/…` paths): name, version, the tarball's
//! `integrity` (sha512, sha1) as checksums, the license, where it came from (said without the
//! registry's host or any credentials) and `DEPENDS_ON` resolved the way Node resolves a
//! `require`: the nearest `node_modules` up the tree.
//!
//! Which packages are in the image: all entries of `node_modules/.package-lock.json` (npm's
//! record of what that `node_modules` holds); of a `package-lock.json` or
//! `npm-shrinkwrap.json`, what `npm ci --omit=dev` installs for the target platform: no
//! `dev` entry, no optional entry whose `os`/`cpu` excludes the target.

use super::{Ecosystem, Input, Package, Supply};
use crate::image::Platform;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The lock a shipped `node_modules` directory carries.
pub const HIDDEN_LOCK: &str = "node_modules/.package-lock.json";
/// The locks of a package directory, in the order npm reads them.
pub const LOCKS: [&str; 2] = ["npm-shrinkwrap.json", "package-lock.json"];

/// The lock files that say what a directory `dir` installs: its `node_modules`' own record
/// when it ships one (`true`: every entry is installed; `dir` may be that `node_modules`),
/// else its lock (`false`: the production set).
pub fn lock_of(dir: &Path) -> Option<(std::path::PathBuf, bool)> {
    if dir.file_name().is_some_and(|n| n == "node_modules") {
        let own = dir.join(".package-lock.json");
        return own.is_file().then_some((own, true));
    }
    let hidden = dir.join(HIDDEN_LOCK);
    if hidden.is_file() {
        return Some((hidden, true));
    }
    LOCKS
        .iter()
        .map(|l| dir.join(l))
        .find(|p| p.is_file())
        .map(|p| (p, false))
}

/// npm's name of an OCI architecture (`process.arch`).
fn npm_cpu(arch: &str) -> &str {
    match arch {
        "amd64" => "x64",
        "386" => "ia32",
        "ppc64le" => "ppc64",
        other => other,
    }
}

/// Whether an `os`/`cpu` list of a lock entry admits `value` (npm's `checkPlatform`: `!x`
/// excludes x; any positive entry must match).
fn admits(list: Option<&Value>, value: &str) -> bool {
    let Some(items) = list.and_then(Value::as_array) else {
        return true;
    };
    let items: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
    if items.iter().any(|i| i.strip_prefix('!') == Some(value)) {
        return false;
    }
    let positive: Vec<&&str> = items.iter().filter(|i| !i.starts_with('!')).collect();
    positive.is_empty() || positive.iter().any(|i| **i == value || **i == "any")
}

/// An `integrity` string (SRI: `sha512-BASE64`, several separated by spaces) as
/// algorithm → hex digest.
pub fn integrity(sri: &str) -> BTreeMap<String, String> {
    use base64::Engine;
    let mut out = BTreeMap::new();
    for part in sri.split_whitespace() {
        let Some((alg, b64)) = part.split_once('-') else {
            continue;
        };
        let b64 = b64.split('?').next().unwrap_or(b64);
        let alg = alg.to_ascii_lowercase();
        if !matches!(alg.as_str(), "sha512" | "sha384" | "sha256" | "sha1") {
            continue;
        }
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.insert(alg, hex::encode(bytes));
        }
    }
    out
}

/// Where a `resolved` value says a package came from, without hosts or credentials.
fn origin(resolved: Option<&str>) -> String {
    match resolved {
        None => "from the package registry the lock was made with".into(),
        Some(r) if r.starts_with("git+") || r.starts_with("git:") || r.starts_with("github:") => {
            match r.rsplit_once('#') {
                Some((_, commit)) => format!("git commit {commit} (as the lock resolves it)"),
                None => "a git repository".into(),
            }
        }
        Some(r) if r.starts_with("file:") => {
            format!(
                "a local path in the lock ({})",
                r.trim_start_matches("file:")
            )
        }
        Some(r) if r.starts_with("http://") || r.starts_with("https://") => {
            let file = r.rsplit('/').next().unwrap_or("");
            format!("tarball {file} from a package registry")
        }
        Some(_) => "a source the lock names".into(),
    }
}

/// The package name a `packages` key installs (`node_modules/@scope/name` → `@scope/name`).
fn folder_name(key: &str) -> Option<&str> {
    let i = key.rfind("node_modules/")?;
    Some(&key[i + "node_modules/".len()..]).filter(|n| !n.is_empty())
}

/// Where `dep`, required from the package at `key`, is installed: the nearest
/// `node_modules/dep` up the tree (`a/node_modules/b` looks in `a/node_modules/b/node_modules`,
/// `a/node_modules`, then the top).
fn resolve<'a>(
    key: &str,
    dep: &str,
    have: &'a BTreeMap<String, (String, String)>,
) -> Option<&'a (String, String)> {
    let mut at = key.to_string();
    loop {
        let cand = if at.is_empty() {
            format!("node_modules/{dep}")
        } else {
            format!("{at}/node_modules/{dep}")
        };
        if let Some(p) = have.get(&cand) {
            return Some(p);
        }
        if at.is_empty() {
            return None;
        }
        // Up one package: drop the last `node_modules/NAME` (a scoped name has two parts).
        at = match at.rfind("node_modules/") {
            Some(0) => String::new(),
            Some(i) => at[..i].trim_end_matches('/').to_string(),
            None => String::new(),
        };
    }
}

/// The packages a lock's text says are installed (`all`: every entry, else the production
/// set for `platform`). `what` names the file in errors.
pub fn packages(
    text: &[u8],
    what: &str,
    all: bool,
    platform: &Platform,
) -> Result<Vec<Package>, String> {
    let v: Value = serde_json::from_slice(text).map_err(|e| format!("{what} is not JSON: {e}"))?;
    let version = v.get("lockfileVersion").and_then(Value::as_u64);
    let Some(map) = v.get("packages").and_then(Value::as_object) else {
        return Err(match version {
            Some(1) => format!(
                "{what} is lockfileVersion 1, which has no `packages` map: rewrite it with npm 7 or later (`npm install --package-lock-only`)"
            ),
            _ => format!("{what} has no `packages` map (lockfileVersion 2 or 3 has one): rewrite it with `npm install --package-lock-only`"),
        });
    };
    let cpu = npm_cpu(&platform.architecture);
    // key → (name, version) of every entry installed.
    let mut have: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut kept: Vec<(&String, &Value)> = Vec::new();
    for (key, e) in map {
        let Some(folder) = folder_name(key) else {
            continue; // the root project, a workspace member's directory
        };
        if e.get("link").and_then(Value::as_bool) == Some(true) {
            continue; // a symlink to a workspace member: not a registry package
        }
        let flag = |f: &str| e.get(f).and_then(Value::as_bool) == Some(true);
        if !all {
            if flag("dev") {
                continue;
            }
            if !admits(e.get("os"), &platform.os) || !admits(e.get("cpu"), cpu) {
                continue;
            }
        }
        let name = e
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(folder)
            .to_string();
        let Some(ver) = e.get("version").and_then(Value::as_str) else {
            return Err(format!("{what}: `packages.\"{key}\"` has no version: run `npm install` to complete the lock"));
        };
        have.insert(key.clone(), (name, ver.to_string()));
        kept.push((key, e));
    }
    let mut out: Vec<Package> = Vec::new();
    for (key, e) in kept {
        let (name, version) = have[key].clone();
        let mut depends_on = Vec::new();
        for field in ["dependencies", "optionalDependencies", "peerDependencies"] {
            for dep in e
                .get(field)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                if let Some((n, v)) = resolve(key, dep, &have) {
                    let d = format!("{n}@{v}");
                    if !depends_on.contains(&d) {
                        depends_on.push(d);
                    }
                }
            }
        }
        depends_on.sort();
        let digests = e
            .get("integrity")
            .and_then(Value::as_str)
            .map(integrity)
            .unwrap_or_default();
        let license = e
            .get("license")
            .and_then(Value::as_str)
            .filter(|l| super::plausible_expression(l))
            .map(String::from);
        let p = Package {
            ecosystem: Ecosystem::Npm,
            name,
            version,
            arch: None,
            sha256: digests.get("sha256").cloned(),
            digests,
            source: Some(origin(e.get("resolved").and_then(Value::as_str))),
            license,
            depends_on,
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(out)
}

/// The report of a layer whose npm packages the lock `lock` (shown as `rel`) states.
pub fn supply(lock: &Path, rel: &str, all: bool, platform: &Platform) -> anyhow::Result<Supply> {
    let text = std::fs::read(lock)
        .map_err(|e| crate::usage!("reading the npm lock {}: {e}", lock.display()))?;
    let packages = packages(&text, rel, all, platform).map_err(|m| {
        use crate::error::Hint;
        crate::usage!("{m}").hint(
            "the SBOM lists the frontend's npm packages from it; fix the lock, or set `sbom = false` and `provenance = false` for the image",
        )
    })?;
    let mut s = Supply::default();
    let mut d = BTreeMap::new();
    d.insert(
        "sha256".into(),
        crate::digest::Digest::of(&text).hex().to_string(),
    );
    s.inputs.push(Input {
        uri: format!("file:{rel}"),
        digest: d,
    });
    for p in &packages {
        if !p.digests.is_empty() {
            s.inputs.push(Input {
                uri: purl(&p.name, &p.version),
                digest: p.digests.clone(),
            });
        }
    }
    s.packages = packages;
    Ok(s)
}

/// `pkg:npm/[%40SCOPE/]NAME@VERSION`.
pub fn purl(name: &str, version: &str) -> String {
    format!(
        "pkg:npm/{}@{}",
        name.split('/')
            .map(super::purl_encode)
            .collect::<Vec<_>>()
            .join("/"),
        super::purl_encode(version)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux_amd64() -> Platform {
        Platform::parse_named("linux/amd64", "test").unwrap()
    }

    const LOCK: &str = r#"{
  "name": "web", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
  "packages": {
    "": { "name": "web", "version": "1.0.0", "dependencies": { "debug": "^4" } },
    "node_modules/debug": { "version": "4.3.4", "resolved": "https://r.example/debug/-/debug-4.3.4.tgz",
      "integrity": "sha512-PRWFHuSU3eDtQJPvnNY7Jcket1j0t5OuOsFzPPzsekD52Zl8qUfFIPEiswXqIvHWGVHOgX+7G/vCNNhehwxfkQ==",
      "license": "MIT", "dependencies": { "ms": "2.1.2" } },
    "node_modules/debug/node_modules/ms": { "version": "2.1.2", "integrity": "sha1-0J0fNXtEP0kzgqjrPM0YOHKuYAk=", "license": "MIT" },
    "node_modules/ms": { "version": "2.1.3", "license": "MIT" },
    "node_modules/@scope/x": { "version": "1.0.0", "license": "Apache 2.0", "dependencies": { "ms": "*" } },
    "node_modules/left-pad": { "version": "1.3.0", "dev": true },
    "node_modules/darwin-only": { "version": "1.0.0", "optional": true, "os": ["darwin"] },
    "node_modules/arm-only": { "version": "1.0.0", "optional": true, "cpu": ["arm64"] },
    "node_modules/not-win": { "version": "1.0.0", "optional": true, "os": ["!win32"], "cpu": ["x64"] },
    "node_modules/alias": { "name": "real-name", "version": "2.0.0" },
    "node_modules/ws-member": { "resolved": "packages/member", "link": true }
  }
}"#;

    #[test]
    fn the_production_set_with_nearest_node_modules_dependencies() {
        let got = packages(LOCK.as_bytes(), "package-lock.json", false, &linux_amd64()).unwrap();
        let ids: Vec<String> = got
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect();
        assert_eq!(
            ids,
            [
                "@scope/x@1.0.0",
                "debug@4.3.4",
                "ms@2.1.2",
                "ms@2.1.3",
                "not-win@1.0.0",
                "real-name@2.0.0"
            ]
        );
        let debug = &got[1];
        // debug's own node_modules/ms, not the top one.
        assert_eq!(debug.depends_on, ["ms@2.1.2"]);
        assert_eq!(got[0].depends_on, ["ms@2.1.3"]);
        assert_eq!(debug.license.as_deref(), Some("MIT"));
        assert_eq!(
            got[0].license, None,
            "`Apache 2.0` is not an SPDX expression"
        );
        assert_eq!(debug.digests["sha512"].len(), 128);
        assert_eq!(
            got[2].digests["sha1"],
            "d09d1f357b443f493382a8eb3ccd183872ae6009"
        );
        assert_eq!(
            debug.source.as_deref(),
            Some("tarball debug-4.3.4.tgz from a package registry")
        );
        // Every entry when the lock is node_modules' own record.
        let all = packages(LOCK.as_bytes(), HIDDEN_LOCK, true, &linux_amd64()).unwrap();
        assert_eq!(all.len(), 9);
    }

    #[test]
    fn platform_lists_follow_npm() {
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert!(admits(None, "linux"));
        assert!(admits(Some(&v(r#"["linux","darwin"]"#)), "linux"));
        assert!(!admits(Some(&v(r#"["darwin"]"#)), "linux"));
        assert!(admits(Some(&v(r#"["!win32"]"#)), "linux"));
        assert!(!admits(Some(&v(r#"["!linux"]"#)), "linux"));
        let arm = Platform::parse_named("linux/arm64", "t").unwrap();
        let got = packages(LOCK.as_bytes(), "l", false, &arm).unwrap();
        assert!(got.iter().any(|p| p.name == "arm-only"));
        assert!(!got.iter().any(|p| p.name == "not-win"));
    }

    #[test]
    fn an_old_or_broken_lock_says_what_to_do() {
        let e = packages(
            br#"{"lockfileVersion": 1, "dependencies": {}}"#,
            "frontend/package-lock.json",
            false,
            &linux_amd64(),
        )
        .unwrap_err();
        assert!(
            e.contains("frontend/package-lock.json is lockfileVersion 1"),
            "{e}"
        );
        assert!(e.contains("npm install --package-lock-only"), "{e}");
        let e = packages(b"{", "p.json", false, &linux_amd64()).unwrap_err();
        assert!(e.starts_with("p.json is not JSON"), "{e}");
        let e = packages(
            br#"{"lockfileVersion":3,"packages":{"node_modules/a":{}}}"#,
            "p.json",
            false,
            &linux_amd64(),
        )
        .unwrap_err();
        assert!(
            e.contains("`packages.\"node_modules/a\"` has no version"),
            "{e}"
        );
    }

    #[test]
    fn purls_of_scoped_packages() {
        assert_eq!(
            purl("@types/node", "20.1.0"),
            "pkg:npm/%40types/node@20.1.0"
        );
        assert_eq!(purl("ms", "2.1.3"), "pkg:npm/ms@2.1.3");
    }
}
