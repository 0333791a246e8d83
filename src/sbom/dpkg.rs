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
}
