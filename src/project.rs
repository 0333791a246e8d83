//! A project: the directory holding `imgbuild.toml` and its parsed spec, and the rules every
//! command shares about it — where the blob store is, the source date, the git revision, the
//! platform of an image, and the order its images build in (`base = "image:OTHER"`).

use crate::error::Hint;
use crate::image::Platform;
use crate::spec::{ImageSpec, Spec};
use crate::store::Store;
use crate::usage;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A project: the directory holding `imgbuild.toml`, and the parsed spec.
pub struct Project {
    pub root: PathBuf,
    pub spec_path: PathBuf,
    pub spec: Spec,
    /// The store, opened once: its record of the blobs this process wrote and hashed
    /// (`Store::is_fresh`) must be the one the output is written from, or every new layer is
    /// read and hashed again on its way into the layout.
    store: std::sync::OnceLock<Store>,
}

impl Project {
    /// Loads `config` if given, else the `imgbuild.toml` in `cwd` or its ancestors.
    pub fn load(cwd: &Path, config: Option<&Path>) -> Result<Project> {
        let spec_path = match config {
            Some(c) => cwd.join(c),
            None => crate::spec::find(cwd).ok_or_else(|| {
                usage!(
                    "no imgbuild.toml in {} or its parent directories",
                    cwd.display()
                )
                .context("create one (see `imgbuild --help` and the README), or pass --config FILE")
            })?,
        };
        let spec = Spec::load(&spec_path)?;
        let root = spec_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| cwd.to_path_buf());
        let root = root.canonicalize().unwrap_or(root);
        Ok(Project {
            root,
            spec_path,
            spec,
            store: std::sync::OnceLock::new(),
        })
    }

    /// `.imgbuild/` in the project: default output layout and last-build records.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".imgbuild")
    }

    /// The blob store of this project (see `store_dir`), opened on the first call; later calls
    /// share it.
    pub fn store(&self) -> Result<Store> {
        if let Some(s) = self.store.get() {
            return Ok(s.clone());
        }
        let s = Store::open(store_dir(Some(self), Path::new(".")))?;
        // Two threads may both open it: the first one set is kept, the other dropped.
        Ok(self.store.get_or_init(|| s).clone())
    }

    /// The image `name`, or a usage error naming the images there are.
    pub fn image(&self, name: &str) -> Result<&ImageSpec> {
        Ok(self.spec.image(name, &self.spec_path)?)
    }

    /// The platforms an image is built for, in order: its own `platforms` (or `platform`),
    /// else the defaults', else this machine's. Several give an image index.
    pub fn platforms(&self, img: &ImageSpec) -> Result<Vec<Platform>> {
        let both = |one: &Option<String>, many: &Option<Vec<String>>, table: &str| {
            if one.is_some() && many.is_some() {
                bail!(usage!(
                    "{}: {table} sets both `platform` and `platforms`; keep one (`platform = \"P\"` is `platforms = [\"P\"]`)",
                    self.spec_path.display()
                ));
            }
            Ok(many.clone().or_else(|| one.clone().map(|p| vec![p])))
        };
        let written = match both(&img.platform, &img.platforms, "an image")? {
            Some(w) => Some(w),
            None => both(
                &self.spec.defaults.platform,
                &self.spec.defaults.platforms,
                "[defaults]",
            )?,
        };
        match written {
            Some(list) => self.parse_platforms(&list, "in"),
            None => Ok(vec![Platform::host()]),
        }
    }

    /// The base of `img` on `platform`: a per-platform table's entry for it, else the base as
    /// written (`None`: scratch).
    pub fn base_for(
        &self,
        img: &ImageSpec,
        platform: &Platform,
    ) -> Result<Option<crate::spec::BaseSpec>> {
        let Some(crate::spec::BaseSpec::PerPlatform(m)) = &img.base else {
            return Ok(img.base.clone());
        };
        for (k, name) in m {
            let p = Platform::parse_named(
                k,
                &format!("the base for `{k}` in {}", self.spec_path.display()),
            )?;
            if p.matches(platform) {
                return Ok(Some(crate::spec::BaseSpec::Name(name.clone())));
            }
        }
        bail!(usage!(
            "{}: the image's base table names no base for {platform} (it has: {})",
            self.spec_path.display(),
            m.keys().cloned().collect::<Vec<_>>().join(", ")
        )
        .context(format!(
            "add `\"{platform}\" = \"BASE\"` to the image's `base`, or leave {platform} out of `platforms`"
        )))
    }

    /// `list` parsed (each with `Platform::parse_named`), none twice and not empty; `how`
    /// says where they were written in messages.
    pub fn parse_platforms(&self, list: &[String], how: &str) -> Result<Vec<Platform>> {
        if list.is_empty() {
            bail!(usage!(
                "{}: `platforms` is empty; list at least one, e.g. [\"linux/amd64\"]",
                self.spec_path.display()
            ));
        }
        Platform::parse_list(list, |p| {
            format!("platform `{p}` {how} {}", self.spec_path.display())
        })
    }

    /// `given` (every image when empty), each checked to be an image of the project.
    pub fn images(&self, given: &[String]) -> Result<Vec<String>> {
        let names: Vec<String> = if given.is_empty() {
            self.spec.images.keys().cloned().collect()
        } else {
            given.to_vec()
        };
        if names.is_empty() {
            bail!(usage!("{} defines no images", self.spec_path.display()));
        }
        for n in &names {
            self.image(n)?;
        }
        Ok(names)
    }

    /// `names` (every image when empty) with the images they build on (`base = "image:…"`)
    /// first, each once. A missing image or a cycle is reported before anything is built.
    pub fn build_order(&self, names: &[String]) -> Result<Vec<String>> {
        fn visit(
            p: &Project,
            name: &str,
            path: &mut Vec<String>,
            out: &mut Vec<String>,
        ) -> Result<()> {
            if out.iter().any(|n| n == name) {
                return Ok(());
            }
            if let Some(i) = path.iter().position(|x| x == name) {
                let mut cycle = path[i..].to_vec();
                cycle.push(name.to_string());
                bail!(usage!(
                    "images build on each other in a cycle: {}",
                    cycle.join(" → ")
                )
                .hint("one of them must start from a real base (scratch, oci:…, a registry reference)"));
            }
            let img = p.image(name)?;
            if let Some(other) = img
                .base
                .as_ref()
                .and_then(|b| b.name())
                .and_then(|b| b.strip_prefix("image:"))
            {
                p.spec
                    .image(other, &p.spec_path)
                    .map_err(|e| usage!("image `{name}`: base `image:{other}`: {}", e.message))?;
                path.push(name.to_string());
                visit(p, other, path, out)?;
                path.pop();
            }
            out.push(name.to_string());
            Ok(())
        }
        let names: Vec<String> = if names.is_empty() {
            self.spec.images.keys().cloned().collect()
        } else {
            names.to_vec()
        };
        if names.is_empty() {
            bail!(usage!("{} defines no images", self.spec_path.display()));
        }
        let mut out = Vec::new();
        for n in &names {
            visit(self, n, &mut Vec::new(), &mut out)?;
        }
        Ok(out)
    }
}

/// The one rule for where the blob store is: `$IMGBUILD_CACHE`; else the project's
/// `.imgbuild/cache`; with no project, the user's cache directory (`$XDG_CACHE_HOME/imgbuild`,
/// `~/.cache/imgbuild`), else `.imgbuild/cache` under `cwd`.
pub fn store_dir(project: Option<&Project>, cwd: &Path) -> PathBuf {
    store_dir_with(|k| std::env::var_os(k), project, cwd)
}

/// `store_dir` with the environment read through `var`. A variable set to the empty string
/// counts as unset (as the XDG base directory spec says of `XDG_CACHE_HOME`): an empty
/// `IMGBUILD_CACHE` made the working directory the store.
fn store_dir_with(
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
    project: Option<&Project>,
    cwd: &Path,
) -> PathBuf {
    let var = |k: &str| var(k).filter(|v| !v.is_empty());
    if let Some(c) = var("IMGBUILD_CACHE") {
        return PathBuf::from(c);
    }
    if let Some(p) = project {
        return p.state_dir().join("cache");
    }
    if let Some(x) = var("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("imgbuild");
    }
    if let Some(h) = var("HOME") {
        return PathBuf::from(h).join(".cache/imgbuild");
    }
    cwd.join(".imgbuild/cache")
}

/// The one source-date rule: `SOURCE_DATE_EPOCH`, else the git HEAD commit time of `root`
/// (when given and a git checkout), else 0.
pub fn source_date(root: Option<&Path>) -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .map_err(|_| usage!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"));
    }
    Ok(root
        .and_then(|r| git(r, &["log", "-1", "--format=%ct"]))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// The git HEAD commit of `root`, when it is a git checkout.
pub fn revision(root: &Path) -> Option<String> {
    git(root, &["rev-parse", "HEAD"])
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    // Not a checkout: no `.git` in `root` or above it (and no GIT_DIR pointing elsewhere).
    // Asking git would only fail, after a process start of several milliseconds (a no-op
    // rebuild takes tens).
    let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let checkout = std::env::var_os("GIT_DIR").is_some()
        || abs
            .ancestors()
            .any(|d| std::fs::symlink_metadata(d.join(".git")).is_ok());
    if !checkout {
        return None;
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn empty_cache_variables_count_as_unset() {
        let cwd = Path::new("/work");
        fn env(
            set: &'static [(&'static str, &'static str)],
        ) -> impl Fn(&str) -> Option<std::ffi::OsString> {
            move |k: &str| {
                set.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        }
        const EMPTY: &[(&str, &str)] = &[
            ("IMGBUILD_CACHE", ""),
            ("XDG_CACHE_HOME", ""),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            store_dir_with(env(EMPTY), None, cwd),
            Path::new("/home/u/.cache/imgbuild")
        );
        assert_eq!(
            store_dir_with(env(&[("IMGBUILD_CACHE", "/c")]), None, cwd),
            Path::new("/c")
        );
        assert_eq!(
            store_dir_with(env(&[("HOME", "")]), None, cwd),
            Path::new("/work/.imgbuild/cache")
        );
    }

    #[test]
    fn the_store_is_opened_once_so_what_one_user_wrote_is_fresh_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("imgbuild.toml"),
            "[images.app]\nbase = \"scratch\"\n",
        )
        .unwrap();
        let project = Project::load(dir.path(), None).unwrap();
        // The builder writes with one handle and the output is written with another.
        let mut w = project.store().unwrap().writer().unwrap();
        w.write_all(b"a layer").unwrap();
        let written = w.commit(&crate::digest::Digest::of(b"a layer")).unwrap();
        assert!(
            project.store().unwrap().is_fresh(&written),
            "the output would read and hash the layer again"
        );
    }
}
