//! OCI image documents: descriptors, manifests, indexes and the image config; platforms,
//! docker's default PATH, a resolved base and a stored (built) image.
//!
//! Own serde types rather than a generic crate: maps are ordered (BTreeMap) so the same inputs
//! always serialise to the same bytes, and fields we do not model are kept (`extra`).

use crate::digest::Digest;
use crate::store::Store;
use crate::usage;
use anyhow::bail;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANN_CREATED: &str = "org.opencontainers.image.created";
pub const ANN_REVISION: &str = "org.opencontainers.image.revision";
pub const ANN_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
pub const ANN_BASE_NAME: &str = "org.opencontainers.image.base.name";
/// The config of an artifact manifest that has none (image-spec 1.1, "Guidance for an empty
/// descriptor"): the two bytes `{}`.
pub const MT_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// docker's default `PATH`, for images whose config sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The artifact type of a referrer, in an index that lists it (image-spec 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`, e.g. `linux/amd64`, `linux/arm64/v8`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut it = s.split('/');
        let os = it.next()?.to_string();
        let architecture = it.next()?.to_string();
        let variant = it.next().map(String::from);
        if os.is_empty() || architecture.is_empty() || it.next().is_some() {
            return None;
        }
        Some(Platform {
            architecture,
            os,
            variant,
        })
    }
    /// The one platform parser for every place a platform is written (imgbuild.toml,
    /// `--platform`): `what` names where it came from, e.g. "--platform `x`".
    /// Only Linux platforms Go and the OCI image spec name (`GOARCH` values; `arm` with
    /// `v5`–`v7`, `arm64` with `v8`): a typo such as `linux/amd46` is an error here, not a
    /// base that matches nothing later.
    pub fn parse_named(s: &str, what: &str) -> anyhow::Result<Platform> {
        let p = Platform::parse(s)
            .ok_or_else(|| crate::usage!("{what}: expected os/arch, e.g. linux/amd64"))?;
        if p.os != "linux" {
            bail!(usage!(
                "{what}: imgbuild builds Linux images; use linux/ARCH, e.g. linux/{}",
                p.architecture
            ));
        }
        let variants: &[&str] = match p.architecture.as_str() {
            "amd64" => &["v1", "v2", "v3", "v4"],
            "arm64" => &["v8"],
            "arm" => &["v5", "v6", "v7"],
            "386" | "ppc64le" | "s390x" | "riscv64" | "mips64le" | "loong64" => &[],
            other => bail!(usage!(
                "{what}: unknown architecture `{other}`; use one of amd64, arm64, arm, 386, ppc64le, s390x, riscv64, mips64le, loong64"
            )),
        };
        if let Some(v) = &p.variant {
            if !variants.contains(&v.as_str()) {
                bail!(usage!(
                    "{what}: unknown variant `{v}` of {}{}",
                    p.architecture,
                    if variants.is_empty() {
                        " (it has none)".to_string()
                    } else {
                        format!(" (known: {})", variants.join(", "))
                    }
                ));
            }
        }
        Ok(p)
    }

    /// Each of `list` parsed with `parse_named` (`what(p)` names where `p` was written), none
    /// twice.
    pub fn parse_list(
        list: &[String],
        what: impl Fn(&str) -> String,
    ) -> anyhow::Result<Vec<Platform>> {
        let mut out: Vec<Platform> = Vec::new();
        for p in list {
            let parsed = Platform::parse_named(p, &what(p))?;
            if out.contains(&parsed) {
                bail!(usage!("{} is listed twice", what(p)));
            }
            out.push(parsed);
        }
        Ok(out)
    }

    /// This machine's platform in OCI terms.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
        }
    }

    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || other.variant.is_none() || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Set on an artifact manifest (an SBOM, a provenance statement): what it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The manifest an artifact refers to (image-spec 1.1 `subject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// The manifest for `platform`, or a message naming the platforms the index has.
    pub fn for_platform(&self, platform: &Platform) -> Result<&Descriptor, String> {
        if let Some(m) = self
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p.matches(platform)))
        {
            return Ok(m);
        }
        let have: Vec<String> = self
            .manifests
            .iter()
            .filter_map(|m| m.platform.as_ref())
            .map(|p| p.to_string())
            .collect();
        Err(format!(
            "has no manifest for {platform} (it has: {})",
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        ))
    }
}

/// The image config (`application/vnd.oci.image.config.v1+json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null_map"
    )]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null_map"
    )]
    pub volumes: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null_map"
    )]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn null_map<'de, D, T>(d: D) -> Result<Option<BTreeMap<String, T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<BTreeMap<String, T>>::deserialize(d)?.filter(|m| !m.is_empty()))
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

impl RunConfig {
    /// The value of `key` in Env.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .as_ref()?
            .iter()
            .rev()
            .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
    /// Sets `key=value` in Env, replacing an earlier value in place.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        let item = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').map(|(k, _)| k) == Some(key) || kv.as_str() == key)
        {
            Some(slot) => *slot = item,
            None => env.push(item),
        }
    }
    /// Directories of the PATH variable, in order.
    pub fn path_dirs(&self) -> Vec<String> {
        self.env_var("PATH")
            .unwrap_or("")
            .split(':')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}

/// A resolved base: its config and layers, every blob already in the store.
#[derive(Clone, Debug)]
pub struct BaseImage {
    /// The base as written in the config (for annotations and messages).
    pub name: String,
    /// Manifest digest; `None` for scratch.
    pub digest: Option<Digest>,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
}

impl BaseImage {
    pub fn scratch(platform: &Platform) -> BaseImage {
        BaseImage {
            name: "scratch".into(),
            digest: None,
            config: ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: vec![],
                },
                ..Default::default()
            },
            layers: vec![],
        }
    }
}

/// A built image whose blobs are all in the store: one image manifest, or — when `platforms`
/// is not empty — an image index of one built manifest per platform. For an index,
/// `manifest_bytes` and `digest` are the index's, `manifest` has no layers and `referrers` is
/// empty (each platform's manifest has its own).
#[derive(Clone, Debug)]
pub struct Built {
    pub name: String,
    pub repository: Option<String>,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub digest: Digest,
    /// Artifacts that refer to this manifest (its SBOM, its provenance), written and pushed
    /// with it.
    pub referrers: Vec<Referrer>,
    /// The images of an index, in the index's order, each with its platform.
    pub platforms: Vec<(Platform, Built)>,
}

impl Built {
    pub fn is_index(&self) -> bool {
        !self.platforms.is_empty()
    }
    pub fn media_type(&self) -> &'static str {
        if self.is_index() {
            MT_INDEX
        } else {
            MT_MANIFEST
        }
    }
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type().into(),
            digest: self.digest.clone(),
            size: self.manifest_bytes.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
    /// Every blob the manifest names: config first, then layers (none for an index).
    pub fn blobs(&self) -> Vec<&Descriptor> {
        if self.is_index() {
            return vec![];
        }
        std::iter::once(&self.manifest.config)
            .chain(self.manifest.layers.iter())
            .collect()
    }
    /// The single-platform images: itself, or an index's images.
    pub fn images(&self) -> Vec<&Built> {
        if self.is_index() {
            self.platforms.iter().map(|(_, b)| b).collect()
        } else {
            vec![self]
        }
    }
    /// The image for `platform`: an index's entry, or itself when its config says that
    /// platform (or it is not an index and `platform` is `None`).
    pub fn for_platform(&self, platform: &Platform, store: &Store) -> anyhow::Result<&Built> {
        if self.is_index() {
            return self
                .platforms
                .iter()
                .find(|(p, _)| p.matches(platform))
                .map(|(_, b)| b)
                .ok_or_else(|| {
                    let have: Vec<String> =
                        self.platforms.iter().map(|(p, _)| p.to_string()).collect();
                    usage!(
                        "image `{}` was built for {}, not {platform}",
                        self.name,
                        have.join(", ")
                    )
                });
        }
        let config: ImageConfig =
            serde_json::from_slice(&store.read(&self.manifest.config.digest)?)?;
        if !config.architecture.is_empty()
            && (config.architecture != platform.architecture || config.os != platform.os)
        {
            bail!(usage!(
                "image `{}` was built for {}/{}, not {platform}",
                self.name,
                config.os,
                config.architecture
            ));
        }
        Ok(self)
    }
}

/// Stores an image index of `images` (one per platform, in the order given); returns it.
/// Each entry's descriptor carries its platform (image-spec "Image Index": `platform`).
pub fn assemble_index(
    name: &str,
    repository: Option<String>,
    images: Vec<(Platform, Built)>,
    annotations: BTreeMap<String, String>,
    store: &Store,
) -> anyhow::Result<Built> {
    let index = Index {
        schema_version: 2,
        media_type: Some(MT_INDEX.into()),
        manifests: images
            .iter()
            .map(|(p, b)| Descriptor {
                platform: Some(p.clone()),
                ..b.descriptor()
            })
            .collect(),
        annotations,
    };
    let bytes = to_bytes(&index);
    let digest = store.put(&bytes)?;
    Ok(Built::index(name, repository, bytes, digest, images))
}

impl Built {
    /// An index (already stored as `bytes`, digest `digest`) of `images`.
    pub fn index(
        name: &str,
        repository: Option<String>,
        bytes: Vec<u8>,
        digest: Digest,
        images: Vec<(Platform, Built)>,
    ) -> Built {
        Built {
            name: name.to_string(),
            repository,
            manifest: Manifest {
                schema_version: 2,
                media_type: Some(MT_INDEX.into()),
                artifact_type: None,
                config: Descriptor {
                    media_type: String::new(),
                    digest: digest.clone(),
                    size: 0,
                    platform: None,
                    artifact_type: None,
                    annotations: BTreeMap::new(),
                },
                layers: vec![],
                subject: None,
                annotations: BTreeMap::new(),
            },
            manifest_bytes: bytes,
            digest,
            referrers: vec![],
            platforms: images,
        }
    }
}

/// Stores the config and manifest; returns the image.
pub fn assemble(
    name: &str,
    repository: Option<String>,
    config: &ImageConfig,
    layers: Vec<Descriptor>,
    annotations: BTreeMap<String, String>,
    store: &Store,
) -> anyhow::Result<Built> {
    let config_bytes = to_bytes(config);
    let config_digest = store.put(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MT_MANIFEST.into()),
        config: Descriptor {
            media_type: MT_CONFIG.into(),
            digest: config_digest,
            size: config_bytes.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
        layers,
        subject: None,
        annotations,
        artifact_type: None,
    };
    let manifest_bytes = to_bytes(&manifest);
    let digest = store.put(&manifest_bytes)?;
    Ok(Built {
        name: name.to_string(),
        repository,
        manifest,
        manifest_bytes,
        digest,
        referrers: vec![],
        platforms: vec![],
    })
}

/// An OCI 1.1 artifact manifest whose `subject` is an image manifest: one blob (`payload`) of
/// media type `artifact_type`, the empty config. Its blobs are in the store.
#[derive(Clone, Debug, PartialEq)]
pub struct Referrer {
    pub artifact_type: String,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub digest: Digest,
}

impl Referrer {
    /// Its descriptor as an index of referrers lists it: with `artifactType` and the
    /// manifest's annotations (distribution-spec 1.1, "Listing Referrers").
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: MT_MANIFEST.into(),
            digest: self.digest.clone(),
            size: self.manifest_bytes.len() as u64,
            platform: None,
            artifact_type: Some(self.artifact_type.clone()),
            annotations: self.manifest.annotations.clone(),
        }
    }
    /// The blob it carries.
    pub fn payload(&self) -> &Descriptor {
        &self.manifest.layers[0]
    }
    /// Every blob it names: the empty config, then the payload.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        std::iter::once(&self.manifest.config)
            .chain(self.manifest.layers.iter())
            .collect()
    }
    /// Reads a stored artifact manifest back (`None` when it is not one: no subject, no
    /// artifact type, not exactly one blob).
    pub fn parse(bytes: &[u8]) -> Option<Referrer> {
        let manifest: Manifest = serde_json::from_slice(bytes).ok()?;
        let artifact_type = manifest.artifact_type.clone()?;
        if manifest.subject.is_none() || manifest.layers.len() != 1 {
            return None;
        }
        Some(Referrer {
            artifact_type,
            manifest,
            manifest_bytes: bytes.to_vec(),
            digest: Digest::of(bytes),
        })
    }
}

/// Stores `payload` and an artifact manifest (image-spec 1.1, "Guidelines for Artifact
/// Usage": `artifactType` set, config the empty descriptor, the payload as its one layer)
/// whose `subject` is `subject`.
pub fn artifact(
    subject: &Descriptor,
    artifact_type: &str,
    payload: &[u8],
    annotations: BTreeMap<String, String>,
    store: &Store,
) -> anyhow::Result<Referrer> {
    let empty = store.put(b"{}")?;
    let blob = store.put(payload)?;
    let mut subject = subject.clone();
    subject.annotations.clear();
    subject.platform = None;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MT_MANIFEST.into()),
        artifact_type: Some(artifact_type.into()),
        config: Descriptor {
            media_type: MT_EMPTY.into(),
            digest: empty,
            size: 2,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: artifact_type.into(),
            digest: blob,
            size: payload.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }],
        subject: Some(subject),
        annotations,
    };
    let manifest_bytes = to_bytes(&manifest);
    let digest = store.put(&manifest_bytes)?;
    Ok(Referrer {
        artifact_type: artifact_type.into(),
        manifest,
        manifest_bytes,
        digest,
    })
}

/// Sanity checks that hold for any base.
pub fn check_base(
    written: &str,
    config: &ImageConfig,
    layers: &[Descriptor],
    platform: &Platform,
) -> anyhow::Result<()> {
    if config.rootfs.diff_ids.len() != layers.len() {
        bail!(usage!(
            "base `{written}`: its config lists {} diff_ids but its manifest has {} layers",
            config.rootfs.diff_ids.len(),
            layers.len()
        ));
    }
    if !config.architecture.is_empty()
        && (config.architecture != platform.architecture || config.os != platform.os)
    {
        bail!(usage!(
            "base `{written}` is for {}/{}, but this image is built for {platform}",
            config.os,
            config.architecture
        )
        .context("set `platform` in [defaults] or the image to match the base, or choose a base for that platform"));
    }
    Ok(())
}

/// Docker media types for layers become their OCI equivalents (the bytes are the same).
pub fn normalise_layer(d: &Descriptor) -> anyhow::Result<Descriptor> {
    let c = crate::compress::Compression::from_media_type(&d.media_type).ok_or_else(|| {
        usage!(
            "layer {} has media type `{}`, which imgbuild cannot read",
            d.digest,
            d.media_type
        )
    })?;
    let mut d = d.clone();
    d.media_type = c.layer_media_type().to_string();
    Ok(d)
}

/// RFC 3339 UTC timestamp for seconds since the epoch (as `date -u +%FT%TZ`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Serialises a document the one way imgbuild always does (compact, field order as declared).
pub fn to_bytes<T: Serialize>(doc: &T) -> Vec<u8> {
    serde_json::to_vec(doc).expect("image documents serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn config_keeps_unknown_fields_and_drops_null_maps() {
        let raw = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Labels":null,"Healthcheck":{"Test":["NONE"]}},"rootfs":{"type":"layers","diff_ids":[]},"author":"me"}"#;
        let c: ImageConfig = serde_json::from_str(raw).unwrap();
        assert_eq!(c.extra["author"], "me");
        assert!(c.config.extra.contains_key("Healthcheck"));
        assert_eq!(c.config.labels, None);
        assert_eq!(c.config.path_dirs(), vec!["/bin"]);
    }

    #[test]
    fn set_env_replaces_in_place() {
        let mut rc = RunConfig {
            env: Some(vec!["A=1".into(), "PATH=/bin".into()]),
            ..Default::default()
        };
        rc.set_env("PATH", "/usr/bin");
        rc.set_env("B", "2");
        assert_eq!(rc.env.unwrap(), vec!["A=1", "PATH=/usr/bin", "B=2"]);
    }
}
