//! Source trees built like sdists: the project itself and workspace members (a directory of
//! the project), and git sources (cloned at the locked commit with the host's `git`, the commit
//! checked after checkout). A tree is copied into the build root instead of an archive being
//! unpacked; what a build never needs (`.git`, virtual environments, caches, imgbuild's own
//! state) is left out, of the copy and of the tree's hash alike.

use crate::cache::{FileId, StatCache};
use crate::python::record::{self, Row};
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directory and file names never copied from a source tree nor hashed.
const SKIP: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "__pycache__",
    ".imgbuild",
    "imgbuild.lock",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
    "node_modules",
];

/// What a tree member is.
pub enum Kind {
    Dir,
    File { exec: bool },
    Symlink(PathBuf),
}

/// The members of the tree at `root` (relative paths, sorted, parents first), without `SKIP`
/// and the directories `skip` (imgbuild's store, when it is inside the tree).
pub fn walk(root: &Path, skip: &[PathBuf]) -> Result<Vec<(String, Kind)>> {
    fn go(root: &Path, skip: &[PathBuf], rel: &str, out: &mut Vec<(String, Kind)>) -> Result<()> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let mut names: Vec<String> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !SKIP.contains(&n.as_str()) && !n.ends_with(".pyc"))
            .collect();
        names.sort();
        for n in names {
            let r = if rel.is_empty() {
                n.clone()
            } else {
                format!("{rel}/{n}")
            };
            let p = root.join(&r);
            if skip.contains(&p) {
                continue;
            }
            let md = fs::symlink_metadata(&p)?;
            if md.file_type().is_symlink() {
                out.push((r, Kind::Symlink(fs::read_link(&p)?)));
            } else if md.is_dir() {
                out.push((r.clone(), Kind::Dir));
                go(root, skip, &r, out)?;
            } else if md.is_file() {
                out.push((
                    r,
                    Kind::File {
                        exec: md.permissions().mode() & 0o111 != 0,
                    },
                ));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    let skip: Vec<PathBuf> = skip
        .iter()
        .map(|s| fs::canonicalize(s).unwrap_or_else(|_| s.clone()))
        .collect();
    let root = fs::canonicalize(root).with_context(|| format!("reading {}", root.display()))?;
    go(&root, &skip, "", &mut out)?;
    Ok(out)
}

/// The identity of the tree at `root` (see `key::source_tree`): every member's path, kind and
/// content hash, files hashed through the stat cache (an unchanged tree reads no file);
/// `format` is the builder's (`sdist::FORMAT`).
pub fn tree_hash(format: u32, root: &Path, skip: &[PathBuf], stat: &StatCache) -> Result<String> {
    let mut rows = Vec::new();
    for (rel, kind) in walk(root, skip)? {
        rows.push(match kind {
            Kind::Dir => format!("d {rel}"),
            Kind::Symlink(t) => format!("l {rel} {}", t.display()),
            Kind::File { exec } => {
                let p = root.join(&rel);
                let md = fs::metadata(&p)?;
                let sha = stat
                    .hash(&p, &FileId::of(&md))
                    .with_context(|| format!("hashing {}", p.display()))?;
                format!("{} {rel} {sha}", if exec { "x" } else { "f" })
            }
        });
    }
    Ok(crate::key::source_tree(format, &rows))
}

/// Copies the tree at `src` (without `SKIP`) to `dst`.
pub fn copy_tree(src: &Path, dst: &Path, skip: &[PathBuf]) -> Result<()> {
    fs::create_dir_all(dst)?;
    for (rel, kind) in walk(src, skip)? {
        let to = dst.join(&rel);
        match kind {
            Kind::Dir => fs::create_dir_all(&to)?,
            Kind::Symlink(t) => std::os::unix::fs::symlink(t, &to)?,
            Kind::File { exec } => {
                fs::copy(src.join(&rel), &to)
                    .with_context(|| format!("copying {}", src.join(&rel).display()))?;
                fs::set_permissions(
                    &to,
                    fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
                )?;
            }
        }
    }
    Ok(())
}

fn git(args: &[&str], dir: Option<&Path>) -> Result<String> {
    let mut c = Command::new("git");
    if let Some(d) = dir {
        c.arg("-C").arg(d);
    }
    let out = c
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| anyhow!("running git (needed to build git sources): {e}"))?;
    if !out.status.success() {
        bail!(
            "`git {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The repository URL git is given for a lock's `url` (`git+` prefix dropped).
pub fn clone_url(url: &str) -> &str {
    url.strip_prefix("git+").unwrap_or(url)
}

/// Clones `url` into `dst` and checks out `commit`; refuses a checkout whose `HEAD` is not
/// exactly the locked commit (an abbreviated id, a ref name, a tampered repository).
pub fn checkout(url: &str, commit: &str, dst: &Path) -> Result<()> {
    let u = clone_url(url);
    let what = format!("git commit {commit} of {url}");
    let dst_s = dst.to_string_lossy().into_owned();
    git(&["clone", "--quiet", "--no-checkout", u, &dst_s], None)
        .with_context(|| format!("cloning {what}"))?;
    git(
        &["-c", "advice.detachedHead=false", "checkout", "--quiet", commit],
        Some(dst),
    )
    .with_context(|| {
        format!("checking out {what}: the repository has no such commit (was it rewritten, or the lock edited?); `uv lock` again to lock a commit that exists")
    })?;
    let head = git(&["rev-parse", "HEAD"], Some(dst))?;
    if head != commit {
        bail!(
            "checking out {what} gave commit {head}, not the locked one; refusing to build it (a lock must name the full 40-hex commit id; `uv lock` writes it)"
        );
    }
    Ok(())
}

/// Adds PEP 610 `direct_url.json` (the git origin) to the wheel at `path`, listed in its RECORD.
pub fn add_direct_url(
    path: &Path,
    url: &str,
    commit: &str,
    subdirectory: Option<&str>,
) -> Result<()> {
    let mut v = serde_json::json!({
        "url": clone_url(url),
        "vcs_info": {"vcs": "git", "commit_id": commit},
    });
    if let Some(s) = subdirectory {
        v["subdirectory"] = s.into();
    }
    let json = serde_json::to_vec(&v)?;
    let mut zin = zip::ZipArchive::new(fs::File::open(path)?)?;
    let names: Vec<String> = zin
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .collect();
    let record_name = names
        .iter()
        .find(|n| n.ends_with(".dist-info/RECORD") && n.matches('/').count() == 1)
        .cloned()
        .ok_or_else(|| anyhow!("the built wheel has no .dist-info/RECORD"))?;
    let dist_info = record_name.trim_end_matches("/RECORD").to_string();
    let du = format!("{dist_info}/direct_url.json");
    let mut text = String::new();
    zin.by_name(&record_name)?.read_to_string(&mut text)?;
    let mut rows = record::parse(&text).map_err(|e| anyhow!("the built wheel's RECORD: {e}"))?;
    rows.retain(|r| r.path != du);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json));
    let at = rows
        .iter()
        .position(|r| r.path == record_name)
        .unwrap_or(rows.len());
    rows.insert(at, Row::new(du.clone(), &sha, json.len() as u64));
    let tmp = path.with_extension("whl.tmp");
    {
        let mut w = zip::ZipWriter::new(fs::File::create(&tmp)?);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o644)
            .last_modified_time(zip::DateTime::default());
        for n in &names {
            if *n == record_name || *n == du {
                continue;
            }
            w.raw_copy_file(zin.by_name(n)?)?;
        }
        w.start_file(du.as_str(), opts)?;
        w.write_all(&json)?;
        w.start_file(record_name.as_str(), opts)?;
        w.write_all(record::write(&rows).as_bytes())?;
        w.finish()?;
    }
    fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_hashes_its_content_without_vcs_caches_or_the_store() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("proj");
        let store = crate::store::Store::open(d.path().join("store")).unwrap();
        let stat = StatCache::load(&store, &root);
        let put = |p: &str, t: &str| {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, t).unwrap();
        };
        put("pyproject.toml", "[project]\nname = 'p'\n");
        put("p/__init__.py", "X = 1\n");
        let inner_store = root.join(".store");
        let h = tree_hash(1, &root, std::slice::from_ref(&inner_store), &stat).unwrap();
        for (p, t) in [
            (".git/HEAD", "ref"),
            (".venv/bin/python", ""),
            ("p/__pycache__/x.pyc", ""),
            ("imgbuild.lock", "x"),
            (".store/blob", "x"),
        ] {
            put(p, t);
        }
        assert_eq!(
            tree_hash(1, &root, std::slice::from_ref(&inner_store), &stat).unwrap(),
            h
        );
        let copy = d.path().join("copy");
        copy_tree(&root, &copy, std::slice::from_ref(&inner_store)).unwrap();
        assert!(copy.join("p/__init__.py").is_file());
        assert!(!copy.join(".git").exists() && !copy.join(".store").exists());
        put("p/__init__.py", "X = 2\n");
        assert_ne!(
            tree_hash(1, &root, std::slice::from_ref(&inner_store), &stat).unwrap(),
            h
        );
        assert_ne!(
            tree_hash(2, &root, std::slice::from_ref(&inner_store), &stat).unwrap(),
            tree_hash(1, &root, std::slice::from_ref(&inner_store), &stat).unwrap()
        );
    }
}
