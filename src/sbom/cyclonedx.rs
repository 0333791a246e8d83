//! CycloneDX 1.6 JSON converted from imgbuild's SPDX document (`imgbuild sbom --format
//! cyclonedx`): the image as `metadata.component`, every other package a component (the base
//! and layers as `container`/`file`, distributions and Debian packages as `library`), SPDX
//! `CONTAINS`/`DEPENDS_ON` as `dependencies`; the serial number derived from the namespace.

use super::spdx::{Document, SpdxPackage, IMAGE_ID, NOASSERTION};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The CycloneDX document (serialise with `serde_json::to_vec_pretty`).
pub fn convert(doc: &Document) -> Value {
    let tool = doc
        .creation_info
        .creators
        .iter()
        .find_map(|c| c.strip_prefix("Tool: imgbuild-"))
        .unwrap_or(env!("CARGO_PKG_VERSION"));
    let image = doc.packages.iter().find(|p| p.spdx_id == IMAGE_ID);
    let mut components = Vec::new();
    for p in doc.packages.iter().filter(|p| p.spdx_id != IMAGE_ID) {
        components.push(component(p));
    }
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &doc.relationships {
        if matches!(
            r.relationship_type.as_str(),
            "CONTAINS" | "DEPENDS_ON" | "DESCENDANT_OF"
        ) && r.spdx_element_id != "SPDXRef-DOCUMENT"
        {
            deps.entry(r.spdx_element_id.clone())
                .or_default()
                .push(r.related_spdx_element.clone());
        }
    }
    let dependencies: Vec<Value> = deps
        .into_iter()
        .map(|(r, mut on)| {
            on.sort();
            on.dedup();
            json!({"ref": r, "dependsOn": on})
        })
        .collect();
    let mut metadata = Map::new();
    metadata.insert("timestamp".into(), json!(doc.creation_info.created));
    metadata.insert(
        "tools".into(),
        json!({"components": [{"type": "application", "name": "imgbuild", "version": tool}]}),
    );
    if let Some(img) = image {
        metadata.insert("component".into(), component(img));
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_from(&doc.document_namespace)),
        "version": 1,
        "metadata": metadata,
        "components": components,
        "dependencies": dependencies,
    })
}

fn component(p: &SpdxPackage) -> Value {
    let kind = match p.primary_package_purpose.as_deref() {
        Some("CONTAINER") => "container",
        Some("ARCHIVE") => "file",
        Some("APPLICATION") => "application",
        _ => "library",
    };
    let mut c = Map::new();
    c.insert("type".into(), json!(kind));
    c.insert("bom-ref".into(), json!(p.spdx_id));
    c.insert("name".into(), json!(p.name));
    if let Some(v) = &p.version_info {
        c.insert("version".into(), json!(v));
    }
    if !p.checksums.is_empty() {
        let hashes: Vec<Value> = p
            .checksums
            .iter()
            .filter_map(|h| {
                let alg = match h.algorithm.as_str() {
                    "SHA1" => "SHA-1",
                    "SHA256" => "SHA-256",
                    "SHA384" => "SHA-384",
                    "SHA512" => "SHA-512",
                    _ => return None,
                };
                Some(json!({"alg": alg, "content": h.checksum_value}))
            })
            .collect();
        c.insert("hashes".into(), json!(hashes));
    }
    if p.license_declared != NOASSERTION && p.license_declared != "NONE" {
        c.insert(
            "licenses".into(),
            json!([{"expression": p.license_declared}]),
        );
    }
    if let Some(u) = p.purl_of() {
        c.insert("purl".into(), json!(u));
    }
    if let Some(s) = p.source_info.as_ref().or(p.comment.as_ref()) {
        c.insert("description".into(), json!(s));
    }
    Value::Object(c)
}

/// A version-8 (name-based, custom) UUID from the SHA-256 of `name` (RFC 9562 §5.8).
fn uuid_from(name: &str) -> String {
    let d = crate::digest::Digest::of(name.as_bytes());
    let mut b = hex::decode(d.hex()).expect("hex");
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(&b[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
