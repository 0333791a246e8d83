//! What a Python lock says each package depends on, for the SBOM's `DEPENDS_ON`: uv.lock's
//! `[[package]]` `dependencies` (and the `optional-dependencies` of the extras some package
//! asks for), PEP 751 pylock.toml's `[[packages]]` `dependencies`. A requirements file states
//! no edges. Markers are not evaluated here: the SBOM relates only distributions the image
//! holds, so a dependency a marker left out has nothing to point at.

use super::normalize;
use std::collections::{BTreeMap, BTreeSet};

/// (normalised name, version) → the normalised names it depends on. Empty for text that is
/// not a TOML lock with package tables.
pub fn dependencies(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut out = BTreeMap::new();
    let Ok(doc) = text.parse::<toml::Table>() else {
        return out;
    };
    let Some(pkgs) = doc
        .get("package")
        .or_else(|| doc.get("packages"))
        .and_then(|v| v.as_array())
    else {
        return out;
    };
    let names_of = |v: Option<&toml::Value>| -> Vec<(String, Vec<String>)> {
        v.and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let t = d.as_table()?;
                let n = normalize(t.get("name")?.as_str()?);
                let extras = t
                    .get("extra")
                    .and_then(|e| e.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str().map(normalize))
                    .collect();
                Some((n, extras))
            })
            .collect()
    };
    // The extras any package asks of another.
    let mut asked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in pkgs.iter().filter_map(|p| p.as_table()) {
        let mut all = names_of(p.get("dependencies"));
        if let Some(opt) = p.get("optional-dependencies").and_then(|o| o.as_table()) {
            for v in opt.values() {
                all.extend(names_of(Some(v)));
            }
        }
        for (n, extras) in all {
            asked.entry(n).or_default().extend(extras);
        }
    }
    for p in pkgs.iter().filter_map(|p| p.as_table()) {
        let (Some(name), Some(version)) = (
            p.get("name").and_then(|v| v.as_str()),
            p.get("version").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        let name = normalize(name);
        let mut deps: Vec<String> = names_of(p.get("dependencies"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if let Some(opt) = p.get("optional-dependencies").and_then(|o| o.as_table()) {
            for (extra, v) in opt {
                if asked
                    .get(&name)
                    .is_some_and(|a| a.contains(&normalize(extra)))
                {
                    deps.extend(names_of(Some(v)).into_iter().map(|(n, _)| n));
                }
            }
        }
        deps.sort();
        deps.dedup();
        deps.retain(|d| *d != name);
        out.insert((name, version.to_string()), deps);
    }
    out
}

/// The dependencies of `name` `version` in `deps` (any version of the name when the lock
/// does not list that one: a source-built package's version may be dynamic in the lock).
pub fn of(
    deps: &BTreeMap<(String, String), Vec<String>>,
    name: &str,
    version: &str,
) -> Vec<String> {
    let n = normalize(name);
    deps.get(&(n.clone(), version.to_string()))
        .or_else(|| deps.iter().find(|((k, _), _)| *k == n).map(|(_, v)| v))
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uv_lock_dependencies_and_the_extras_asked_for() {
        let lock = r#"
version = 1
[[package]]
name = "app"
version = "0.1.0"
source = { editable = "." }
dependencies = [{ name = "uvicorn", extra = ["standard"] }, { name = "Alembic" }]

[[package]]
name = "alembic"
version = "1.13.1"
dependencies = [{ name = "mako" }, { name = "sqlalchemy" }, { name = "tomli", marker = "python_full_version < '3.11'" }]

[[package]]
name = "uvicorn"
version = "0.30.0"
dependencies = [{ name = "click" }]
[package.optional-dependencies]
standard = [{ name = "httptools" }]
other = [{ name = "never" }]
"#;
        let d = dependencies(lock);
        assert_eq!(d[&("app".into(), "0.1.0".into())], ["alembic", "uvicorn"]);
        assert_eq!(
            d[&("alembic".into(), "1.13.1".into())],
            ["mako", "sqlalchemy", "tomli"]
        );
        assert_eq!(
            d[&("uvicorn".into(), "0.30.0".into())],
            ["click", "httptools"]
        );
        assert_eq!(of(&d, "Alembic", "9.9"), ["mako", "sqlalchemy", "tomli"]);
    }

    #[test]
    fn pylock_dependencies() {
        let lock = "lock-version = \"1.0\"\n[[packages]]\nname = \"alpha\"\nversion = \"1.0\"\ndependencies = [{ name = \"beta\" }]\n[[packages]]\nname = \"beta\"\nversion = \"2.0\"\n";
        let d = dependencies(lock);
        assert_eq!(d[&("alpha".into(), "1.0".into())], ["beta"]);
        assert!(d[&("beta".into(), "2.0".into())].is_empty());
        assert!(dependencies("alembic==1.0 --hash=sha256:ab\n").is_empty());
    }
}
