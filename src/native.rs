//! Native libraries: every ELF file the checked layers install can be loaded in the image.
//!
//! For each such file (an extension module, a vendored library, an executable; any mode), as
//! the dynamic loader would do it inside the container: each `DT_NEEDED` library is looked up
//! — an already loaded object of that name or soname first, then `DT_RPATH` (of the object and
//! the objects that loaded it, when the object has no `DT_RUNPATH`), `LD_LIBRARY_PATH` of the
//! image config, `DT_RUNPATH`, the directories of the image's `/etc/ld.so.conf` (and what it
//! includes) or musl's `/etc/ld-musl-ARCH.path`, and the loader's default directories —
//! `$ORIGIN` expanded to the object's directory (how auditwheel's `$ORIGIN/../pkg.libs` finds
//! a wheel's vendored libraries). A library of another machine or class is skipped, as the
//! loader skips it. What each found library needs is followed too. The loader a file's
//! `PT_INTERP` names must exist, and its machine must be the image's architecture.
//!
//! A miss names the file as its package's RECORD names it (relative to the site directory),
//! the library, and the distribution that installed it.

use crate::elf::Info;
use crate::image::ImageConfig;
use crate::rootfs::{Kind, Rootfs};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

/// One problem: the index of the layer that installed the file, and what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Miss {
    pub layer: usize,
    pub message: String,
}

/// The library a miss's message says is not in the image (`… needs LIB, which is not in the
/// image…`), if it is such a miss.
pub fn missing_library(message: &str) -> Option<&str> {
    let (before, _) = message.split_once(", which is not in the image")?;
    let lib = before.rsplit_once(" needs ")?.1;
    (!lib.starts_with("its loader")).then_some(lib)
}

/// How many objects one file's dependency walk visits at most.
const MAX_OBJECTS: usize = 512;

/// The problems of every ELF file installed by layers `from_layer..` of `fs`.
pub fn check(fs: &Rootfs, config: &ImageConfig, from_layer: usize) -> Vec<Miss> {
    let roots: BTreeMap<&str, (Info, usize)> = fs
        .files
        .iter()
        .filter(|(_, (n, l))| *l >= from_layer && n.kind == Kind::File)
        .filter_map(|(p, (_, l))| {
            let info = Info::decode(fs.captured.get(p)?)?;
            Some((p.as_str(), (info, *l)))
        })
        .collect();
    if roots.is_empty() {
        return vec![];
    }
    let owners = owners(fs, &roots.keys().copied().collect());
    let env = Env::of(fs, config);
    let label = |p: &str| match owners.get(p) {
        Some(o) => o.relative.clone(),
        None => format!("/{p}"),
    };
    let installed = |p: &str| match owners.get(p) {
        Some(o) => format!(" (installed by {} into /{})", o.dist, o.site),
        None => String::new(),
    };

    // Walk every file; remember who loads whom and with what result.
    let mut walks: BTreeMap<&str, Walk> = BTreeMap::new();
    for (p, (info, _)) in &roots {
        walks.insert(p, walk(fs, &env, p, info));
    }
    // A file another installed file loads, and whose needs that walk finds, is fine even if
    // it would not load on its own (its loader's RPATH, or libraries already loaded).
    let mut loaded_fine: BTreeSet<&str> = BTreeSet::new();
    for (root, w) in &walks {
        for o in &w.reached {
            if o != root && roots.contains_key(o.as_str()) && !w.misses.iter().any(|m| &m.0 == o) {
                if let Some((k, _)) = roots.get_key_value(o.as_str()) {
                    loaded_fine.insert(k);
                }
            }
        }
    }

    let mut out: Vec<Miss> = Vec::new();
    let mut push = |layer: usize, message: String| {
        let m = Miss { layer, message };
        if !out.contains(&m) {
            out.push(m);
        }
    };
    for (p, (info, layer)) in &roots {
        let why = installed(p);
        if let Some((machine, class64)) = env.machine {
            let loadable =
                info.interp.is_some() || info.soname.is_some() || !info.needed.is_empty();
            if loadable && info.machine != 0 && (info.machine != machine || info.class64 != class64)
            {
                if !may_be_loaded(p) {
                    continue; // data for another platform, see `may_be_loaded`
                }
                push(
                    *layer,
                    format!(
                        "{} is built for {} (ELF machine {}, {}-bit), but the image is {}{why}",
                        label(p),
                        machine_name(info.machine),
                        info.machine,
                        if info.class64 { 64 } else { 32 },
                        env.platform,
                    ),
                );
                continue;
            }
        }
        if let Some(i) = info.interp.as_deref().filter(|i| !i.is_empty()) {
            if fs.resolve(i).is_none() {
                push(
                    *layer,
                    format!(
                        "{} needs its loader {i}, which is not in the image (built for another libc?){why}",
                        label(p)
                    ),
                );
            }
        }
        for (needer, lib) in &walks[p].misses {
            if needer == p {
                if !loaded_fine.contains(p) {
                    push(
                        *layer,
                        format!("{} needs {lib}, which is not in the image{why}", label(p)),
                    );
                }
            } else if !roots.contains_key(needer.as_str()) {
                push(
                    *layer,
                    format!(
                        "{} loads /{needer}, which needs {lib}, which is not in the image{why}",
                        label(p)
                    ),
                );
            }
        }
    }
    out
}

/// The result of walking one file's dependencies.
#[derive(Default)]
struct Walk {
    /// Real paths of every object loaded.
    reached: Vec<String>,
    /// (real path of the object, library it needs) not found.
    misses: Vec<(String, String)>,
}

/// An object to load: the path it was found at (for `$ORIGIN`), its real path, what it needs,
/// and the `DT_RPATH` directories of the objects that loaded it.
struct Obj {
    found: String,
    real: String,
    info: Info,
    inherited: Vec<String>,
}

fn walk(fs: &Rootfs, env: &Env, root: &str, info: &Info) -> Walk {
    let mut w = Walk::default();
    if !info.complete && info.needed.is_empty() {
        return w;
    }
    let mut names: HashSet<String> = info.soname.iter().cloned().collect();
    let mut seen: HashSet<String> = HashSet::from([root.to_string()]);
    let mut queue = VecDeque::from([Obj {
        found: root.to_string(),
        real: root.to_string(),
        info: info.clone(),
        inherited: vec![],
    }]);
    while let Some(o) = queue.pop_front() {
        w.reached.push(o.real.clone());
        // DT_RPATH counts only without DT_RUNPATH, for the object and (inherited) its loaders.
        let own_rpath = match (&o.info.runpath, &o.info.rpath) {
            (None, Some(r)) => expand(r, &o.found, &o.info),
            _ => vec![],
        };
        let runpath = o
            .info
            .runpath
            .as_deref()
            .map(|r| expand(r, &o.found, &o.info))
            .unwrap_or_default();
        let mut dirs: Vec<&str> = Vec::new();
        if o.info.runpath.is_none() {
            dirs.extend(own_rpath.iter().map(String::as_str));
            dirs.extend(o.inherited.iter().map(String::as_str));
        }
        dirs.extend(env.ld_library_path.iter().map(String::as_str));
        dirs.extend(runpath.iter().map(String::as_str));
        dirs.extend(env.dirs.iter().map(String::as_str));
        for lib in &o.info.needed {
            if names.contains(lib) {
                continue;
            }
            let Some((found, real, info)) = locate(fs, &dirs, lib, &o.info) else {
                w.misses.push((o.real.clone(), lib.clone()));
                continue;
            };
            names.insert(lib.clone());
            names.extend(info.soname.iter().cloned());
            if seen.insert(real.clone()) && seen.len() <= MAX_OBJECTS {
                let mut inherited = own_rpath.clone();
                inherited.extend(o.inherited.iter().cloned());
                queue.push_back(Obj {
                    found,
                    real,
                    info,
                    inherited,
                });
            }
        }
    }
    w
}

/// The first `dir/lib` that exists and suits `me`: (found path, real path, its ELF info).
fn locate(fs: &Rootfs, dirs: &[&str], lib: &str, me: &Info) -> Option<(String, String, Info)> {
    let candidates: Vec<String> = if lib.contains('/') {
        if !lib.starts_with('/') {
            // Relative to the process's working directory: not something to check.
            return Some((String::new(), String::new(), Info::default()));
        }
        vec![lib.trim_start_matches('/').to_string()]
    } else {
        dirs.iter()
            .map(|d| format!("{}/{lib}", d.trim_matches('/')))
            .collect()
    };
    for c in candidates {
        let Some((real, node)) = fs.resolve(&c) else {
            continue;
        };
        let real = match node.kind {
            Kind::File => real,
            Kind::Link => node.target.clone().unwrap_or(real),
            _ => continue,
        };
        let info = fs
            .captured
            .get(&real)
            .and_then(|t| Info::decode(t))
            .unwrap_or_default();
        if info.machine != 0
            && me.machine != 0
            && (info.machine, info.class64) != (me.machine, me.class64)
        {
            continue; // the loader skips libraries of another machine or class
        }
        return Some((c, real, info));
    }
    None
}

/// `$ORIGIN`, `$LIB` and `$PLATFORM` expanded in a colon-separated search path of the object
/// found at `found` (no leading slash); entries relative to the working directory dropped.
fn expand(path: &str, found: &str, info: &Info) -> Vec<String> {
    let origin = format!("/{}", found.rsplit_once('/').map(|(d, _)| d).unwrap_or(""));
    let lib = if info.class64 { "lib64" } else { "lib" };
    path.split(':')
        .map(|e| {
            e.replace("${ORIGIN}", &origin)
                .replace("$ORIGIN", &origin)
                .replace("${LIB}", lib)
                .replace("$LIB", lib)
                .replace("${PLATFORM}", machine_name(info.machine))
                .replace("$PLATFORM", machine_name(info.machine))
        })
        .filter(|e| e.starts_with('/'))
        .collect()
}

/// The image's side of the search: its machine and its configured and default directories.
struct Env {
    machine: Option<(u16, bool)>,
    platform: String,
    ld_library_path: Vec<String>,
    /// ld.so.conf (or musl's path file) directories, then the loader's defaults.
    dirs: Vec<String>,
}

impl Env {
    fn of(fs: &Rootfs, config: &ImageConfig) -> Env {
        let arch = config.architecture.as_str();
        let (machine, triplet) = match arch {
            "amd64" => (Some((62, true)), "x86_64-linux-gnu"),
            "arm64" => (Some((183, true)), "aarch64-linux-gnu"),
            "arm" => (Some((40, false)), "arm-linux-gnueabihf"),
            "386" => (Some((3, false)), "i386-linux-gnu"),
            "ppc64le" => (Some((21, true)), "powerpc64le-linux-gnu"),
            "s390x" => (Some((22, true)), "s390x-linux-gnu"),
            "riscv64" => (Some((243, true)), "riscv64-linux-gnu"),
            _ => (None, ""),
        };
        let ld_library_path = config
            .config
            .env_var("LD_LIBRARY_PATH")
            .unwrap_or("")
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(String::from)
            .collect();
        let mut dirs = Vec::new();
        read_conf(fs, "etc/ld.so.conf", 0, &mut dirs);
        for (p, text) in fs
            .captured
            .range("etc/ld-musl-".to_string()..)
            .take_while(|(k, _)| k.starts_with("etc/ld-musl-"))
        {
            if p.ends_with(".path") {
                dirs.extend(
                    text.split(['\n', ':'])
                        .map(str::trim)
                        .filter(|d| d.starts_with('/'))
                        .map(String::from),
                );
            }
        }
        // glibc's built-in directories (Debian's multiarch ones among them), then musl's.
        if !triplet.is_empty() {
            dirs.push(format!("/lib/{triplet}"));
            dirs.push(format!("/usr/lib/{triplet}"));
        }
        if machine.is_some_and(|m| m.1) {
            dirs.extend(["/lib64".into(), "/usr/lib64".into()]);
        }
        dirs.extend(["/lib".into(), "/usr/lib".into()]);
        if fs
            .files
            .range("lib/ld-musl-".to_string()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with("lib/ld-musl-"))
        {
            dirs.push("/usr/local/lib".into());
        }
        let mut seen = HashSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        Env {
            machine,
            platform: format!("{}/{arch}", config.os),
            ld_library_path,
            dirs,
        }
    }
}

/// The directories of the ld.so.conf at `path` and of the files it includes (globs relative to
/// its directory), in order.
fn read_conf(fs: &Rootfs, path: &str, depth: usize, out: &mut Vec<String>) {
    if depth > 8 {
        return;
    }
    let Some((real, _)) = fs.resolve(path) else {
        return;
    };
    let Some(text) = fs.captured.get(&real) else {
        return;
    };
    let here = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("hwcap") {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with([' ', '\t']))
        {
            for pat in rest.split_whitespace() {
                let pat = match pat.strip_prefix('/') {
                    Some(abs) => abs.to_string(),
                    None => format!("{here}/{pat}"),
                };
                for m in glob(fs, &pat) {
                    read_conf(fs, &m, depth + 1, out);
                }
            }
            continue;
        }
        for d in line.split([' ', '\t', ':', ',']) {
            let d = d.split('=').next().unwrap_or("");
            if d.starts_with('/') {
                out.push(d.trim_end_matches('/').to_string());
            }
        }
    }
}

/// The paths of `fs` matching `pat` (no leading slash; `*` and `?` in its last component).
fn glob(fs: &Rootfs, pat: &str) -> Vec<String> {
    let (dir, name) = pat.rsplit_once('/').unwrap_or(("", pat));
    if !name.contains(['*', '?']) {
        return vec![pat.to_string()];
    }
    let dir = match fs.resolve(dir) {
        Some((real, _)) => real,
        None => return vec![],
    };
    let prefix = format!("{dir}/");
    fs.files
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| &k[prefix.len()..])
        .filter(|rest| !rest.contains('/') && matches(name.as_bytes(), rest.as_bytes()))
        .map(|rest| format!("{prefix}{rest}"))
        .collect()
}

fn matches(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => matches(&pat[1..], s) || (!s.is_empty() && matches(pat, &s[1..])),
        (Some(b'?'), Some(_)) => matches(&pat[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => matches(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// Who installed a file: its path as its RECORD names it, the distribution, the site directory.
struct Owner {
    relative: String,
    dist: String,
    site: String,
}

/// The owners of `paths` according to every `*.dist-info/RECORD` in `fs`.
fn owners(fs: &Rootfs, paths: &BTreeSet<&str>) -> BTreeMap<String, Owner> {
    let mut out = BTreeMap::new();
    for (rec, text) in fs
        .captured
        .iter()
        .filter(|(k, _)| k.ends_with(".dist-info/RECORD"))
    {
        let dir = rec.trim_end_matches("/RECORD");
        let Some((site, name)) = dir.rsplit_once('/') else {
            continue;
        };
        let dist = name.trim_end_matches(".dist-info").replacen('-', " ", 1);
        let mut rows = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        for row in rows.records().flatten() {
            let Some(rel) = row.get(0).filter(|r| !r.is_empty()) else {
                continue;
            };
            let full = normalise(&format!("{site}/{rel}"));
            if paths.contains(full.as_str()) {
                out.insert(
                    full,
                    Owner {
                        relative: rel.to_string(),
                        dist: dist.clone(),
                        site: site.to_string(),
                    },
                );
            }
        }
    }
    out
}

/// `a/b/../c` → `a/c` (no leading slash).
fn normalise(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Whether the image would load or run `p` (a path relative to the root) by itself: a program in
/// a directory on the default PATH, or a library in one of the dynamic loader's directories.
/// Files of another machine elsewhere — inside a package — are data the package chooses from by
/// platform at run time (embit's `prebuilt/libsecp256k1_linux_aarch64.so` beside the x86_64 one,
/// loaded with ctypes; speech_recognition's `flac-linux-x86`); a wheel's own tags already say
/// which platform its extension modules are for.
fn may_be_loaded(p: &str) -> bool {
    let dir = p
        .rsplit_once('/')
        .map_or("", |(d, _)| d)
        .trim_start_matches('/');
    let lib_dir = |d: &str| {
        ["lib", "lib64", "usr/lib", "usr/lib64", "usr/local/lib"].contains(&d)
            || ["lib/", "usr/lib/"].iter().any(|pre| {
                d.strip_prefix(pre)
                    .is_some_and(|t| !t.contains('/') && t.contains("-linux-"))
            })
    };
    [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "usr/local/bin",
        "usr/local/sbin",
    ]
    .contains(&dir)
        || lib_dir(dir)
}

/// A short name of an ELF machine (`$PLATFORM`'s spelling where the loader has one).
fn machine_name(m: u16) -> &'static str {
    match m {
        62 => "x86_64",
        183 => "aarch64",
        40 => "arm",
        3 => "i386",
        21 => "ppc64le",
        22 => "s390x",
        243 => "riscv64",
        8 => "mips",
        258 => "loongarch",
        _ => "another machine",
    }
}

#[cfg(test)]
mod tests;
