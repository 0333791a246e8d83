//! Every cache key imgbuild uses, built here and nowhere else: a reader finds what a cached
//! result depends on in one place. A key is the sha256 of a canonical serialisation of its
//! material; bump a format number when what goes into a key changes meaning.

use crate::compress::{Compression, GZIP_FORMAT};
use crate::digest::{sha256_hex, HashWriter};
use crate::image::{ImageConfig, Platform};
use crate::layer::TAR_FORMAT;
use crate::spec::PythonSpec;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// sha256 (hex) over `material` as it is serialised to JSON: a large layer's inputs are never
/// held as one JSON text.
pub fn of<T: Serialize + ?Sized>(material: &T) -> String {
    let mut w = HashWriter::new(std::io::sink());
    serde_json::to_writer(&mut w, material).expect("json");
    w.finish().1.hex().to_string()
}

/// Per-path inputs too many to hold as strings (a files layer has one per file): given in key
/// order, beside a recipe's map, and never collected (a no-op rebuild of 100k files hashed them
/// from a 17 MB map, and a cold build held that map while its layer was written).
pub trait Rows {
    /// Calls `row` with each (key, value), keys ascending by their bytes; no key is one of the
    /// map's beside them.
    fn each(&self, row: &mut dyn FnMut(&str, &str));
}

/// A layer's inputs: the recipe's map and its rows, as one map in key order (serialised, the
/// same JSON as the map with the rows in it).
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub map: &'a BTreeMap<String, String>,
    pub rows: Option<&'a dyn Rows>,
}

impl<'a> From<&'a BTreeMap<String, String>> for Inputs<'a> {
    fn from(map: &'a BTreeMap<String, String>) -> Inputs<'a> {
        Inputs { map, rows: None }
    }
}

impl Inputs<'_> {
    /// Every (key, value) in key order: the map's merged with the rows.
    pub fn each(&self, f: &mut dyn FnMut(&str, &str)) {
        let mut map = self.map.iter().peekable();
        if let Some(rows) = self.rows {
            rows.each(&mut |k, v| {
                while let Some((mk, mv)) = map.next_if(|(mk, _)| mk.as_str() < k) {
                    f(mk, mv);
                }
                f(k, v);
            });
        }
        for (k, v) in map {
            f(k, v);
        }
    }

    /// How many (key, value) pairs there are.
    pub fn count(&self) -> usize {
        let mut n = 0;
        self.each(&mut |_, _| n += 1);
        n
    }

    /// The inputs as one map (for `-v`'s explanations: every row becomes two strings).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        self.each(&mut |k, v| {
            m.insert(k.to_string(), v.to_string());
        });
        m
    }
}

impl Serialize for Inputs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        let mut err = None;
        self.each(&mut |k, v| {
            if err.is_none() {
                err = m.serialize_entry(k, v).err();
            }
        });
        match err {
            Some(e) => Err(e),
            None => m.end(),
        }
    }
}

/// What a layer's cache key is the hash of.
#[derive(Serialize)]
struct LayerMaterial<'a> {
    tar_format: u32,
    compression: &'a str,
    gzip_level: u32,
    /// Only for gzip (zstd and uncompressed keys stay as they were before it existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    gzip_format: Option<u32>,
    mtime: u64,
    platform: String,
    inputs: Inputs<'a>,
}

/// The key of a layer: its recipe's inputs and the settings that change its bytes.
pub fn layer<'a>(
    compression: Compression,
    gzip_level: u32,
    mtime: u64,
    platform: Option<&Platform>,
    inputs: impl Into<Inputs<'a>>,
) -> String {
    of(&LayerMaterial {
        tar_format: TAR_FORMAT,
        compression: compression.as_str(),
        gzip_level: if compression == Compression::Gzip {
            gzip_level
        } else {
            0
        },
        gzip_format: (compression == Compression::Gzip).then_some(GZIP_FORMAT),
        mtime,
        // A layer whose bytes do not depend on the platform (`None`) has one key for all.
        platform: platform.map(|p| p.to_string()).unwrap_or_default(),
        inputs: inputs.into(),
    })
}

/// Where the last inputs of a layer are remembered (to explain a cache miss with `-v`).
pub fn last_inputs(root: &Path, image: &str, layer: &str) -> String {
    let scope = format!("{}\0{image}\0{layer}", root.display());
    sha256_hex(scope.as_bytes())[..16].to_string()
}

/// The stat cache file of the project at `root`.
pub fn stat_cache(root: &Path) -> String {
    sha256_hex(root.as_os_str().as_encoded_bytes())[..16].to_string()
}

/// The detected Python target of a base: its layers, the config values detection reads, the
/// platform, and the layer's overrides. `format` is the detector's version.
pub fn python_target(
    format: u32,
    config: &ImageConfig,
    platform: &Platform,
    py: &PythonSpec,
) -> String {
    of(&serde_json::json!({
        "format": format,
        "diff_ids": config.rootfs.diff_ids,
        "path": config.config.env_var("PATH"),
        "python_version_env": config.config.env_var("PYTHON_VERSION"),
        "platform": platform.to_string(),
        "interpreter": py.interpreter,
        "python_version": py.python_version,
        "site_dir": py.site_dir,
    }))
}

/// The files of a package release on the given indexes, by the lock's hashes.
pub fn python_index(indexes: &[String], name: &str, version: &str, hashes: &[String]) -> String {
    sha256_hex(format!("{indexes:?}\0{name}\0{version}\0{hashes:?}").as_bytes())
}

/// A wheel built from an sdist: the sdist's sha256, the target it was built for and in, the
/// exact build requirements (pins) and the backend's environment. `format` is the builder's
/// version (bump it when building changes the wheel for the same inputs).
pub fn sdist_wheel<T: Serialize, P: Serialize>(
    format: u32,
    sdist_sha256: &str,
    target: &T,
    pins: &P,
    env: &BTreeMap<String, String>,
) -> String {
    of(&serde_json::json!({
        "format": format,
        "sdist": sdist_sha256,
        "target": target,
        "pins": pins,
        "env": env,
    }))
}

/// An image that passed `build`'s checks (`verified-v1/`): what the checks read — this imgbuild,
/// the platform, the image's settings, the base's layers, every layer's key and the config.
pub fn verdict<I: Serialize>(
    platform: &Platform,
    image: &I,
    base_layers: &[String],
    layers: &[&str],
    config: &ImageConfig,
) -> String {
    of(&serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "platform": platform.to_string(),
        "image": image,
        "base": base_layers,
        "layers": layers,
        "config": of(config),
    }))
}

/// The base layers of a build root unpacked once and kept in the store (`build-roots/`).
pub fn build_root(format: u32, layers: &[String]) -> String {
    of(&serde_json::json!({ "format": format, "layers": layers }))
}

/// A source tree built into a wheel (the project itself, a workspace member): its members'
/// paths, kinds and sha256s (`d PATH`, `l PATH TARGET`, `f|x PATH SHA256`, sorted). Stands in
/// for an sdist's sha256 in `sdist_wheel`.
pub fn source_tree(format: u32, rows: &[String]) -> String {
    format!(
        "tree-{}",
        of(&serde_json::json!({ "format": format, "tree": rows }))
    )
}

/// A git source built into a wheel: the repository, the locked commit and the subdirectory. Stands in for an
/// sdist's sha256 in `sdist_wheel`.
pub fn git_source(format: u32, url: &str, commit: &str, subdirectory: Option<&str>) -> String {
    format!(
        "git-{}",
        of(
            &serde_json::json!({ "format": format, "url": url, "commit": commit, "subdirectory": subdirectory })
        )
    )
}

/// The bytecode of a python layer's sources: their paths and sha256s (sorted by path), the
/// interpreter's full version and the settings — neither the base's layers nor the platform,
/// so one compile serves every platform with the same interpreter version.
pub fn python_bytecode<S: Serialize>(
    format: u32,
    python_version: &str,
    settings: &S,
    sources: &[(&str, &str)],
) -> String {
    of(&serde_json::json!({
        "format": format,
        "python": python_version,
        "settings": settings,
        "sources": sources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Listed(Vec<(&'static str, &'static str)>);
    impl Rows for Listed {
        fn each(&self, row: &mut dyn FnMut(&str, &str)) {
            for (k, v) in &self.0 {
                row(k, v);
            }
        }
    }

    #[test]
    fn inputs_with_rows_are_the_map_with_the_rows_in_it() {
        let map: BTreeMap<String, String> = [("[layer]", "L"), ("/a", "before"), ("/m", "M")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let rows = Listed(vec![("/", "root"), ("/b", "B"), ("/n/x", "N")]);
        let inputs = Inputs {
            map: &map,
            rows: Some(&rows),
        };
        let mut whole = map.clone();
        for (k, v) in &rows.0 {
            whole.insert(k.to_string(), v.to_string());
        }
        assert_eq!(
            serde_json::to_string(&inputs).unwrap(),
            serde_json::to_string(&whole).unwrap()
        );
        assert_eq!(inputs.to_map(), whole);
        assert_eq!(inputs.count(), 6);
        assert_eq!(
            layer(Compression::Gzip, 6, 1, None, inputs),
            layer(Compression::Gzip, 6, 1, None, &whole),
            "a layer keeps its key whether its rows are streamed or held"
        );
    }

    fn material(c: Compression, gzip_format: Option<u32>) -> String {
        serde_json::to_string(&LayerMaterial {
            tar_format: TAR_FORMAT,
            compression: c.as_str(),
            gzip_level: if c == Compression::Gzip { 5 } else { 0 },
            gzip_format,
            mtime: 1,
            platform: String::new(),
            inputs: (&BTreeMap::new()).into(),
        })
        .unwrap()
    }

    #[test]
    fn a_gzip_layer_key_changes_with_the_gzip_format_and_other_keys_do_not_carry_it() {
        let inputs = BTreeMap::new();
        let gz = layer(Compression::Gzip, 5, 1, None, &inputs);
        assert_eq!(
            gz,
            of(&serde_json::from_str::<serde_json::Value>(&material(
                Compression::Gzip,
                Some(GZIP_FORMAT)
            ))
            .unwrap())
        );
        assert_ne!(
            gz,
            of(&serde_json::from_str::<serde_json::Value>(&material(
                Compression::Gzip,
                Some(GZIP_FORMAT - 1)
            ))
            .unwrap()),
            "a layer cached by the previous gzip writer is not found"
        );
        for c in [Compression::Zstd, Compression::None] {
            let m = material(c, None);
            assert!(!m.contains("gzip_format"), "{m}");
            assert_eq!(
                layer(c, 5, 1, None, &inputs),
                of(&serde_json::from_str::<serde_json::Value>(&m).unwrap())
            );
        }
    }
}
