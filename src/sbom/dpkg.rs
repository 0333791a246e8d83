//! The dpkg status database (`/var/lib/dpkg/status`, deb822 paragraphs): the packages it
//! says are installed.

/// One installed package.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The source package, when it differs from the binary's name (`Source:`, version dropped).
    pub source: Option<String>,
    /// `Pre-Depends` and `Depends`: groups of alternatives, package names only.
    pub depends: Vec<Vec<String>>,
    /// The virtual packages it `Provides`.
    pub provides: Vec<String>,
}

/// The names of a relationship field (`a (>= 1) | b:any, c`): groups of alternatives.
fn relations(field: Option<&String>) -> Vec<Vec<String>> {
    field
        .map(|f| {
            f.split(',')
                .map(|group| {
                    group
                        .split('|')
                        .filter_map(|alt| {
                            let n = alt.split_whitespace().next()?;
                            let n = n.split('(').next().unwrap_or(n);
                            let n = n.split(':').next().unwrap_or(n);
                            (!n.is_empty()).then(|| n.to_string())
                        })
                        .collect::<Vec<_>>()
                })
                .filter(|g| !g.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `DEPENDS_ON` edges between `installed` (indices): each dependency group to the first
/// alternative installed, by name or by a package that provides it; sorted, no self edges.
pub fn dependencies(installed: &[Installed]) -> Vec<(usize, usize)> {
    let mut by_name: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (i, p) in installed.iter().enumerate() {
        by_name.entry(p.name.as_str()).or_insert(i);
    }
    for (i, p) in installed.iter().enumerate() {
        for v in &p.provides {
            by_name.entry(v.as_str()).or_insert(i);
        }
    }
    let mut out = Vec::new();
    for (i, p) in installed.iter().enumerate() {
        for group in &p.depends {
            if let Some(&to) = group.iter().find_map(|alt| by_name.get(alt.as_str())) {
                if to != i && !out.contains(&(i, to)) {
                    out.push((i, to));
                }
            }
        }
    }
    out.sort();
    out
}

/// The packages whose `Status` is `install ok installed`, sorted by name and architecture.
pub fn installed(status: &str) -> Vec<Installed> {
    let mut out = Vec::new();
    for para in status.split("\n\n") {
        let mut f = std::collections::BTreeMap::new();
        for line in para.lines() {
            if line.starts_with([' ', '\t']) {
                continue; // a continuation line (Description, Conffiles)
            }
            if let Some((k, v)) = line.split_once(':') {
                f.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let installed = f
            .get("status")
            .is_some_and(|s| s.split_whitespace().last() == Some("installed"));
        if let (true, Some(name), Some(version)) = (installed, f.get("package"), f.get("version")) {
            out.push(Installed {
                name: name.clone(),
                version: version.clone(),
                arch: f
                    .get("architecture")
                    .cloned()
                    .unwrap_or_else(|| "all".into()),
                source: f
                    .get("source")
                    .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
                    .filter(|s| !s.is_empty() && s != name),
                depends: relations(f.get("pre-depends"))
                    .into_iter()
                    .chain(relations(f.get("depends")))
                    .collect(),
                provides: relations(f.get("provides")).into_iter().flatten().collect(),
            });
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_packages_are_listed() {
        let s = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc (2.36-9)\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library\n Contains the standard libraries.\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n";
        let got = installed(s);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "base-files");
        assert_eq!(got[1].source.as_deref(), Some("glibc"));
        assert_eq!(got[1].version, "2.36-9+deb12u4");
    }

    #[test]
    fn dependencies_follow_depends_alternatives_and_provides() {
        let s = "Package: a\nStatus: install ok installed\nVersion: 1\nPre-Depends: libc6 (>= 2.36)\nDepends: missing | b:any (>= 1), mail-transport-agent, a\n\nPackage: b\nStatus: install ok installed\nVersion: 1\nProvides: mail-transport-agent\n\nPackage: libc6\nStatus: install ok installed\nVersion: 2.36\n";
        let got = installed(s);
        assert_eq!(
            got[0].depends,
            [
                vec!["libc6".to_string()],
                vec!["missing".into(), "b".into()],
                vec!["mail-transport-agent".into()],
                vec!["a".into()]
            ]
        );
        // a → libc6 (Pre-Depends), a → b (an alternative, and as the provider of the MTA).
        assert_eq!(dependencies(&got), [(0, 1), (0, 2)]);
    }
}
