//! Distribution file names: wheels (PEP 427/491) and source distributions, and PEP 503 names.

/// A parsed wheel file name: `{dist}-{version}(-{build})?-{py}-{abi}-{plat}.whl`.
#[derive(Clone, Debug, PartialEq)]
pub struct WheelName {
    pub dist: String,
    pub version: String,
    pub build: Option<String>,
    /// The tag triple as written (compressed sets such as `py2.py3`).
    pub tag: String,
    /// Every `py-abi-plat` combination the compressed tag stands for.
    pub tags: Vec<String>,
}

impl WheelName {
    pub fn parse(filename: &str) -> Option<WheelName> {
        let stem = filename.strip_suffix(".whl")?;
        let parts: Vec<&str> = stem.split('-').collect();
        let (dist, version, build, py, abi, plat) = match parts.as_slice() {
            [d, v, p, a, pl] => (*d, *v, None, *p, *a, *pl),
            [d, v, b, p, a, pl] => (*d, *v, Some(b.to_string()), *p, *a, *pl),
            _ => return None,
        };
        if [dist, version, py, abi, plat].iter().any(|s| s.is_empty()) {
            return None;
        }
        let mut tags = Vec::new();
        for p in py.split('.') {
            for a in abi.split('.') {
                for pl in plat.split('.') {
                    tags.push(format!("{p}-{a}-{pl}"));
                }
            }
        }
        Some(WheelName {
            dist: dist.to_string(),
            version: version.to_string(),
            build,
            tag: format!("{py}-{abi}-{plat}"),
            tags,
        })
    }
}

/// PEP 503 normalised project name: lower case, runs of `-_.` become `-`.
pub fn normalize(name: &str) -> String {
    crate::python::markers::normalize(name)
}

/// The normalised name as it appears in wheel and `.dist-info` names (`-` → `_`).
pub fn dist_info_name(name: &str) -> String {
    normalize(name).replace('-', "_")
}

/// Whether a file name looks like a source distribution.
pub fn is_sdist(filename: &str) -> bool {
    [".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar"]
        .iter()
        .any(|e| filename.ends_with(e))
}

/// The last path segment of a URL or path, without query or fragment.
pub fn basename(url: &str) -> &str {
    let u = url.split(['#', '?']).next().unwrap_or(url);
    u.rsplit('/').next().unwrap_or(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compressed_tag_sets() {
        let w = WheelName::parse(
            "psycopg_binary-3.3.9-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        )
        .unwrap();
        assert_eq!(w.dist, "psycopg_binary");
        assert_eq!(w.version, "3.3.9");
        assert_eq!(
            w.tags,
            vec![
                "cp311-cp311-manylinux_2_17_x86_64",
                "cp311-cp311-manylinux2014_x86_64"
            ]
        );
        let w = WheelName::parse("six-1.16.0-1-py2.py3-none-any.whl").unwrap();
        assert_eq!(w.build.as_deref(), Some("1"));
        assert_eq!(w.tags, vec!["py2-none-any", "py3-none-any"]);
        assert!(WheelName::parse("six-1.16.0.tar.gz").is_none());
        assert!(WheelName::parse("bad-name.whl").is_none());
    }

    #[test]
    fn names() {
        assert_eq!(normalize("Typing_Extensions"), "typing-extensions");
        assert_eq!(dist_info_name("zope.interface"), "zope_interface");
        assert_eq!(
            basename("https://example.invalid/a/b/x-1.0-py3-none-any.whl#sha256=00"),
            "x-1.0-py3-none-any.whl"
        );
    }
}
