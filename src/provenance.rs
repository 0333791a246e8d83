//! SLSA v1 provenance of an image manifest as an in-toto Statement v1: subject = the manifest
//! digest; resolved dependencies = the base digest, the lock files, each wheel, sdist and
//! package by hash, the project's git commit; the builder id and imgbuild's version. No
//! wall-clock field unless the user asks for one (`IMGBUILD_PROVENANCE_TIMESTAMPS=1`: SLSA's
//! `finishedOn`): the same inputs give the same bytes.

use crate::digest::Digest;
use crate::sbom::Input;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The artifact type (and payload media type) of an in-toto statement referrer.
pub const MT_IN_TOTO: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What kind of build this is (SLSA `buildType`: a URI that says how to read the
/// parameters below).
pub const BUILD_TYPE: &str = "urn:imgbuild:buildtype:image:v1";

/// What the statement says about one build.
pub struct Build<'a> {
    /// The subject's name: the repository, else the image's name.
    pub name: &'a str,
    pub digest: &'a Digest,
    /// The image's name in imgbuild.toml and the platform.
    pub image: &'a str,
    pub platform: String,
    /// Settings that shape the bytes (compression, level, source date).
    pub internal: BTreeMap<String, Value>,
    /// The base (as the SBOM names it) and its manifest digest.
    pub base: (String, Option<Digest>),
    /// The sha256 of imgbuild.toml.
    pub config_sha256: String,
    /// The project's git commit.
    pub revision: Option<String>,
    /// Everything the layers resolved.
    pub inputs: Vec<Input>,
    /// Seconds since the epoch when the build finished (`runDetails.metadata.finishedOn`),
    /// only when the user asked for wall-clock time (`wall_clock`).
    pub finished_on: Option<u64>,
}

/// The variable that asks for wall-clock time in the provenance.
pub const TIMESTAMPS_ENV: &str = "IMGBUILD_PROVENANCE_TIMESTAMPS";

/// Now, when `IMGBUILD_PROVENANCE_TIMESTAMPS` is `1` or `true` (the provenance then says when
/// the build finished, and differs from build to build); else `None`.
pub fn wall_clock() -> Option<u64> {
    let v = std::env::var(TIMESTAMPS_ENV).ok()?;
    matches!(v.trim(), "1" | "true" | "yes").then(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// The builder id: `IMGBUILD_BUILDER_ID` (a CI system says who ran the build), else
/// imgbuild on a local machine.
pub fn builder_id() -> String {
    std::env::var("IMGBUILD_BUILDER_ID")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "urn:imgbuild:builder:local".into())
}

/// The in-toto statement (serialise with `to_bytes`).
pub fn statement(b: &Build) -> Value {
    let mut deps: Vec<Value> = Vec::new();
    if let (name, Some(d)) = &b.base {
        deps.push(json!({"uri": name, "name": "base", "digest": {"sha256": d.hex()}}));
    }
    if let Some(r) = &b.revision {
        deps.push(json!({"uri": "git+project", "name": "source", "digest": {"gitCommit": r}}));
    }
    let mut inputs = b.inputs.clone();
    inputs.sort_by(|a, b| a.uri.cmp(&b.uri).then(a.digest.cmp(&b.digest)));
    inputs.dedup();
    for i in inputs {
        deps.push(json!({"uri": i.uri, "digest": i.digest}));
    }
    let mut metadata = serde_json::Map::new();
    if let Some(t) = b.finished_on {
        metadata.insert("finishedOn".into(), json!(crate::image::rfc3339(t)));
    }
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": b.name, "digest": {"sha256": b.digest.hex()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "image": b.image,
                    "platform": b.platform,
                    "config": {"uri": "imgbuild.toml", "digest": {"sha256": b.config_sha256}},
                },
                "internalParameters": b.internal,
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": builder_id(),
                    "version": {"imgbuild": env!("CARGO_PKG_VERSION")},
                },
                "metadata": metadata,
            },
        },
    })
}

/// The statement as stored: pretty JSON with a final newline.
pub fn to_bytes(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("statements serialise");
    out.push(b'\n');
    out
}
