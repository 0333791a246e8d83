//! The target interpreter, found in the base image's merged filesystem without extracting it:
//! interpreter on the config's PATH, its full version, the site directory its `sys.path`
//! reads, libc flavour and version, and the architecture.

use super::hint::hinted;
use super::markers::Env;
use super::tags::{Libc, Tags};
use super::version::Version;
use crate::image::ImageConfig;
use crate::rootfs::{Kind, Rootfs};
use crate::spec::PythonSpec;
use crate::usage;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bump when detection changes what it finds for the same base.
pub const FORMAT: u32 = 1;

/// The target recorded under `key` (`key::python_target`): from the store, else from the
/// shared cache `remote` when its interpreter is a path of `base`'s layers (their listings)
/// and its directories are absolute (else the record is ignored and the target detected).
pub fn shared(
    store: &crate::store::Store,
    remote: Option<&dyn crate::cache::Remote>,
    key: &str,
    base: &crate::recipe::BaseView,
) -> Option<Target> {
    crate::cache::get_shared(store, remote, "python-target", key, |t: &Target| {
        let path = t.interpreter.trim_start_matches('/');
        let found = base
            .base
            .layers
            .iter()
            .zip(&base.base.config.rootfs.diff_ids)
            .any(|(d, diff)| {
                crate::cache::listing(store, d, diff)
                    .is_ok_and(|l| l.nodes.iter().any(|n| n.path == path))
            });
        if !t.interpreter.starts_with('/') || !found {
            return Err(format!(
                "its interpreter {} is not in the base image",
                t.interpreter
            ));
        }
        for d in [&t.site_dir, &t.scripts_dir, &t.data_dir, &t.include_dir] {
            if !d.starts_with('/') {
                return Err(format!("its directory `{d}` is not absolute"));
            }
        }
        if Version::parse(&t.version).is_none() {
            return Err(format!("its version `{}` is not a version", t.version));
        }
        Ok(())
    })
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Target {
    /// Absolute path of the interpreter in the image, as written into script shebangs.
    pub interpreter: String,
    /// Full version, e.g. `3.11.2`.
    pub version: String,
    /// Where wheels' purelib/platlib go (absolute).
    pub site_dir: String,
    /// Where scripts go (absolute).
    pub scripts_dir: String,
    /// The scheme's `data` prefix and `headers` directory (absolute).
    pub data_dir: String,
    pub include_dir: String,
    /// The site directories the interpreter reads by default (absolute).
    pub sys_path: Vec<String>,
    pub libc: Libc,
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
    /// How each fact was found, for messages.
    pub found: Vec<String>,
}

impl Target {
    pub fn minor(&self) -> u32 {
        self.version
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }
    /// `3.N`
    pub fn minor_version(&self) -> String {
        format!("3.{}", self.minor())
    }
    pub fn tags(&self) -> Tags {
        Tags::cpython(self.minor(), &self.libc, &self.arch)
    }
    pub fn marker_env(&self) -> Env {
        Env::linux_cpython(&self.version, &self.arch)
    }
    /// File name suffixes of extension modules this interpreter imports, best first.
    pub fn extension_suffixes(&self) -> Vec<String> {
        vec![
            format!(
                ".cpython-3{}-{}.so",
                self.minor(),
                triple(&self.arch, &self.libc)
            ),
            ".abi3.so".into(),
            ".so".into(),
        ]
    }
    pub fn describe(&self) -> String {
        format!(
            "CPython {} at {} ({}, {}), site directory {}",
            self.version, self.interpreter, self.libc, self.arch, self.site_dir
        )
    }
}

/// The multiarch triple CPython uses in extension module names.
pub fn triple(arch: &str, libc: &Libc) -> String {
    let musl = matches!(libc, Libc::Musl { .. });
    let base = match arch {
        "i686" => "i386",
        "armv7l" => "arm",
        "ppc64le" => "powerpc64le",
        a => a,
    };
    let abi = match (musl, arch) {
        (true, "armv7l") => "musleabihf",
        (true, _) => "musl",
        (false, "armv7l") => "gnueabihf",
        (false, _) => "gnu",
    };
    format!("{base}-linux-{abi}")
}

/// The wheel architecture name for an OCI architecture.
pub fn wheel_arch(oci_arch: &str, variant: Option<&str>) -> String {
    match (oci_arch, variant) {
        ("amd64", _) => "x86_64".into(),
        ("arm64", _) => "aarch64".into(),
        ("386", _) => "i686".into(),
        ("arm", Some("v6")) => "armv6l".into(),
        ("arm", _) => "armv7l".into(),
        (a, _) => a.into(),
    }
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

fn parent(p: &str) -> String {
    match p.trim_end_matches('/').rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => p[..i].to_string(),
    }
}

fn is_file(fs: &Rootfs, p: &str) -> Option<String> {
    fs.resolve(p)
        .filter(|(_, n)| matches!(n.kind, Kind::File | Kind::Link))
        .map(|(real, _)| format!("/{real}"))
}

/// `python3.N` → N.
fn minor_of(name: &str) -> Option<u32> {
    name.strip_prefix("python3.")?.parse().ok()
}

/// Finds the interpreter: `(shebang path, real path, minor)`.
fn interpreter(fs: &Rootfs, path_var: &str, forced: Option<&str>) -> Option<(String, String, u32)> {
    let try_at = |cand: &str| -> Option<(String, String, u32)> {
        let real = is_file(fs, cand)?;
        let dir = parent(cand);
        let name = cand.rsplit('/').next().unwrap_or(cand);
        let real_name = real.rsplit('/').next().unwrap_or(&real).to_string();
        let minor = minor_of(name).or_else(|| minor_of(&real_name))?;
        let versioned = join(&dir, &format!("python3.{minor}"));
        let shebang = if is_file(fs, &versioned).is_some() {
            versioned
        } else {
            real.clone()
        };
        Some((shebang, real, minor))
    };
    if let Some(f) = forced {
        return try_at(f);
    }
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        for name in ["python3", "python"] {
            if let Some(found) = try_at(&join(dir, name)) {
                return Some(found);
            }
        }
        // Only versioned names in this directory (e.g. /usr/local/bin/python3.13).
        let prefix = format!("{}/python3.", dir.trim_matches('/'));
        let best = fs
            .files
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| minor_of(k.rsplit('/').next()?).map(|m| (m, format!("/{k}"))))
            .max();
        if let Some((_, p)) = best {
            if let Some(found) = try_at(&p) {
                return Some(found);
            }
        }
    }
    None
}

/// A full version `3.N.x` of the interpreter embedded in a binary (PY_VERSION), most frequent.
pub fn embedded_version(bytes: &[u8], minor: u32) -> Option<String> {
    let needle = format!("3.{minor}.");
    let n = needle.as_bytes();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut i = 0;
    while let Some(off) = find(&bytes[i..], n) {
        let start = i + off;
        i = start + 1;
        if start > 0 && (bytes[start - 1].is_ascii_digit() || bytes[start - 1] == b'.') {
            continue;
        }
        let mut end = start + n.len();
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'+') {
            end += 1;
        }
        if end >= bytes.len() || bytes[end] != 0 || end == start + n.len() {
            continue;
        }
        let s = String::from_utf8_lossy(&bytes[start..end])
            .trim_end_matches('+')
            .to_string();
        if Version::parse(&s).is_some() && s[n.len()..].starts_with(|c: char| c.is_ascii_digit()) {
            *counts.entry(s).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(_, c)| *c).map(|(v, _)| v)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Version:` of a package in a dpkg status file, upstream part only (`2.36-9+deb12u4` → `2.36`).
fn dpkg_version(status: &str, package: &str) -> Option<String> {
    status.split("\n\n").find_map(|para| {
        let mut lines = para.lines();
        if !lines.any(|l| l == format!("Package: {package}")) {
            return None;
        }
        let v = para.lines().find_map(|l| l.strip_prefix("Version: "))?;
        let v = v.split(':').next_back().unwrap_or(v);
        Some(v.split(['-', '+', '~']).next().unwrap_or(v).to_string())
    })
}

/// `V:` of a package in an apk database (`1.2.4-r2` → `1.2.4`).
fn apk_version(db: &str, package: &str) -> Option<String> {
    db.split("\n\n").find_map(|para| {
        para.lines()
            .any(|l| l == format!("P:{package}"))
            .then_some(())?;
        let v = para.lines().find_map(|l| l.strip_prefix("V:"))?;
        Some(v.split('-').next().unwrap_or(v).to_string())
    })
}

fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    Some((
        it.next()?.parse().ok()?,
        it.next()?
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok()?,
    ))
}

/// Reads files of the base (see `BaseView::read_files`).
pub type Reader<'a> = dyn Fn(&[&str]) -> Result<BTreeMap<String, Vec<u8>>> + 'a;

const DPKG: &str = "/var/lib/dpkg/status";
const APK: &str = "/lib/apk/db/installed";

/// Detects the target in `fs` (the base's merged view) with `config`, applying the overrides
/// of `spec`; a conflict between an override and the base is an error.
pub fn detect(
    fs: &Rootfs,
    config: &ImageConfig,
    read: &Reader,
    spec: &PythonSpec,
) -> Result<Target> {
    let mut found = Vec::new();
    let path_var = config
        .config
        .env_var("PATH")
        .unwrap_or(crate::image::DEFAULT_PATH)
        .to_string();
    if let Some(i) = &spec.interpreter {
        if !i.starts_with('/') {
            return Err(usage!(
                "interpreter = \"{i}\" must be an absolute path in the image"
            ));
        }
    }
    let interp = interpreter(fs, &path_var, spec.interpreter.as_deref());
    let arch = wheel_arch(&config.architecture, config.variant.as_deref());
    let Some((shebang, real, minor)) = interp else {
        return Err(match &spec.interpreter {
            Some(i) => usage!("interpreter = \"{i}\" does not exist in the base image (or is not named python3.N)"),
            None => hinted(format!("the base image has no python3 on its PATH ({path_var})"),
                "use a base with CPython (e.g. Debian with python3, or a python.org image), or set `interpreter` to its path"),
        });
    };
    found.push(format!("interpreter {shebang} (real file {real})"));
    let prefix = parent(&parent(&real));
    let p = |s: &str| join(&prefix, s);
    let stdlib = p(&format!("lib/python3.{minor}"));
    let libpy = [
        p(&format!("lib/libpython3.{minor}.so.1.0")),
        p(&format!(
            "lib/{}/libpython3.{minor}.so.1.0",
            triple(&arch, &Libc::Glibc { major: 2, minor: 0 })
        )),
    ];
    let libc_cands: Vec<String> = ["lib", "usr/lib", "lib64", "usr/lib64"]
        .iter()
        .flat_map(|d| {
            [
                format!(
                    "/{d}/{}/libc.so.6",
                    triple(&arch, &Libc::Glibc { major: 2, minor: 0 })
                ),
                format!("/{d}/libc.so.6"),
            ]
        })
        .collect();
    let libc_path = libc_cands
        .iter()
        .find(|c| is_file(fs, c).is_some())
        .cloned();
    let musl_loader = format!("/lib/ld-musl-{arch}.so.1");
    let musl = is_file(fs, &musl_loader).is_some();
    let site_py = join(&stdlib, "site.py");
    let mut wanted: Vec<&str> = vec![real.as_str(), DPKG, APK, site_py.as_str()];
    wanted.extend(libpy.iter().map(|s| s.as_str()));
    if let Some(l) = &libc_path {
        wanted.push(l.as_str());
    }
    let files = read(&wanted)?;
    let text = |k: &str| {
        files
            .get(k)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };

    // Version: the binary's embedded PY_VERSION, PYTHON_VERSION (python.org images), dpkg, apk.
    let mut version = None;
    for f in std::iter::once(&real).chain(libpy.iter()) {
        if let Some(v) = files.get(f).and_then(|b| embedded_version(b, minor)) {
            found.push(format!("version {v} from the version string in {f}"));
            version = Some(v);
            break;
        }
    }
    if version.is_none() {
        if let Some(v) = config
            .config
            .env_var("PYTHON_VERSION")
            .filter(|v| v.starts_with(&format!("3.{minor}.")))
        {
            found.push(format!(
                "version {v} from PYTHON_VERSION in the image config"
            ));
            version = Some(v.to_string());
        }
    }
    if version.is_none() {
        let from_pkg = text(DPKG)
            .and_then(|s| {
                dpkg_version(&s, &format!("python3.{minor}-minimal"))
                    .or_else(|| dpkg_version(&s, &format!("python3.{minor}")))
            })
            .or_else(|| {
                text(APK).and_then(|s| {
                    apk_version(&s, &format!("python3.{minor}"))
                        .or_else(|| apk_version(&s, "python3"))
                })
            });
        if let Some(v) = from_pkg.filter(|v| v.starts_with(&format!("3.{minor}."))) {
            found.push(format!("version {v} from the package database"));
            version = Some(v);
        }
    }
    let version = match (version, &spec.python_version) {
        (Some(v), Some(o)) if v != *o && !v.starts_with(&format!("{o}.")) => {
            return Err(hinted(format!(
                "python_version = \"{o}\" in imgbuild.toml conflicts with the base image: {shebang} is Python {v}"
            ), "remove `python_version` (it is detected), or use a base with that Python"));
        }
        (Some(v), _) => v,
        (None, Some(o)) if o.starts_with(&format!("3.{minor}")) => {
            found.push(format!("version {o} from python_version in imgbuild.toml"));
            if o.matches('.').count() == 1 {
                format!("{o}.0")
            } else {
                o.clone()
            }
        }
        (None, Some(o)) => {
            return Err(usage!("python_version = \"{o}\" in imgbuild.toml conflicts with the base image: its interpreter is {shebang} (Python 3.{minor})"));
        }
        (None, None) => {
            return Err(hinted(format!("cannot tell the full version of {shebang} in the base image (no version string in the binary, no PYTHON_VERSION, no package database entry)"),
                format!("set python_version = \"3.{minor}.X\" in the layer's `python` table")));
        }
    };

    // libc: musl loader, else glibc from the file name, its version string, or dpkg.
    let libc = if musl {
        let v = text(APK)
            .and_then(|s| apk_version(&s, "musl"))
            .and_then(|v| major_minor(&v));
        let (major, minor) = v.unwrap_or((1, 2));
        found.push(format!("musl {major}.{minor} ({musl_loader})"));
        Libc::Musl { major, minor }
    } else if let Some(l) = &libc_path {
        let real_name = is_file(fs, l).unwrap_or_default();
        let from_name = real_name
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_prefix("libc-"))
            .and_then(|n| n.strip_suffix(".so"))
            .and_then(major_minor);
        let from_string = files.get(l.as_str()).and_then(|b| {
            let pat = b"release version ";
            let at = find(b, pat)? + pat.len();
            let end = b[at..]
                .iter()
                .position(|c| !(c.is_ascii_digit() || *c == b'.'))
                .unwrap_or(b.len() - at);
            major_minor(
                std::str::from_utf8(&b[at..at + end])
                    .ok()?
                    .trim_end_matches('.'),
            )
        });
        let from_dpkg = text(DPKG)
            .and_then(|s| dpkg_version(&s, "libc6"))
            .and_then(|v| major_minor(&v));
        let (major, minor) = from_name.or(from_string).or(from_dpkg).ok_or_else(|| {
            usage!("cannot tell the glibc version of the base image ({l} has no version string and no package database names it)")
        })?;
        found.push(format!("glibc {major}.{minor} ({l})"));
        Libc::Glibc { major, minor }
    } else {
        return Err(hinted(
            format!("cannot tell the C library of the base image: no libc.so.6 and no {musl_loader}"),
            "imgbuild needs it to choose manylinux or musllinux wheels; use a glibc or musl based image",
        ));
    };

    // Scheme: Debian's patched site.py reads dist-packages; everything else site-packages.
    let debian = text(&site_py).is_some_and(|s| s.contains("dist-packages"));
    let (site, scripts, data, sys_path) = if debian {
        let local = p("local");
        let site = join(&local, &format!("lib/python3.{minor}/dist-packages"));
        let sys_path = vec![
            site.clone(),
            p("lib/python3/dist-packages"),
            p(&format!("lib/python3.{minor}/dist-packages")),
        ];
        (site, join(&local, "bin"), local, sys_path)
    } else {
        let mut sys_path = vec![p(&format!("lib/python3.{minor}/site-packages"))];
        if fs.exists(&p(&format!("lib64/python3.{minor}"))) {
            sys_path.insert(0, p(&format!("lib64/python3.{minor}/site-packages")));
        }
        (
            sys_path.last().unwrap().clone(),
            p("bin"),
            prefix.clone(),
            sys_path,
        )
    };
    found.push(format!(
        "{} scheme ({site_py}): site directories {}",
        if debian { "Debian" } else { "standard" },
        sys_path.join(", ")
    ));
    let site_dir = match &spec.site_dir {
        None => site,
        Some(s) => {
            let norm = format!(
                "/{}",
                crate::files::image_path(s).map_err(|e| usage!("site_dir: {e}"))?
            );
            if let Some(other) = norm.split('/').filter_map(minor_of).find(|m| *m != minor) {
                return Err(usage!(
                    "site_dir = \"{s}\" in imgbuild.toml is for Python 3.{other}, but the base image's interpreter {shebang} is Python {version}"
                ));
            }
            found.push(format!("site directory {norm} from imgbuild.toml"));
            norm
        }
    };
    Ok(Target {
        interpreter: shebang,
        version,
        site_dir,
        scripts_dir: scripts,
        include_dir: join(&data, &format!("include/python3.{minor}")),
        data_dir: data,
        sys_path,
        libc,
        arch,
        found,
    })
}

#[cfg(test)]
mod tests;
