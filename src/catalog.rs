//! The catalog of well-known bases (`base-images/*.toml`, embedded): `base = "python-3.13-slim"`
//! names a registry reference plus the facts imgbuild would otherwise detect in the image.

use crate::error::Hint;
use crate::spec::{closest, toml_error};
use crate::usage;
use anyhow::Result;
use serde::Deserialize;
use std::path::Path;

const ENTRIES: &[(&str, &str)] = &[
    (
        "distroless-python3",
        include_str!("../base-images/distroless-python3.toml"),
    ),
    (
        "node-20-slim",
        include_str!("../base-images/node-20-slim.toml"),
    ),
    (
        "node-22-slim",
        include_str!("../base-images/node-22-slim.toml"),
    ),
    (
        "python-3.11-alpine",
        include_str!("../base-images/python-3.11-alpine.toml"),
    ),
    (
        "python-3.11-bookworm",
        include_str!("../base-images/python-3.11-bookworm.toml"),
    ),
    (
        "python-3.11-slim",
        include_str!("../base-images/python-3.11-slim.toml"),
    ),
    (
        "python-3.12-alpine",
        include_str!("../base-images/python-3.12-alpine.toml"),
    ),
    (
        "python-3.12-bookworm",
        include_str!("../base-images/python-3.12-bookworm.toml"),
    ),
    (
        "python-3.12-slim",
        include_str!("../base-images/python-3.12-slim.toml"),
    ),
    (
        "python-3.13-alpine",
        include_str!("../base-images/python-3.13-alpine.toml"),
    ),
    (
        "python-3.13-bookworm",
        include_str!("../base-images/python-3.13-bookworm.toml"),
    ),
    (
        "python-3.13-slim",
        include_str!("../base-images/python-3.13-slim.toml"),
    ),
];

/// One catalog entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub description: String,
    /// Registry reference (a tag; the digest is pinned in imgbuild.lock on first use).
    pub reference: String,
    pub interpreter: Option<String>,
    /// `3.X`: the patch level comes from the image itself.
    pub python_version: Option<String>,
    pub site_dir: Option<String>,
    pub scripts_dir: Option<String>,
    /// `glibc` or `musl`.
    pub libc: String,
    pub libc_version: String,
    /// Whether the image has /bin/sh (smoke commands are split shell-style otherwise).
    pub shell: bool,
}

pub fn names() -> Vec<&'static str> {
    ENTRIES.iter().map(|(n, _)| *n).collect()
}

/// The entry called `name`, if there is one.
pub fn get(name: &str) -> Option<Result<Entry>> {
    let (_, text) = ENTRIES.iter().find(|(n, _)| *n == name)?;
    Some(
        toml::from_str(text).map_err(|e| {
            toml_error(text, Path::new(&format!("base-images/{name}.toml")), &e).into()
        }),
    )
}

/// A base written without `oci:`, `/` or `:` that is not in the catalog: a helpful error.
pub fn unknown(name: &str) -> anyhow::Error {
    let mut e = usage!("base `{name}` is not in the catalog of well-known bases");
    if let Some(c) = closest(name, &names()) {
        e = e.hint(format!("did you mean `{c}`?"));
    }
    e.hint(format!(
        "catalog: {}; or write a registry reference (host/repo:tag), `oci:DIR[:TAG]` or `scratch`",
        names().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_catalog_entry_parses_and_python_entries_are_complete() {
        for n in super::names() {
            let e = super::get(n)
                .unwrap()
                .unwrap_or_else(|e| panic!("{n}: {e}"));
            if n.starts_with("python") || n.starts_with("distroless-python") {
                let v = e.python_version.clone().unwrap();
                assert!(
                    e.interpreter
                        .as_ref()
                        .unwrap()
                        .ends_with(&format!("python{v}")),
                    "{n}"
                );
                assert!(
                    e.site_dir.as_ref().unwrap().contains(&format!("python{v}")),
                    "{n}"
                );
            }
        }
    }
}
