//! `imgbuild.toml`: the user's description of their images, parsed strictly.
//!
//! Unknown keys and wrong types are errors naming the file, line, key and the closest valid key.

use crate::error::UsageError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "imgbuild.toml";

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub images: BTreeMap<String, ImageSpec>,
    /// Registries reached over plain HTTP although not on loopback.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub compression: Option<String>,
    /// 1 (fastest) to 9 (smallest); default 5.
    pub gzip_level: Option<u32>,
    pub platform: Option<String>,
    /// The platforms every image is built for (an image index when there are several);
    /// `platform` is the one-platform form.
    pub platforms: Option<Vec<String>>,
    /// Write an SPDX SBOM referrer for each image (default true).
    pub sbom: Option<bool>,
    /// Write a SLSA provenance referrer for each image (default true).
    pub provenance: Option<bool>,
    /// The Debian mirror `debian` layers and bases read (else IMGBUILD_DEBIAN_MIRROR, else the
    /// host's apt sources).
    pub debian_mirror: Option<String>,
    /// A registry repository layer records and built wheels are shared through
    /// (`sharedcache`); its span points errors at the line.
    pub cache: Option<toml::Spanned<String>>,
    /// `read` (pull requests: look up, never write) or `read-write` (the default).
    pub cache_mode: Option<CacheMode>,
}

/// How a build uses the shared cache (`cache_mode`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    Read,
    #[default]
    ReadWrite,
}

impl CacheMode {
    pub fn parse(s: &str) -> Option<CacheMode> {
        match s {
            "read" => Some(CacheMode::Read),
            "read-write" => Some(CacheMode::ReadWrite),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub repository: Option<String>,
    pub base: Option<BaseSpec>,
    pub workdir: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Commands `imgbuild test` runs in the image, as `docker run IMAGE sh -c LINE` would.
    #[serde(default)]
    pub smoke: Vec<SmokeSpec>,
    /// `imgbuild test` with a read-only root filesystem (`docker run --read-only`).
    #[serde(default)]
    pub read_only: bool,
    /// docker's `HEALTHCHECK`: written into the config; `imgbuild test` runs its test once.
    pub healthcheck: Option<HealthSpec>,
    /// docker's `STOPSIGNAL`, e.g. "SIGTERM".
    pub stop_signal: Option<String>,
    /// docker's `VOLUME`s: directories the container mounts volumes on.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Check at build time that the start command (`entrypoint`, else `cmd`) can run in the
    /// image; `false` for an image whose command is given at run time.
    pub start_check: Option<bool>,
    /// Overrides `[defaults] sbom`: an SPDX SBOM referrer for this image.
    pub sbom: Option<bool>,
    /// Overrides `[defaults] provenance`: a SLSA provenance referrer for this image.
    pub provenance: Option<bool>,
    pub compression: Option<String>,
    pub gzip_level: Option<u32>,
    pub platform: Option<String>,
    /// Overrides `[defaults] platforms` (and `platform`) for this image.
    pub platforms: Option<Vec<String>>,
    #[serde(default)]
    pub layers: Vec<LayerSpec>,
}

/// `base = "NAME"` (scratch, `oci:`, `image:`, a catalog name or a registry reference),
/// `base = { debian = "bookworm", packages = [...] }` (built from the Debian archive), or
/// `base = { "linux/amd64" = "NAME", "linux/arm64" = "NAME" }` (a base per platform).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum BaseSpec {
    Name(String),
    Debian(DebianBase),
    PerPlatform(BTreeMap<String, String>),
}

/// A base built from the Debian archive: the release's essential and required packages plus
/// `packages`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DebianBase {
    /// The release (codename), e.g. "bookworm" or "trixie".
    pub debian: String,
    #[serde(default)]
    pub packages: Vec<String>,
    /// The OpenPGP keyring that signs the archive (default: the host's debian-archive-keyring).
    pub keyring: Option<String>,
}

impl BaseSpec {
    /// The base as a name; `None` for a base from the Debian archive.
    pub fn name(&self) -> Option<&str> {
        match self {
            BaseSpec::Name(n) => Some(n),
            BaseSpec::Debian(_) | BaseSpec::PerPlatform(_) => None,
        }
    }
    /// How errors and the image's history name the base.
    pub fn label(&self) -> String {
        match self {
            BaseSpec::Name(n) => n.clone(),
            BaseSpec::Debian(d) => format!("debian:{}", d.debian),
            BaseSpec::PerPlatform(m) => m
                .iter()
                .map(|(p, n)| format!("{p}={n}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

// A string or a table, each with its own errors (an untagged enum would say only "did not
// match any variant", without the unknown key).
impl<'de> Deserialize<'de> for BaseSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BaseSpec, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BaseSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a base name, a table `{ debian = \"RELEASE\", packages = [...] }`, or a base per platform `{ \"linux/amd64\" = \"NAME\", \"linux/arm64\" = \"NAME\" }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BaseSpec, E> {
                Ok(BaseSpec::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<BaseSpec, A::Error> {
                use serde::de::Error;
                let mut t = toml::Table::new();
                while let Some((k, v)) = m.next_entry::<String, toml::Value>()? {
                    t.insert(k, v);
                }
                // Keys with a `/` are platforms: each names that platform's base.
                if t.keys().any(|k| k.contains('/')) {
                    let mut out = BTreeMap::new();
                    for (k, v) in t {
                        match v {
                            toml::Value::String(n) => {
                                out.insert(k, n);
                            }
                            _ => {
                                return Err(A::Error::custom(format!(
                                    "the base for `{k}` must be a base name (a string), e.g. \"oci:bases/arm64:tag\""
                                )))
                            }
                        }
                    }
                    return Ok(BaseSpec::PerPlatform(out));
                }
                DebianBase::deserialize(toml::Value::Table(t))
                    .map(BaseSpec::Debian)
                    .map_err(|e| A::Error::custom(e.message()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One smoke command: a line, or `{ run = "LINE", entrypoint = false }` for a line that must
/// bypass the image's entrypoint (`docker run --entrypoint /bin/sh IMAGE -c LINE`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum SmokeSpec {
    Line(String),
    Table(SmokeTable),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmokeTable {
    pub run: String,
    /// Run through the image's entrypoint (default true, as `docker run IMAGE CMD`).
    #[serde(default = "yes")]
    pub entrypoint: bool,
}

fn yes() -> bool {
    true
}

impl SmokeSpec {
    /// The command line.
    pub fn line(&self) -> &str {
        match self {
            SmokeSpec::Line(l) => l,
            SmokeSpec::Table(t) => &t.run,
        }
    }
    /// Whether the image's entrypoint wraps it.
    pub fn through_entrypoint(&self) -> bool {
        match self {
            SmokeSpec::Line(_) => true,
            SmokeSpec::Table(t) => t.entrypoint,
        }
    }
}

/// docker's `HEALTHCHECK`: `test` is a shell line (`CMD-SHELL`) or an argv (`CMD`); durations
/// as docker writes them (`30s`, `1m30s`, `500ms`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    pub test: HealthTest,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub retries: Option<u32>,
}

impl HealthSpec {
    /// docker's `Healthcheck` object of the image config: `Test` as `["CMD-SHELL", line]` or
    /// `["CMD", argv...]`, durations in nanoseconds.
    pub fn to_config(&self) -> Result<serde_json::Value, String> {
        let test: Vec<String> = match &self.test {
            HealthTest::Shell(l) => vec!["CMD-SHELL".into(), l.clone()],
            HealthTest::Exec(v) if v.is_empty() => return Err("healthcheck `test` is empty".into()),
            HealthTest::Exec(v) => std::iter::once("CMD".to_string())
                .chain(v.iter().cloned())
                .collect(),
        };
        let mut m = serde_json::Map::new();
        m.insert("Test".into(), test.into());
        for (key, v) in [
            ("Interval", &self.interval),
            ("Timeout", &self.timeout),
            ("StartPeriod", &self.start_period),
        ] {
            if let Some(d) = v {
                let ns = duration_ns(d)
                    .map_err(|e| format!("healthcheck {}: {e}", key.to_lowercase()))?;
                m.insert(key.into(), ns.into());
            }
        }
        if let Some(r) = self.retries {
            m.insert("Retries".into(), r.into());
        }
        Ok(serde_json::Value::Object(m))
    }
}

/// A duration as docker writes them (`1h`, `1m30s`, `30s`, `500ms`, `250us`, `10ns`), in
/// nanoseconds.
pub fn duration_ns(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a duration (use e.g. 30s, 1m30s, 500ms)");
    let mut total: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if n == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return Err(bad()),
        };
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum HealthTest {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    pub name: String,
    /// A built-in preset from `layers/` whose fields this layer may override.
    pub preset: Option<String>,
    /// Directory (relative to the project) that relative `from` paths start from.
    pub root: Option<String>,
    pub files: Option<Vec<FileSpec>>,
    pub exclude: Option<Vec<String>>,
    pub ensure_dirs: Option<Vec<String>>,
    pub expect: Option<Vec<String>>,
    /// Directories the program writes at run time: made (or re-owned) for the image's `user`.
    pub writable: Option<Vec<String>>,
    /// `uid:gid` for every entry of the layer.
    pub owner: Option<String>,
    pub python: Option<PythonSpec>,
    /// Debian packages (and what they depend on) unpacked into the layer.
    pub debian: Option<DebianSpec>,
    /// Printed when an expected path is missing: how it is usually produced.
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub from: String,
    pub to: String,
    /// Octal permission bits for regular files, e.g. "0644".
    pub mode: Option<String>,
    pub owner: Option<String>,
    /// A missing source is skipped instead of failing the build.
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PythonSpec {
    /// `uv.lock`, `pylock.toml` or a hashed `requirements.txt`.
    pub lock: String,
    #[serde(default)]
    pub require: Vec<String>,
    #[serde(default)]
    pub scripts: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub extras: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where two distributions install the same path with different bytes: the winner's
    /// (key) file is kept, the loser's (value) left out and dropped from its RECORD.
    #[serde(default)]
    pub prefer: std::collections::BTreeMap<String, String>,
    /// uv's `--no-install-project` when false (default true).
    pub install_project: Option<bool>,
    /// uv's `--no-install-workspace` when false (default true).
    pub install_workspace: Option<bool>,
    /// uv's `--package`: workspace members to install instead of the root.
    #[serde(default)]
    pub packages: Vec<String>,
    /// uv's `--all-packages`.
    #[serde(default)]
    pub all_packages: bool,
    pub index_url: Option<String>,
    pub find_links: Option<String>,
    /// Overrides of what is detected from the base image.
    pub interpreter: Option<String>,
    pub python_version: Option<String>,
    pub site_dir: Option<String>,
    pub owner: Option<String>,
    /// Packages built from their sdist even when the lock has a wheel (uv's `no-binary-package`).
    #[serde(default)]
    pub no_binary: Vec<String>,
    /// How sdists are built (PEP 517, inside a container of the target).
    pub build: Option<BuildSpec>,
    /// `bytecode = true | { optimize = [0, 1], invalidation = "checked-hash" }`: every `.py`
    /// the layer installs compiled by the image's interpreter (`python::bytecode`).
    #[serde(
        default,
        deserialize_with = "bytecode",
        skip_serializing_if = "Option::is_none"
    )]
    pub bytecode: Option<BytecodeSpec>,
}

/// How a python layer's bytecode is compiled (`bytecode = true` is the default table).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BytecodeSpec {
    /// Optimisation levels, each compiled (`0` → `.pyc`, `1` → `.opt-1.pyc`, `2` → `.opt-2.pyc`).
    #[serde(default = "optimize_default")]
    pub optimize: Vec<u8>,
    /// PEP 552 invalidation mode of the pycs.
    #[serde(default)]
    pub invalidation: Invalidation,
}

impl Default for BytecodeSpec {
    fn default() -> Self {
        BytecodeSpec {
            optimize: optimize_default(),
            invalidation: Invalidation::default(),
        }
    }
}

fn optimize_default() -> Vec<u8> {
    vec![0]
}

/// PEP 552: `checked-hash` pycs are checked against their source's hash at import;
/// `unchecked-hash` ones are trusted as they are.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Invalidation {
    #[default]
    CheckedHash,
    UncheckedHash,
}

impl Invalidation {
    pub fn as_str(self) -> &'static str {
        match self {
            Invalidation::CheckedHash => "checked-hash",
            Invalidation::UncheckedHash => "unchecked-hash",
        }
    }
}

/// `bytecode = true | false | { ... }`; levels checked (0, 1 or 2, at least one), sorted.
fn bytecode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<BytecodeSpec>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<BytecodeSpec>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(
                "true, false or a table `{ optimize = [0, 1], invalidation = \"checked-hash\" }`",
            )
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(v.then(BytecodeSpec::default))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let mut b: BytecodeSpec =
                Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            if b.optimize.is_empty() {
                return Err(serde::de::Error::custom(
                    "bytecode: `optimize` lists no level; give at least one of 0, 1, 2 (or `bytecode = false`)",
                ));
            }
            if let Some(l) = b.optimize.iter().find(|l| **l > 2) {
                return Err(serde::de::Error::custom(format!(
                    "bytecode: optimize level {l} does not exist; Python's levels are 0, 1 and 2"
                )));
            }
            b.optimize.sort();
            b.optimize.dedup();
            Ok(Some(b))
        }
    }
    d.deserialize_any(V)
}

/// `debian = { packages = [...] }` of a layer: packages of the base's Debian release.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DebianSpec {
    pub packages: Vec<String>,
    /// The OpenPGP keyring that signs the archive (default: the host's
    /// debian-archive-keyring), relative to the project.
    pub keyring: Option<String>,
}

/// `build = { env = { ... }, base = "...", debian = [...] }` of a python layer.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// Environment variables of the build backend's process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The image whose root filesystem sdist builds run in instead of the layer's base (written
    /// like an image's `base`: e.g. one with compilers and headers). Its Python must be the
    /// target's minor version, on the same architecture, with a libc no newer than the target's.
    pub base: Option<String>,
    /// Debian packages added to the build root only (compilers, `-dev` packages); they never
    /// reach the image.
    #[serde(default)]
    pub debian: Vec<String>,
}

impl Spec {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Spec, UsageError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UsageError::new(format!("cannot read {}: {e}", path.display()))
                .hint("run imgbuild in a project with an imgbuild.toml, or pass --config FILE")
        })?;
        Spec::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Spec, UsageError> {
        let spec: Spec = toml::from_str(text).map_err(|e| toml_error(text, path, &e))?;
        for (name, img) in &spec.images {
            let mut seen = std::collections::HashSet::new();
            for l in &img.layers {
                if !seen.insert(l.name.as_str()) {
                    return Err(UsageError::new(format!(
                        "{}: image `{name}` has two layers named `{}`",
                        path.display(),
                        l.name
                    )));
                }
            }
        }
        Ok(spec)
    }

    /// The image called `name`, or an error listing the images there are.
    pub fn image(&self, name: &str, path: &Path) -> Result<&ImageSpec, UsageError> {
        self.images.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.images.keys().map(|s| s.as_str()).collect();
            let mut e = UsageError::new(format!("no image `{name}` in {}", path.display()));
            e = if names.is_empty() {
                e.hint("define one under [images.NAME]")
            } else {
                e.hint(format!("images defined there: {}", names.join(", ")))
            };
            if let Some(c) = closest(name, &names) {
                e = e.hint(format!("did you mean `{c}`?"));
            }
            e
        })
    }
}

/// Turns a toml/serde error into `file:line:col: message`, with a did-you-mean for unknown keys.
pub fn toml_error(text: &str, path: &Path, e: &toml::de::Error) -> UsageError {
    let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
    let msg = e.message().trim().to_string();
    let mut out = UsageError::new(format!(
        "{}:{line}:{col}: {}",
        path.display(),
        msg.replace("field", "key")
    ));
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (key, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let valid: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        if let Some(c) = closest(key, &valid) {
            out = out.hint(format!("did you mean `{c}`?"));
        } else if !valid.is_empty() {
            out = out.hint(format!("valid keys here: {}", valid.join(", ")));
        }
    }
    if line > 0 {
        if let Some(src) = text.lines().nth(line - 1) {
            out = out.context(format!("{line:>4} | {src}"));
        }
    }
    out
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// The candidate closest to `word`, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

/// Finds `imgbuild.toml` in `start` or its ancestors.
pub fn find(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join(FILE_NAME))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_line_and_closest_key() {
        let text = "[images.api]\nrepositry = \"x\"\n";
        let e = Spec::parse(text, Path::new("imgbuild.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("imgbuild.toml:2:1"), "{e}");
        assert!(e.contains("unknown key `repositry`"), "{e}");
        assert!(e.contains("did you mean `repository`?"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let text = "[images.api]\ncmd = \"uvicorn\"\n";
        let e = Spec::parse(text, Path::new("imgbuild.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("imgbuild.toml:2:7"), "{e}");
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn a_base_from_the_archive_is_a_table_with_its_own_key_errors() {
        let s = Spec::parse(
            "[images.a]\nbase = { debian = \"bookworm\", packages = [\"python3\"] }\n[images.b]\nbase = \"scratch\"\n[[images.b.layers]]\nname = \"s\"\ndebian = { packages = [\"libpq5\"] }\n",
            Path::new("imgbuild.toml"),
        )
        .unwrap();
        match &s.images["a"].base {
            Some(BaseSpec::Debian(d)) => {
                assert_eq!(d.debian, "bookworm");
                assert_eq!(d.packages, vec!["python3"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.images["b"].base.as_ref().unwrap().name(), Some("scratch"));
        assert_eq!(
            s.images["b"].layers[0].debian.as_ref().unwrap().packages,
            vec!["libpq5"]
        );
        let e = Spec::parse(
            "[images.a]\nbase = { debain = \"bookworm\" }\n",
            Path::new("imgbuild.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("imgbuild.toml:2:"), "{e}");
        assert!(e.contains("unknown key `debain`"), "{e}");
        assert!(e.contains("did you mean `debian`?"), "{e}");
    }

    #[test]
    fn bytecode_is_a_bool_or_a_table() {
        let py = |v: &str| {
            let text = format!("[images.a]\n[[images.a.layers]]\nname = \"deps\"\npython = {{ lock = \"uv.lock\", bytecode = {v} }}\n");
            Spec::parse(&text, Path::new("imgbuild.toml"))
                .map(|s| s.images["a"].layers[0].python.clone().unwrap().bytecode)
                .map_err(|e| e.to_string())
        };
        assert_eq!(py("false").unwrap(), None);
        assert_eq!(py("true").unwrap(), Some(BytecodeSpec::default()));
        let b = py("{ optimize = [1, 0, 1], invalidation = \"unchecked-hash\" }")
            .unwrap()
            .unwrap();
        assert_eq!(b.optimize, vec![0, 1]);
        assert_eq!(b.invalidation, Invalidation::UncheckedHash);
        let e = py("{ optimize = [3] }").unwrap_err();
        assert!(
            e.contains("imgbuild.toml:4:") && e.contains("optimize level 3 does not exist"),
            "{e}"
        );
        let e = py("{ optimize = [] }").unwrap_err();
        assert!(e.contains("lists no level"), "{e}");
        let e = py("{ invalidation = \"timestamp\" }").unwrap_err();
        assert!(
            e.contains("imgbuild.toml:4:") && e.contains("checked-hash"),
            "{e}"
        );
        let e = py("{ optimise = [0] }").unwrap_err();
        assert!(e.contains("unknown key `optimise`"), "{e}");
        let e = py("\"yes\"").unwrap_err();
        assert!(
            e.contains("imgbuild.toml:4:") && e.contains("true, false or a table"),
            "{e}"
        );
    }

    #[test]
    fn design_example_parses() {
        let text = r#"
[defaults]
compression = "gzip"
platform = "linux/amd64"
[images.api]
repository = "registry.example.com/acme/job-agent-api"
base = "oci:fixtures/base/python:3.11"
workdir = "/app"
cmd = ["uvicorn", "src.main:app"]
env = { PYTHONUNBUFFERED = "1" }
user = "1000:1000"
ports = ["8000/tcp"]
smoke = ["alembic --help"]
[[images.api.layers]]
name = "python-deps"
python = { lock = "uv.lock", require = ["alembic.config"], scripts = ["alembic"] }
[[images.api.layers]]
name = "app"
files = [{ from = "src", to = "/app/src" }]
exclude = ["**/__pycache__"]
"#;
        let s = Spec::parse(text, Path::new("imgbuild.toml")).unwrap();
        assert_eq!(s.images["api"].layers.len(), 2);
        assert_eq!(
            s.images["api"].layers[0].python.as_ref().unwrap().bytecode,
            None
        );
        assert_eq!(
            s.images["api"].layers[0].python.as_ref().unwrap().scripts,
            vec!["alembic"]
        );
    }
}
