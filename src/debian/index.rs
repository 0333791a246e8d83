//! A `Packages` index (the archive's list of binary packages of one suite, component and
//! architecture) and dpkg's `status` database, read into what resolving needs: each
//! package's version, file, sha256, size, `Depends`/`Pre-Depends`, `Provides`, `Essential`
//! and `Priority`.

use super::control::{self, Atom, Clause, Paragraph};
use std::collections::BTreeMap;

/// One binary package of an index (or of dpkg's status database: no file then).
#[derive(Clone, Debug, PartialEq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    pub depends: Vec<Clause>,
    pub pre_depends: Vec<Clause>,
    pub provides: Vec<Atom>,
    pub essential: bool,
    pub priority: String,
}

impl Package {
    /// Reads one paragraph; `None` for a paragraph without `Package`/`Version`.
    pub fn from_paragraph(p: &Paragraph) -> Result<Option<Package>, String> {
        let (Some(name), Some(version)) = (p.get("Package"), p.get("Version")) else {
            return Ok(None);
        };
        let rel = |f: &str| {
            p.get(f)
                .map(control::relations)
                .transpose()
                .map(|v| v.unwrap_or_default())
                .map_err(|e| format!("package {name}: {f}: {e}"))
        };
        Ok(Some(Package {
            name: name.to_string(),
            version: version.to_string(),
            architecture: p.get("Architecture").unwrap_or("").to_string(),
            filename: p.get("Filename").unwrap_or("").to_string(),
            sha256: p.get("SHA256").unwrap_or("").to_string(),
            size: p.get("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
            depends: rel("Depends")?,
            pre_depends: rel("Pre-Depends")?,
            provides: rel("Provides")?.into_iter().flatten().collect(),
            essential: p.get("Essential") == Some("yes"),
            priority: p.get("Priority").unwrap_or("").to_string(),
        }))
    }

    /// `name version (arch)`.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.version)
    }
}

/// Packages by name, and the virtual names they provide.
#[derive(Clone, Debug, Default)]
pub struct Index {
    pub by_name: BTreeMap<String, Vec<Package>>,
    /// Virtual (or real) name → (providing package, the version it provides, if any).
    pub providers: BTreeMap<String, Vec<(String, Option<String>)>>,
}

impl Index {
    /// Parses a `Packages` file, keeping the packages of `arch` and `all`.
    pub fn parse(text: &str, arch: &str) -> Result<Index, String> {
        let mut ix = Index::default();
        for p in control::parse(text)? {
            if let Some(pkg) = Package::from_paragraph(&p)? {
                if pkg.architecture == arch || pkg.architecture == "all" {
                    ix.add(pkg);
                }
            }
        }
        Ok(ix)
    }

    pub fn add(&mut self, pkg: Package) {
        for a in &pkg.provides {
            self.providers
                .entry(a.name.clone())
                .or_default()
                .push((pkg.name.clone(), a.version.as_ref().map(|(_, v)| v.clone())));
        }
        let v = self.by_name.entry(pkg.name.clone()).or_default();
        v.push(pkg);
        // Newest first: the resolver takes the first candidate that fits.
        v.sort_by(|a, b| super::version::compare(&b.version, &a.version));
    }

    /// The newest version of `name`.
    pub fn newest(&self, name: &str) -> Option<&Package> {
        self.by_name.get(name).and_then(|v| v.first())
    }

    /// Up to `n` package names closest to `word` (a typo, or a name without its soname
    /// suffix such as `libpq` for `libpq5`).
    pub fn closest(&self, word: &str, n: usize) -> Vec<String> {
        let mut scored: Vec<(usize, &String)> = self
            .by_name
            .keys()
            .map(|k| {
                let d = strsim::damerau_levenshtein(word, k);
                // A name that extends the word (`libpq` → `libpq5`, `libpq-dev`) is close.
                let d = if k.starts_with(word) {
                    d.min(1 + k.len() - word.len()) / 2
                } else {
                    d
                };
                (d, k)
            })
            .filter(|(d, _)| *d <= 3.max(word.len() / 3))
            .collect();
        scored.sort();
        scored.into_iter().take(n).map(|(_, k)| k.clone()).collect()
    }
}

/// The packages dpkg's `status` file says are installed (`Status: install ok installed`).
pub fn installed(status: &str) -> Result<Vec<Package>, String> {
    let mut out = Vec::new();
    for p in control::parse(status)? {
        let st = p.get("Status").unwrap_or("");
        if !st.ends_with(" installed") || st.split_whitespace().next() == Some("purge") {
            continue;
        }
        if let Some(pkg) = Package::from_paragraph(&p)? {
            out.push(pkg);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGES: &str = "Package: libpq5\nSource: postgresql-15\nVersion: 15.8-0+deb12u1\nArchitecture: amd64\nDepends: libc6 (>= 2.34), libgssapi-krb5-2 (>= 1.17)\nFilename: pool/main/p/postgresql-15/libpq5_15.8-0+deb12u1_amd64.deb\nSize: 190000\nSHA256: ab\nPriority: optional\n\nPackage: libpq5\nVersion: 15.6-0+deb12u1\nArchitecture: amd64\n\nPackage: mawk\nVersion: 1.3.4.20200120-3.1\nArchitecture: arm64\nProvides: awk\n\nPackage: mawk\nVersion: 1.3.4.20200120-3.1\nArchitecture: amd64\nProvides: awk\nEssential: no\nPriority: required\n";

    #[test]
    fn keeps_the_architecture_sorts_versions_and_knows_providers() {
        let ix = Index::parse(PACKAGES, "amd64").unwrap();
        assert_eq!(ix.by_name["libpq5"].len(), 2);
        assert_eq!(ix.newest("libpq5").unwrap().version, "15.8-0+deb12u1");
        assert_eq!(ix.newest("libpq5").unwrap().size, 190000);
        assert_eq!(ix.by_name["mawk"].len(), 1);
        assert_eq!(ix.providers["awk"], vec![("mawk".to_string(), None)]);
        assert_eq!(ix.closest("libpq", 3), vec!["libpq5".to_string()]);
    }

    #[test]
    fn reads_what_the_status_database_says_is_installed() {
        let st = "Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\n";
        let v = installed(st).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "a");
    }
}
