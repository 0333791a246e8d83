//! The software bill of materials of an image: the package records recipes report
//! (`Package`, `Supply`), the inventory read from the merged filesystem (every Python
//! distribution with a RECORD, the dpkg status database), the SPDX 2.3 JSON document made
//! from them (`spdx`), its CycloneDX 1.6 conversion (`cyclonedx`), and the check `imgbuild
//! verify` makes: the SBOM names exactly the distributions and packages the image holds.
//!
//! Deterministic: no wall clock (`created` is the source date), no random namespace (it is
//! derived from the manifest digest), packages in a fixed order; no URL host of a package
//! index and no credentials (a wheel's origin is said as "a package index", a git URL loses
//! its user info).

pub mod cyclonedx;
pub mod dpkg;
pub mod npm;
pub mod pylock;
pub mod spdx;

use crate::digest::Digest;
use crate::image::Descriptor;
use crate::rootfs::Rootfs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The artifact type (and payload media type) of an SPDX JSON referrer.
pub const MT_SPDX: &str = "application/spdx+json";
/// The media type of CycloneDX JSON (for `imgbuild sbom --format cyclonedx`).
pub const MT_CYCLONEDX: &str = "application/vnd.cyclonedx+json";
/// Where the dpkg status database is in an image.
pub const DPKG_STATUS: &str = "var/lib/dpkg/status";
const OS_RELEASE: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];

/// Which package world a package belongs to (and so its purl type).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Python,
    Debian,
    Npm,
}

/// A package a layer installs, as its recipe reports it: Python layers their distributions,
/// Debian layers their `.deb`s, a frontend layer its npm packages. The SBOM lists what the
/// merged filesystem holds and takes these records' hashes and origins for it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// Debian architecture (`amd64`, `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// sha256 (hex) of the file installed: the wheel, the `.deb`, the npm tarball.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Other digests of that file by algorithm (`sha512`, `sha1`: an npm lock's `integrity`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
    /// Where it came from, in words without hosts or credentials ("wheel X from a package
    /// index", "built from sdist X (sha256 …)", "built from git commit C of URL").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// An SPDX license expression, when the package declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// What (of the same ecosystem) it depends on, as the lock states it: names for Python
    /// and Debian, `name@version` for npm (a tree may hold several versions of a name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

/// An input a recipe resolved, for the provenance: a lock file, a wheel, an sdist, a git
/// commit; `uri` names it without hosts or credentials.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Input {
    pub uri: String,
    /// Digests by algorithm (`sha256`, `gitCommit`).
    pub digest: BTreeMap<String, String>,
}

/// The store record kind of `LayerFacts`, keyed by a layer's diff_id (hex).
pub const FACTS: &str = "sbom-layer-v1";

/// What the SBOM keeps of one layer, by path in the layer: the text of the files `wanted`
/// accepts (a METADATA up to the end of its header). Layers are content addressed, so these
/// are kept in the store by diff_id: written when the layer is, read once for a base.
pub type LayerFacts = BTreeMap<String, String>;

/// Whether the SBOM needs the file `path` (no leading slash) of a layer.
pub fn wanted(path: &str) -> bool {
    path == DPKG_STATUS
        || OS_RELEASE.contains(&path)
        || (path.ends_with(".dist-info/METADATA")
            && (path.contains("/site-packages/") || path.contains("/dist-packages/")))
}

/// The facts of a layer from its wanted files' bytes.
pub fn facts(files: BTreeMap<String, Vec<u8>>) -> LayerFacts {
    files
        .into_iter()
        .map(|(p, b)| {
            let mut t = String::from_utf8_lossy(&b).into_owned();
            if p.ends_with("/METADATA") {
                if let Some(i) = t.find("\n\n") {
                    t.truncate(i + 1);
                }
            }
            (p, t)
        })
        .collect()
}

/// What a recipe reports for the supply chain documents.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Supply {
    pub packages: Vec<Package>,
    pub inputs: Vec<Input>,
}

/// PEP 503 normalised name: lower case, runs of `-`, `_`, `.` as one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
        } else {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Percent-encodes a purl component (everything but unreserved characters).
pub fn purl_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:pypi/NAME@VERSION` (name normalised, as the purl spec says for pypi).
pub fn pypi_purl(name: &str, version: &str) -> String {
    format!(
        "pkg:pypi/{}@{}",
        purl_encode(&normalize(name)),
        purl_encode(version)
    )
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH[&distro=debian-N]`.
pub fn deb_purl(name: &str, version: &str, arch: &str, distro: Option<&str>) -> String {
    let mut p = format!(
        "pkg:deb/debian/{}@{}?arch={}",
        purl_encode(name),
        purl_encode(version),
        purl_encode(arch)
    );
    if let Some(d) = distro {
        p.push_str(&format!("&distro={}", purl_encode(d)));
    }
    p
}

/// A Python distribution found in the merged filesystem: its `.dist-info` directory, the
/// layer its RECORD is in, name and version.
#[derive(Clone, Debug, PartialEq)]
pub struct Dist {
    pub dist_info: String,
    pub layer: usize,
    pub name: String,
    pub version: String,
}

/// Every `.dist-info` with a RECORD directly in a `site-packages` or `dist-packages`
/// directory of `fs`, sorted by path: what the image's RECORDs say is installed.
pub fn python_dists(fs: &Rootfs) -> Vec<Dist> {
    let mut out = Vec::new();
    for k in fs.captured.keys() {
        let Some(dir) = k.strip_suffix("/RECORD") else {
            continue;
        };
        let Some((site, base)) = dir.rsplit_once('/') else {
            continue;
        };
        if !(site.ends_with("/site-packages") || site.ends_with("/dist-packages")) {
            continue;
        }
        let Some(stem) = base.strip_suffix(".dist-info") else {
            continue;
        };
        let Some((name, version)) = stem.split_once('-') else {
            continue;
        };
        let layer = fs.files.get(k).map(|(_, l)| *l).unwrap_or(0);
        out.push(Dist {
            dist_info: dir.to_string(),
            layer,
            name: name.to_string(),
            version: version.to_string(),
        });
    }
    out
}

/// The paths `inventory` reads: each distribution's METADATA, the dpkg status, os-release.
pub fn paths_to_read(dists: &[Dist]) -> Vec<String> {
    let mut p: Vec<String> = dists
        .iter()
        .map(|d| format!("{}/METADATA", d.dist_info))
        .collect();
    p.push(DPKG_STATUS.into());
    p.extend(OS_RELEASE.iter().map(|s| s.to_string()));
    p
}

/// What the METADATA of a distribution says that the SBOM uses.
#[derive(Debug, Default, PartialEq)]
pub struct Metadata {
    pub name: Option<String>,
    pub version: Option<String>,
    pub license: Option<String>,
}

/// Reads the header of a core-metadata file (`Name`, `Version`, the license: PEP 639
/// `License-Expression`, else the license classifiers and `License` values that are SPDX
/// identifiers).
pub fn metadata(text: &str) -> Metadata {
    let mut m = Metadata::default();
    let mut expr = None;
    let mut from_classifiers: Vec<&str> = Vec::new();
    let mut license_field = None;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.to_ascii_lowercase().as_str() {
            "name" => m.name = Some(v.to_string()),
            "version" => m.version = Some(v.to_string()),
            "license-expression" => expr = Some(v.to_string()),
            "license" => license_field = Some(v.to_string()),
            "classifier" => {
                if let Some(id) = classifier_license(v) {
                    if !from_classifiers.contains(&id) {
                        from_classifiers.push(id);
                    }
                }
            }
            _ => {}
        }
    }
    m.license = expr
        .filter(|e| plausible_expression(e))
        .or_else(|| (!from_classifiers.is_empty()).then(|| from_classifiers.join(" OR ")))
        .or_else(|| {
            license_field
                .filter(|l| KNOWN_IDS.contains(&l.as_str()))
                .clone()
        });
    m
}

/// SPDX identifiers a `License:` field may spell exactly.
const KNOWN_IDS: &[&str] = &[
    "MIT",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "PSF-2.0",
    "MPL-2.0",
    "LGPL-2.1-only",
    "LGPL-3.0-only",
    "GPL-2.0-only",
    "GPL-3.0-only",
    "Unlicense",
    "0BSD",
    "Zlib",
];

fn classifier_license(c: &str) -> Option<&'static str> {
    let tail = c.strip_prefix("License :: ")?;
    Some(match tail.rsplit(" :: ").next()? {
        "MIT License" => "MIT",
        "Apache Software License" => "Apache-2.0",
        "ISC License (ISCL)" => "ISC",
        "Python Software Foundation License" => "PSF-2.0",
        "Mozilla Public License 2.0 (MPL 2.0)" => "MPL-2.0",
        "The Unlicense (Unlicense)" => "Unlicense",
        "zlib/libpng License" => "Zlib",
        _ => return None,
    })
}

/// An expression made of license identifiers joined by `AND`, `OR`, `WITH`, with
/// parentheses (`Apache 2.0` or `SEE LICENSE IN x` is not one).
pub fn plausible_expression(e: &str) -> bool {
    let tokens: Vec<&str> = e
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|t| !t.is_empty())
        .collect();
    let op = |t: &str| matches!(t, "AND" | "OR" | "WITH");
    tokens.len() % 2 == 1
        && tokens.iter().enumerate().all(|(i, t)| {
            if i % 2 == 1 {
                op(t)
            } else {
                !op(t)
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | ':'))
            }
        })
}

/// `ID-VERSION_ID` of os-release (`debian-12`), when it names one.
pub fn distro(os_release: &str) -> Option<String> {
    let mut id = None;
    let mut ver = None;
    for l in os_release.lines() {
        if let Some((k, v)) = l.split_once('=') {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "ID" => id = Some(v),
                "VERSION_ID" => ver = Some(v),
                _ => {}
            }
        }
    }
    Some(format!("{}-{}", id?, ver?))
}

/// The image an SBOM describes.
pub struct Subject<'a> {
    /// The image's name in imgbuild.toml.
    pub name: &'a str,
    pub repository: Option<&'a str>,
    pub digest: &'a Digest,
    /// Seconds since the epoch: the source date.
    pub created: u64,
    /// The base as an SBOM names it (a reference, `scratch`, an image of the project) and
    /// its manifest digest.
    pub base: (String, Option<Digest>),
    /// The layers of the base.
    pub base_layers: usize,
    /// Each layer of the image (base layers first) and, for the image's own, its name.
    pub layers: Vec<(Option<String>, Descriptor)>,
    /// What each own layer's recipe reports, by layer index (base layers first).
    pub supply: BTreeMap<usize, Supply>,
}

/// What was read from the image's files for the inventory (`paths_to_read`).
pub type Files = BTreeMap<String, Vec<u8>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_encode_what_they_must() {
        assert_eq!(
            pypi_purl("SQLAlchemy", "2.0.1"),
            "pkg:pypi/sqlalchemy@2.0.1"
        );
        assert_eq!(
            pypi_purl("typing_extensions", "4.9.0"),
            "pkg:pypi/typing-extensions@4.9.0"
        );
        assert_eq!(
            deb_purl("libc6", "2.36-9+deb12u4", "amd64", Some("debian-12")),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            deb_purl("bash", "1:5.2", "amd64", None),
            "pkg:deb/debian/bash@1%3A5.2?arch=amd64"
        );
    }

    #[test]
    fn metadata_license_prefers_the_expression_then_classifiers() {
        let m = metadata("Metadata-Version: 2.4\nName: Foo\nVersion: 1.0\nLicense-Expression: MIT OR Apache-2.0\n\nbody");
        assert_eq!(m.license.as_deref(), Some("MIT OR Apache-2.0"));
        let m = metadata("Name: a\nLicense: a long custom text\nClassifier: License :: OSI Approved :: MIT License\n");
        assert_eq!(m.license.as_deref(), Some("MIT"));
        let m = metadata("Name: a\nLicense: Some license\n");
        assert_eq!(m.license, None);
        let m = metadata("Name: a\nLicense: BSD-3-Clause\n");
        assert_eq!(m.license.as_deref(), Some("BSD-3-Clause"));
    }

    #[test]
    fn names_normalise_as_pep_503() {
        assert_eq!(normalize("Foo.Bar__baz"), "foo-bar-baz");
        assert_eq!(normalize("typing_extensions"), "typing-extensions");
    }
}
