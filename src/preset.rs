//! Built-in layer presets (`layers/*.toml`, embedded in the binary).

use crate::error::Hint;
use crate::spec::{toml_error, FileSpec};
use crate::usage;
use anyhow::Result;
use serde::Deserialize;
use std::path::Path;

const PRESETS: &[(&str, &str)] = &[
    (
        "nextjs-standalone",
        include_str!("../layers/nextjs-standalone.toml"),
    ),
    ("static-site", include_str!("../layers/static-site.toml")),
];

/// A preset: the fields of a layer, with `{workdir}` standing for the image's workdir and
/// `{webroot}` for the directory the base's web server serves (detected from the base).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub description: String,
    pub hint: Option<String>,
    pub files: Option<Vec<FileSpec>>,
    pub exclude: Option<Vec<String>>,
    pub ensure_dirs: Option<Vec<String>>,
    pub expect: Option<Vec<String>>,
    /// Directories the program writes at run time: owned by the image's `user`.
    pub writable: Option<Vec<String>>,
}

pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

pub fn get(name: &str) -> Result<Preset> {
    let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name) else {
        let mut e = usage!(
            "unknown layer preset `{name}` (presets: {})",
            names().join(", ")
        );
        if let Some(c) = crate::spec::closest(name, &names()) {
            e = e.hint(format!("did you mean `{c}`?"));
        }
        return Err(e);
    };
    toml::from_str(text)
        .map_err(|e| toml_error(text, Path::new(&format!("layers/{name}.toml")), &e).into())
}

/// Replaces `{workdir}` (default `/`) in a preset path.
pub fn expand(s: &str, workdir: &str) -> String {
    let w = workdir.trim_end_matches('/');
    let out = s.replace("{workdir}", w).replace("//", "/");
    if out.is_empty() {
        "/".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_embedded_preset_parses() {
        for n in super::names() {
            super::get(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
    }
}
