//! How an image is named outside imgbuild.toml — `oci:DIR[:TAG]`, `docker-archive:FILE`, a
//! registry reference, or an image of the project — parsed once, here; and the `Destination`
//! trait every output implements (OCI layout, docker-archive, registry).

use crate::image::Built;
use crate::store::Store;
use crate::usage;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// A parsed image target.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// `oci:DIR[:TAG]`, DIR resolved against the directory given to `parse`.
    Layout { dir: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE` (FILE may be empty: the caller says what that means).
    Archive { file: PathBuf, written: String },
    /// A registry reference: `host/repo[:tag][@sha256:…]`, `repo:tag`, …
    Reference(String),
    /// A name of an image in imgbuild.toml.
    Image(String),
}

impl Target {
    /// Parses `s`; relative paths against `dir`. A word without `/`, `:` or `@` is an image
    /// name; a word with them is a reference unless `is_image` says the project has an image
    /// of that name.
    pub fn parse(s: &str, dir: &Path, is_image: impl Fn(&str) -> bool) -> Target {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (d, tag) = split_ref(rest);
            return Target::Layout {
                dir: dir.join(d),
                tag,
            };
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            return Target::Archive {
                file: dir.join(rest),
                written: rest.to_string(),
            };
        }
        if s.contains(['/', ':', '@']) && !is_image(s) {
            return Target::Reference(s.to_string());
        }
        Target::Image(s.to_string())
    }
}

/// Splits `DIR[:TAG]` (the part after `oci:`); a tag has no `/`.
pub fn split_ref(s: &str) -> (PathBuf, Option<String>) {
    match s.rsplit_once(':') {
        Some((d, t)) if !t.contains('/') && !d.is_empty() => {
            (PathBuf::from(d), Some(t.to_string()))
        }
        _ => (PathBuf::from(s), None),
    }
}

/// `--output` parsed: the targets an image can be written to without a registry.
pub enum Output {
    Layout { dir: PathBuf, tag: String },
    DockerArchive { file: PathBuf },
}

impl Output {
    /// Parses `oci:DIR[:TAG]` or `docker-archive:FILE`; relative paths against `cwd`.
    pub fn parse(s: &str, default_tag: &str, cwd: &Path) -> Result<Output> {
        match Target::parse(s, cwd, |_| false) {
            Target::Layout { dir, tag } => Ok(Output::Layout {
                dir,
                tag: tag.unwrap_or_else(|| default_tag.to_string()),
            }),
            Target::Archive { written, .. } if written.is_empty() => Err(usage!(
                "--output docker-archive: needs a file name, e.g. docker-archive:api.tar"
            )),
            Target::Archive { file, .. } => Ok(Output::DockerArchive { file }),
            _ => Err(usage!(
                "unknown --output `{s}`: use oci:DIR[:TAG] or docker-archive:FILE"
            )),
        }
    }
}

/// What a destination reports back.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// A reference that names the written image, e.g. `oci:DIR:TAG` or `repo@sha256:…`.
    pub reference: String,
    pub uploaded_bytes: u64,
    pub skipped_blobs: usize,
    /// Of the skipped blobs, those mounted from another repository of the same registry.
    pub mounted_blobs: usize,
    /// Bytes of the image's referrers (SBOM, provenance) uploaded; not in `uploaded_bytes`,
    /// which counts the image's own blobs.
    pub referrer_bytes: u64,
}

/// Where a built image goes; one implementation per kind (`layout::LayoutDest`,
/// `archive::ArchiveDest`, `registry::RegistryDest`).
pub trait Destination {
    fn describe(&self) -> String;
    fn write(&self, img: &Built, store: &Store) -> Result<Written>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ref_takes_the_tag_after_the_last_colon() {
        assert_eq!(
            split_ref("dir/x:3.11"),
            (PathBuf::from("dir/x"), Some("3.11".to_string()))
        );
        assert_eq!(split_ref("dir/x"), (PathBuf::from("dir/x"), None));
        assert_eq!(split_ref("a:b/c"), (PathBuf::from("a:b/c"), None));
    }

    #[test]
    fn targets_are_told_apart() {
        let d = Path::new("/w");
        let t = |s| Target::parse(s, d, |n| n == "my:img");
        assert_eq!(
            t("oci:out:api"),
            Target::Layout {
                dir: "/w/out".into(),
                tag: Some("api".into())
            }
        );
        assert!(matches!(t("docker-archive:a.tar"), Target::Archive { .. }));
        assert_eq!(
            t("r.example.com/a@sha256:00"),
            Target::Reference("r.example.com/a@sha256:00".into())
        );
        assert_eq!(t("api"), Target::Image("api".into()));
        assert_eq!(t("my:img"), Target::Image("my:img".into()));
    }
}
