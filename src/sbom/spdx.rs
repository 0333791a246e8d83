//! SPDX 2.3 JSON: the document of one image manifest (made from the merged filesystem and
//! the recipes' reports), read back, and checked against an image.

use super::{deb_purl, distro, dpkg, metadata, normalize, purl_encode, pypi_purl, python_dists};
use super::{Ecosystem, Files, Package, Subject, DPKG_STATUS, OS_RELEASE};
use crate::digest::Digest;
use crate::image::Descriptor;
use crate::rootfs::Rootfs;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const NOASSERTION: &str = "NOASSERTION";
pub const IMAGE_ID: &str = "SPDXRef-Image";
pub const BASE_ID: &str = "SPDXRef-Base";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub spdx_version: String,
    pub data_license: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    pub packages: Vec<SpdxPackage>,
    #[serde(default)]
    pub relationships: Vec<Relationship>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreationInfo {
    pub created: String,
    pub creators: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpdxPackage {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_package_purpose: Option<String>,
    pub download_location: String,
    pub files_analyzed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    pub license_concluded: String,
    pub license_declared: String,
    pub copyright_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    pub algorithm: String,
    pub checksum_value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: String,
    pub reference_type: String,
    pub reference_locator: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: String,
    pub related_spdx_element: String,
}

impl SpdxPackage {
    fn new(id: String, name: &str, version: Option<String>, purpose: &str) -> SpdxPackage {
        SpdxPackage {
            spdx_id: id,
            name: name.to_string(),
            version_info: version,
            primary_package_purpose: Some(purpose.into()),
            download_location: NOASSERTION.into(),
            files_analyzed: false,
            checksums: vec![],
            license_concluded: NOASSERTION.into(),
            license_declared: NOASSERTION.into(),
            copyright_text: NOASSERTION.into(),
            source_info: None,
            comment: None,
            external_refs: vec![],
        }
    }
    fn sha256(mut self, hex: Option<&str>) -> SpdxPackage {
        if let Some(h) = hex {
            self.checksums.push(Checksum {
                algorithm: "SHA256".into(),
                checksum_value: h.to_string(),
            });
        }
        self
    }
    /// Checksums other than sha256 (`sha512`, `sha1`, …: SPDX's `SHA512`, `SHA1`).
    fn digests(mut self, digests: &BTreeMap<String, String>) -> SpdxPackage {
        for (alg, hex) in digests {
            let alg = alg.to_ascii_uppercase();
            if alg != "SHA256" && matches!(alg.as_str(), "SHA1" | "SHA384" | "SHA512") {
                self.checksums.push(Checksum {
                    algorithm: alg,
                    checksum_value: hex.clone(),
                });
            }
        }
        self
    }
    fn purl(mut self, purl: String) -> SpdxPackage {
        self.external_refs.push(ExternalRef {
            reference_category: "PACKAGE-MANAGER".into(),
            reference_type: "purl".into(),
            reference_locator: purl,
        });
        self
    }
    /// The package URL, when it has one.
    pub fn purl_of(&self) -> Option<&str> {
        self.external_refs
            .iter()
            .find(|r| r.reference_type == "purl")
            .map(|r| r.reference_locator.as_str())
    }
}

/// An SPDX element id from free text (`SPDXRef-` and letters, digits, `.`, `-`).
fn element_id(kind: &str, parts: &[&str], taken: &mut BTreeSet<String>) -> String {
    let mut s = format!("SPDXRef-{kind}");
    for p in parts {
        s.push('-');
        s.extend(p.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        }));
    }
    let mut id = s.clone();
    let mut n = 2;
    while !taken.insert(id.clone()) {
        id = format!("{s}-{n}");
        n += 1;
    }
    id
}

/// The purl of an OCI image: `pkg:oci/NAME@DIGEST?repository_url=REPO`.
pub fn oci_purl(repository: Option<&str>, name: &str, digest: &Digest) -> String {
    let (last, repo) = match repository {
        Some(r) => {
            let r = r.split('@').next().unwrap_or(r);
            // A tag is not part of the repository URL.
            let r = match r.rsplit_once(':') {
                Some((a, t)) if !t.contains('/') => a,
                _ => r,
            };
            (r.rsplit('/').next().unwrap_or(r).to_string(), Some(r))
        }
        None => (name.to_string(), None),
    };
    let mut p = format!(
        "pkg:oci/{}@{}",
        purl_encode(&last.to_ascii_lowercase()),
        purl_encode(digest.as_str())
    );
    if let Some(r) = repo {
        p.push_str(&format!("?repository_url={}", purl_encode(r)));
    }
    p
}

fn relate(rels: &mut Vec<Relationship>, a: &str, kind: &str, b: &str) {
    rels.push(Relationship {
        spdx_element_id: a.to_string(),
        relationship_type: kind.to_string(),
        related_spdx_element: b.to_string(),
    });
}

/// The SPDX document of the image `s`, whose merged filesystem is `fs` and whose files
/// `paths_to_read` names were read into `files`.
pub fn document(s: &Subject, fs: &Rootfs, files: &Files) -> Document {
    let mut taken = BTreeSet::new();
    let mut packages = Vec::new();
    let mut rels = Vec::new();
    let hex = s.digest.hex();
    let title = s.repository.unwrap_or(s.name);

    // The image, the base, the image's own layers.
    let image = SpdxPackage::new(
        element_id("Image", &[], &mut taken),
        title,
        Some(s.digest.to_string()),
        "CONTAINER",
    )
    .sha256(Some(hex))
    .purl(oci_purl(s.repository, s.name, s.digest));
    relate(&mut rels, "SPDXRef-DOCUMENT", "DESCRIBES", &image.spdx_id);
    let image_id = image.spdx_id.clone();
    packages.push(image);
    let (base_name, base_digest) = &s.base;
    let mut base = SpdxPackage::new(
        element_id("Base", &[], &mut taken),
        base_name,
        base_digest.as_ref().map(|d| d.to_string()),
        "CONTAINER",
    )
    .sha256(base_digest.as_ref().map(|d| d.hex()));
    base.comment = Some(format!("{} layers", s.base_layers));
    relate(&mut rels, &image_id, "DESCENDANT_OF", &base.spdx_id);
    packages.push(base);
    // Which element holds what a layer installed: the base, or the image's own layer.
    let mut holder: BTreeMap<usize, String> = BTreeMap::new();
    for (i, (name, d)) in s.layers.iter().enumerate() {
        let Some(name) = name else {
            holder.insert(i, BASE_ID.into());
            continue;
        };
        let mut p = SpdxPackage::new(
            element_id("Layer", &[&(i + 1).to_string(), name], &mut taken),
            name,
            Some(d.digest.to_string()),
            "ARCHIVE",
        )
        .sha256(Some(d.digest.hex()));
        p.comment = Some(format!(
            "layer {} of {}: {}",
            i + 1,
            s.layers.len(),
            d.media_type
        ));
        relate(&mut rels, &image_id, "CONTAINS", &p.spdx_id);
        holder.insert(i, p.spdx_id.clone());
        packages.push(p);
    }
    let held_by = |layer: usize| {
        holder
            .get(&layer)
            .cloned()
            .unwrap_or_else(|| BASE_ID.into())
    };
    let reported = |eco: Ecosystem, f: &dyn Fn(&Package) -> bool| -> Option<(usize, Package)> {
        s.supply.iter().find_map(|(l, sup)| {
            sup.packages
                .iter()
                .find(|p| p.ecosystem == eco && f(p))
                .map(|p| (*l, p.clone()))
        })
    };

    // Python distributions: every RECORD of the merged filesystem.
    let mut py: Vec<(String, String, String, Vec<String>)> = Vec::new(); // (id, holder, name, deps)
    for d in python_dists(fs) {
        let meta = files
            .get(&format!("{}/METADATA", d.dist_info))
            .map(|b| metadata(&String::from_utf8_lossy(b)))
            .unwrap_or_default();
        let name = meta.name.clone().unwrap_or_else(|| d.name.clone());
        let rec = reported(Ecosystem::Python, &|p| {
            normalize(&p.name) == normalize(&d.name) && p.version == d.version
        })
        .filter(|(l, _)| *l == d.layer)
        .map(|(_, p)| p);
        let mut p = SpdxPackage::new(
            element_id("Python", &[&normalize(&name), &d.version], &mut taken),
            &name,
            Some(d.version.clone()),
            "LIBRARY",
        )
        .sha256(rec.as_ref().and_then(|r| r.sha256.as_deref()))
        .purl(pypi_purl(&name, &d.version));
        if let Some(l) = meta
            .license
            .or_else(|| rec.as_ref().and_then(|r| r.license.clone()))
        {
            p.license_declared = l;
        }
        p.source_info = rec.as_ref().and_then(|r| r.source.clone());
        p.comment = Some(format!("installed in /{}", d.dist_info));
        let h = held_by(d.layer);
        relate(&mut rels, &h, "CONTAINS", &p.spdx_id);
        py.push((
            p.spdx_id.clone(),
            h,
            normalize(&name),
            rec.map(|r| r.depends_on).unwrap_or_default(),
        ));
        packages.push(p);
    }
    // DEPENDS_ON as the lock states it: the distribution of that name in the same layer,
    // else the one another layer (or the base) installed.
    for (id, h, _, deps) in &py {
        for dep in deps {
            let dep = normalize(dep);
            if let Some((other, ..)) = py
                .iter()
                .find(|(_, h2, n, _)| h2 == h && *n == dep)
                .or_else(|| py.iter().find(|(_, _, n, _)| *n == dep))
            {
                relate(&mut rels, id, "DEPENDS_ON", other);
            }
        }
    }

    // Debian packages: the dpkg status database.
    if let Some(status) = files.get(DPKG_STATUS) {
        let distro = OS_RELEASE
            .iter()
            .find_map(|p| files.get(*p))
            .and_then(|b| distro(&String::from_utf8_lossy(b)));
        let installed = dpkg::installed(&String::from_utf8_lossy(status));
        let mut deb_ids: Vec<String> = Vec::new();
        for d in &installed {
            let rec = reported(Ecosystem::Debian, &|p| {
                p.name == d.name && p.version == d.version && p.arch.as_deref() == Some(&d.arch)
            });
            let mut p = SpdxPackage::new(
                element_id("Deb", &[&d.name, &d.version, &d.arch], &mut taken),
                &d.name,
                Some(d.version.clone()),
                "LIBRARY",
            )
            .sha256(rec.as_ref().and_then(|(_, r)| r.sha256.as_deref()))
            .purl(deb_purl(&d.name, &d.version, &d.arch, distro.as_deref()));
            p.source_info = rec
                .as_ref()
                .and_then(|(_, r)| r.source.clone())
                .or_else(|| d.source.as_ref().map(|s| format!("source package {s}")));
            let h = rec
                .map(|(l, _)| held_by(l))
                .unwrap_or_else(|| BASE_ID.into());
            relate(&mut rels, &h, "CONTAINS", &p.spdx_id);
            deb_ids.push(p.spdx_id.clone());
            packages.push(p);
        }
        // DEPENDS_ON as dpkg's database states it (Depends, Pre-Depends).
        for (i, to) in dpkg::dependencies(&installed) {
            relate(&mut rels, &deb_ids[i], "DEPENDS_ON", &deb_ids[to]);
        }
    }

    // npm packages, as the layers report them from their locks; DEPENDS_ON to the package
    // of that name and version, in the same layer first.
    let mut npm: Vec<(String, String, String, &Vec<String>)> = Vec::new(); // (id, holder, name@version, deps)
    for (l, sup) in &s.supply {
        for r in sup
            .packages
            .iter()
            .filter(|p| p.ecosystem == Ecosystem::Npm)
        {
            let mut p = SpdxPackage::new(
                element_id("Npm", &[&r.name, &r.version], &mut taken),
                &r.name,
                Some(r.version.clone()),
                "LIBRARY",
            )
            .sha256(r.sha256.as_deref())
            .digests(&r.digests)
            .purl(super::npm::purl(&r.name, &r.version));
            p.source_info = r.source.clone();
            if let Some(lic) = &r.license {
                p.license_declared = lic.clone();
            }
            let h = held_by(*l);
            relate(&mut rels, &h, "CONTAINS", &p.spdx_id);
            npm.push((
                p.spdx_id.clone(),
                h,
                format!("{}@{}", r.name, r.version),
                &r.depends_on,
            ));
            packages.push(p);
        }
    }
    for (id, h, _, deps) in &npm {
        for dep in deps.iter() {
            if let Some((other, ..)) = npm
                .iter()
                .find(|(_, h2, n, _)| h2 == h && n == dep)
                .or_else(|| npm.iter().find(|(_, _, n, _)| n == dep))
            {
                relate(&mut rels, id, "DEPENDS_ON", other);
            }
        }
    }

    Document {
        spdx_version: "SPDX-2.3".into(),
        data_license: "CC0-1.0".into(),
        spdx_id: "SPDXRef-DOCUMENT".into(),
        name: format!("{title}@{}", s.digest),
        document_namespace: namespace(s.name, s.digest),
        creation_info: CreationInfo {
            created: crate::image::rfc3339(s.created),
            creators: vec![format!("Tool: imgbuild-{}", env!("CARGO_PKG_VERSION"))],
        },
        packages,
        relationships: rels,
    }
}

/// The document namespace: a URI derived from the manifest digest (SPDX 2.3 §6.5 suggests
/// `https://spdx.org/spdxdocs/` for documents without a home of their own).
pub fn namespace(name: &str, digest: &Digest) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("https://spdx.org/spdxdocs/imgbuild-{safe}-{}", digest.hex())
}

/// The document as imgbuild stores it: pretty JSON, fields in declared order, a final newline.
pub fn to_bytes(doc: &Document) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(doc).expect("SPDX documents serialise");
    v.push(b'\n');
    v
}

/// Where the SBOM and the image disagree: distributions, Debian packages, layers, the image.
/// Each line says what and what to do.
pub fn check(
    doc: &Document,
    fs: &Rootfs,
    files: &Files,
    layers: &[Descriptor],
    digest: &Digest,
) -> Vec<String> {
    let mut out = Vec::new();
    let with = |prefix: &str| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for p in &doc.packages {
            if let Some(u) = p.purl_of().filter(|u| u.starts_with(prefix)) {
                *m.entry(u.to_string()).or_default() += 1;
            }
        }
        m
    };
    let mut compare = |sbom: BTreeMap<String, usize>,
                       image: BTreeMap<String, usize>,
                       what: &str| {
        for (k, n) in &sbom {
            let have = image.get(k).copied().unwrap_or(0);
            if have < *n {
                out.push(format!(
                    "the SBOM lists {k}, which no {what} in the image shows (the image or its SBOM was changed after the build)"
                ));
            }
        }
        for (k, n) in &image {
            if sbom.get(k).copied().unwrap_or(0) < *n {
                out.push(format!(
                    "the image's {what} shows {k}, which the SBOM does not list"
                ));
            }
        }
    };
    let mut py = BTreeMap::new();
    for d in python_dists(fs) {
        *py.entry(pypi_purl(&d.name, &d.version)).or_default() += 1;
    }
    compare(with("pkg:pypi/"), py, "RECORD");
    let mut deb = BTreeMap::new();
    if let Some(status) = files.get(DPKG_STATUS) {
        let distro = OS_RELEASE
            .iter()
            .find_map(|p| files.get(*p))
            .and_then(|b| distro(&String::from_utf8_lossy(b)));
        for d in dpkg::installed(&String::from_utf8_lossy(status)) {
            *deb.entry(deb_purl(&d.name, &d.version, &d.arch, distro.as_deref()))
                .or_default() += 1;
        }
    }
    compare(with("pkg:deb/"), deb, "dpkg status");
    for p in doc
        .packages
        .iter()
        .filter(|p| p.spdx_id.starts_with("SPDXRef-Layer-"))
    {
        let d = p.version_info.as_deref().unwrap_or("");
        if !layers.iter().any(|l| l.digest.as_str() == d) {
            out.push(format!(
                "the SBOM's layer `{}` is {d}, which is not a layer of the image",
                p.name
            ));
        }
    }
    if let Some(img) = doc.packages.iter().find(|p| p.spdx_id == IMAGE_ID) {
        if img.version_info.as_deref() != Some(digest.as_str()) {
            out.push(format!(
                "the SBOM describes {}, not this manifest ({digest})",
                img.version_info.as_deref().unwrap_or("no digest")
            ));
        }
    }
    out
}
