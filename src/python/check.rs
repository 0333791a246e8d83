//! Verification of installed distributions on the merged filesystem a container sees: RECORD
//! rows present with their hash and size, nothing unclaimed, required modules importable,
//! scripts on PATH with an interpreter that exists, the site directory on `sys.path`.

use super::filename::dist_info_name;
use super::record::{self, installed_path, is_bytecode};
use super::target::Target;
use super::version::Version;
use crate::image::ImageConfig;
use crate::recipe::Problem;
use crate::rootfs::{Kind, Node, Rootfs};
use std::collections::{BTreeMap, BTreeSet};

/// A name for layer `idx` of the image: the imgbuild layer name, or the base's history line.
pub fn layer_label(config: &ImageConfig, idx: usize) -> String {
    let h = config
        .history
        .iter()
        .filter(|h| h.empty_layer != Some(true))
        .nth(idx);
    match h.and_then(|h| h.created_by.as_deref()) {
        Some(c) if c.starts_with("imgbuild layer ") => {
            let name = c["imgbuild layer ".len()..].split(' ').next().unwrap_or("");
            format!("`{name}`")
        }
        Some(c) => {
            let short: String = c.chars().take(60).collect();
            format!("{} ({short})", ordinal(idx))
        }
        None => ordinal(idx),
    }
}

fn ordinal(idx: usize) -> String {
    format!("layer {}", idx + 1)
}

fn abs(p: &str) -> String {
    format!("/{}", p.trim_start_matches('/'))
}

fn rel(p: &str) -> &str {
    p.trim_start_matches('/')
}

fn env_list(config: &ImageConfig, key: &str) -> Vec<String> {
    config
        .config
        .env_var(key)
        .map(|v| {
            v.split(':')
                .filter(|s| s.starts_with('/'))
                .map(|s| s.trim_end_matches('/').to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn path_dirs(config: &ImageConfig) -> Vec<String> {
    crate::start::path_dirs(config)
}

/// `.dist-info` directories directly under `site` (relative): (path, normalised name, version).
fn dist_infos(fs: &Rootfs, site: &str) -> Vec<(String, String, String)> {
    let prefix = format!("{site}/");
    fs.files
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(k, (n, _))| {
            n.kind == Kind::Dir && !k[prefix.len()..].contains('/') && k.ends_with(".dist-info")
        })
        .filter_map(|(k, _)| {
            let stem = k[prefix.len()..].trim_end_matches(".dist-info");
            let (name, version) = stem.rsplit_once('-')?;
            Some((k.clone(), dist_info_name(name), version.to_string()))
        })
        .collect()
}

/// Checks one RECORD's rows; returns the installed paths it claims. `own`: the layer that
/// installed it (build mode: any other writer is a shadowing layer).
fn check_rows(
    fs: &Rootfs,
    config: &ImageConfig,
    site: &str,
    label: &str,
    text: &str,
    own: Option<usize>,
    out: &mut Vec<String>,
) -> BTreeSet<String> {
    let mut claimed = BTreeSet::new();
    let rows = match record::parse(text) {
        Ok(r) => r,
        Err(e) => {
            out.push(format!("{label}: {e}"));
            return claimed;
        }
    };
    for row in rows {
        let Some(path) = installed_path(site, &row.path) else {
            out.push(format!(
                "{label}: RECORD row `{}` points outside the filesystem",
                row.path
            ));
            continue;
        };
        claimed.insert(path.clone());
        let shown = abs(&path);
        if row.sha256.is_none() && (is_bytecode(&path) || path.ends_with(".dist-info/RECORD")) {
            continue;
        }
        let Some((node, layer)) = fs.files.get(&path) else {
            match fs.removed.get(&path) {
                Some(l) => out.push(format!(
                    "{label}: {shown} (in RECORD) was deleted by layer {}",
                    layer_label(config, *l).trim_start_matches("layer ")
                )),
                None => out.push(format!(
                    "{label}: {shown} (in RECORD) is missing from the image"
                )),
            }
            continue;
        };
        if let Some(me) = own {
            if *layer != me {
                out.push(format!(
                    "{label}: {shown} (in RECORD) is replaced by layer {} (it was installed by layer {})",
                    layer_label(config, *layer).trim_start_matches("layer "),
                    layer_label(config, me).trim_start_matches("layer ")
                ));
                continue;
            }
        }
        let node: &Node = match node.kind {
            Kind::File => node,
            Kind::Symlink | Kind::Link => match fs.resolve(&path) {
                Some((_, n)) if n.kind == Kind::File => n,
                _ => {
                    out.push(format!("{label}: {shown} (in RECORD) is a dangling link"));
                    continue;
                }
            },
            k => {
                out.push(format!(
                    "{label}: {shown} (in RECORD) is a {}, not a file",
                    if k == Kind::Dir {
                        "directory"
                    } else {
                        "special file"
                    }
                ));
                continue;
            }
        };
        if let (Some(want), Some(got)) = (&row.sha256, &node.sha256) {
            if !got.eq(want.as_str()) {
                out.push(format!(
                    "{label}: {shown}: sha256={} does not match RECORD (sha256={})",
                    record::hex_to_b64(&got.hex()),
                    record::hex_to_b64(want)
                ));
                continue;
            }
        }
        if let Some(size) = row.size {
            if size != node.size {
                out.push(format!(
                    "{label}: {shown}: {} bytes, RECORD says {size}",
                    node.size
                ));
            }
        }
    }
    claimed
}

/// Whether `module` resolves under one of `roots` (absolute directories).
fn importable(fs: &Rootfs, roots: &[String], module: &str, suffixes: &[String]) -> bool {
    let parts: Vec<&str> = module.split('.').collect();
    let is = |p: &str, k: Kind| {
        fs.resolve(p)
            .is_some_and(|(_, n)| n.kind == k || (k == Kind::File && n.kind == Kind::Link))
    };
    roots.iter().any(|root| {
        let mut dir = root.clone();
        for (i, part) in parts.iter().enumerate() {
            let base = format!("{dir}/{part}");
            if i + 1 < parts.len() {
                if !is(&base, Kind::Dir) {
                    return false;
                }
                dir = base;
                continue;
            }
            return is(&format!("{base}/__init__.py"), Kind::File)
                || is(&format!("{base}.py"), Kind::File)
                || is(&format!("{base}.pyc"), Kind::File)
                || is(&base, Kind::Dir)
                || suffixes
                    .iter()
                    .any(|s| is(&format!("{base}{s}"), Kind::File));
        }
        false
    })
}

/// What a python layer expects of the final image.
pub struct Expect<'a> {
    pub layer: &'a str,
    pub me: usize,
    pub target: &'a Target,
    /// (name, version) of every distribution the layer installs.
    pub dists: &'a [(String, String)],
    pub require: &'a [String],
    pub scripts: &'a [String],
}

/// All checks of one python layer on the merged filesystem; every problem is reported.
pub fn check_layer(fs: &Rootfs, config: &ImageConfig, e: &Expect, problems: &mut Vec<Problem>) {
    let t = e.target;
    let site = rel(&t.site_dir).to_string();
    let mut out = Vec::new();
    let infos = dist_infos(fs, &site);
    let mut claimed = BTreeSet::new();
    let mut mine = BTreeSet::new();
    for (name, version) in e.dists {
        let label = format!("{name} {version}");
        let want = Version::parse(version);
        // An empty version: a project whose version is dynamic (the lock records none).
        let found = infos.iter().find(|(_, n, v)| {
            *n == dist_info_name(name)
                && (version.is_empty() || Version::parse(v) == want || v == version)
        });
        let Some((dir, _, _)) = found else {
            let gone = fs.removed.iter().find(|(k, _)| {
                k.starts_with(&format!("{site}/{}-", dist_info_name(name)))
                    && k.ends_with(".dist-info")
            });
            out.push(match gone {
                Some((k, l)) => format!(
                    "{label}: {} was deleted by layer {}",
                    abs(k),
                    layer_label(config, *l).trim_start_matches("layer ")
                ),
                None => format!("{label}: no .dist-info directory in {}", t.site_dir),
            });
            continue;
        };
        mine.insert(dir.clone());
        let rec = format!("{dir}/RECORD");
        if let Some((_, l)) = fs.files.get(&rec).filter(|(_, l)| *l != e.me) {
            out.push(format!(
                "{label}: {} is replaced by layer {}",
                abs(&rec),
                layer_label(config, *l).trim_start_matches("layer ")
            ));
        }
        match fs.captured.get(&rec) {
            Some(text) => claimed.extend(check_rows(
                fs,
                config,
                &site,
                &label,
                text,
                Some(e.me),
                &mut out,
            )),
            None => out.push(format!("{label}: {} is missing", abs(&rec))),
        }
    }
    for (dir, _, _) in &infos {
        if !mine.contains(dir) {
            if let Some(text) = fs.captured.get(&format!("{dir}/RECORD")) {
                let rows = record::parse(text).unwrap_or_default();
                claimed.extend(rows.iter().filter_map(|r| installed_path(&site, &r.path)));
            }
        }
    }
    let prefix = format!("{site}/");
    for (path, (node, layer)) in fs
        .files
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
    {
        if *layer >= e.me && node.kind != Kind::Dir && !claimed.contains(path) && !is_bytecode(path)
        {
            out.push(format!(
                "{} (written by layer {}) is claimed by no RECORD",
                abs(path),
                layer_label(config, *layer).trim_start_matches("layer ")
            ));
        }
    }
    let pythonpath = env_list(config, "PYTHONPATH");
    let mut roots = pythonpath.clone();
    for r in std::iter::once(&t.site_dir).chain(&t.sys_path) {
        if !roots.contains(r) {
            roots.push(r.clone());
        }
    }
    let suffixes = t.extension_suffixes();
    for m in e.require {
        if !importable(fs, &roots, m, &suffixes) {
            let p = m.replace('.', "/");
            out.push(format!(
                "require `{m}`: not importable by {}: none of {p}.py, {p}/__init__.py, {p}/ or {p}{} exists under {}",
                t.interpreter,
                suffixes.join(" / "),
                roots.join(", ")
            ));
        }
    }
    let path = path_dirs(config);
    for s in e.scripts {
        let found = path.iter().find_map(|d| {
            let p = format!("{d}/{s}");
            fs.resolve(&p)
                .filter(|(_, n)| matches!(n.kind, Kind::File | Kind::Link))
                .map(|(real, n)| (p, real, n.mode))
        });
        let Some((p, real, mode)) = found else {
            let hint = if fs.exists(&format!("{}/{s}", t.scripts_dir)) {
                format!(
                    "; it is installed in {}, which is not on PATH",
                    t.scripts_dir
                )
            } else {
                String::new()
            };
            out.push(format!(
                "script `{s}` is not in any PATH directory of the image (PATH={}){hint}",
                path.join(":")
            ));
            continue;
        };
        if mode & 0o111 == 0 {
            out.push(format!("script `{s}` ({p}) is not executable"));
        }
        if let Some(line) = fs.captured.get(&real) {
            if let Some(why) = crate::start::exec_problem(fs, &path, line) {
                out.push(format!("script `{s}` ({p}): {why}"));
            }
        }
    }
    if !pythonpath.contains(&t.site_dir) && !t.sys_path.contains(&t.site_dir) {
        out.push(format!(
            "site directory {} is not on the default sys.path of {} ({}) and PYTHONPATH does not name it; set PYTHONPATH={} in the image's env",
            t.site_dir, t.interpreter, t.sys_path.join(", "), t.site_dir
        ));
    }
    match fs.resolve(&t.interpreter) {
        Some((_, n)) if n.mode & 0o111 != 0 => {}
        _ => out.push(format!(
            "the interpreter {} that the scripts run is missing from the image",
            t.interpreter
        )),
    }
    problems.extend(out.into_iter().map(|message| Problem {
        layer: e.layer.to_string(),
        message,
    }));
}

/// `imgbuild verify` of any image: every `.dist-info/RECORD` in a `site-packages` or
/// `dist-packages` directory is checked (rows, unclaimed files in the packages it names,
/// scripts' interpreters, an interpreter of the matching version on PATH).
pub fn check_rootfs(fs: &Rootfs, config: &ImageConfig) -> Vec<Problem> {
    let mut by_site: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in fs
        .captured
        .keys()
        .filter(|k| k.ends_with(".dist-info/RECORD"))
    {
        let parts: Vec<&str> = k.rsplitn(3, '/').collect();
        if let [_, _, site] = parts.as_slice() {
            if site.ends_with("/site-packages") || site.ends_with("/dist-packages") {
                by_site.entry(site.to_string()).or_default().push(k.clone());
            }
        }
    }
    let path = path_dirs(config);
    let mut problems = Vec::new();
    for (site, records) in by_site {
        let mut claimed = BTreeSet::new();
        for rec in &records {
            let layer = fs.files.get(rec).map(|(_, l)| *l).unwrap_or(0);
            let dir = rec.trim_end_matches("/RECORD");
            let label = dir
                .rsplit('/')
                .next()
                .unwrap_or(dir)
                .trim_end_matches(".dist-info")
                .replacen('-', " ", 1);
            let mut out = Vec::new();
            let text = &fs.captured[rec];
            claimed.extend(check_rows(fs, config, &site, &label, text, None, &mut out));
            for row in record::parse(text).unwrap_or_default() {
                let Some(p) = installed_path(&site, &row.path) else {
                    continue;
                };
                if p.starts_with(&format!("{site}/")) || !p.contains("/bin/") {
                    continue;
                }
                if let Some(line) = fs.resolve(&p).and_then(|(real, _)| fs.captured.get(&real)) {
                    if let Some(why) = crate::start::exec_problem(fs, &path, line) {
                        out.push(format!("{label}: script {}: {why}", abs(&p)));
                    }
                }
            }
            let lab = layer_label(config, layer);
            problems.extend(out.into_iter().map(|message| Problem {
                layer: lab.clone(),
                message,
            }));
        }
        let tops: BTreeSet<&str> = claimed
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("{site}/")))
            .filter_map(|r| r.split('/').next())
            .collect();
        for top in tops {
            let base = format!("{site}/{top}");
            let under = format!("{base}/");
            let own = fs.files.get_key_value(&base);
            let below = fs
                .files
                .range(under.clone()..)
                .take_while(|(k, _)| k.starts_with(&under));
            for (p, (n, l)) in own.into_iter().chain(below) {
                if n.kind != Kind::Dir && !claimed.contains(p) && !is_bytecode(p) {
                    problems.push(Problem {
                        layer: layer_label(config, *l),
                        message: format!("{} is claimed by no RECORD", abs(p)),
                    });
                }
            }
        }
        if let Some(minor) = site.split('/').find_map(|c| c.strip_prefix("python3.")) {
            let name = format!("python3.{minor}");
            if !path.iter().any(|d| fs.exists(&format!("{d}/{name}"))) {
                problems.push(Problem {
                    layer: "image".into(),
                    message: format!("{} holds packages for Python 3.{minor}, but no PATH directory of the image has {name}", abs(&site)),
                });
            } else if let Some(message) = unread_site(fs, config, &site) {
                problems.push(Problem {
                    layer: "image".into(),
                    message,
                });
            }
        }
    }
    problems
}

/// How many installed distributions `check_rootfs` checks: the `.dist-info/RECORD` files
/// directly under a `site-packages` or `dist-packages` directory.
pub fn distributions(fs: &Rootfs) -> usize {
    fs.captured
        .keys()
        .filter(|k| k.ends_with(".dist-info/RECORD"))
        .filter(|k| {
            let parts: Vec<&str> = k.rsplitn(3, '/').collect();
            matches!(parts.as_slice(), [_, _, site] if site.ends_with("/site-packages") || site.ends_with("/dist-packages"))
        })
        .count()
}

/// A `PREFIX/lib/python3.N/site-packages` that no interpreter of the image reads: there is no
/// `PREFIX/bin/python3.N` (or `python3`, `python`) whose scheme it belongs to, PYTHONPATH does
/// not name it, and it is not a user site. Debian's python3 reads `dist-packages` only, so
/// packages copied into `/usr/local/lib/python3.N/site-packages` of a Debian image are
/// invisible to it. Said only where the image is known to have Debian's python3 (its
/// `/usr/lib/python3/dist-packages`): Fedora's python3, for one, does read
/// `/usr/local/lib/python3.N/site-packages`.
fn unread_site(fs: &Rootfs, config: &ImageConfig, site: &str) -> Option<String> {
    if !fs.exists("/usr/lib/python3/dist-packages") {
        return None;
    }
    let site = abs(site);
    let lib = site.strip_suffix("/site-packages")?;
    let (libdir, name) = lib.rsplit_once('/')?;
    name.strip_prefix("python3.")?;
    let prefix = libdir
        .strip_suffix("/lib")
        .or_else(|| libdir.strip_suffix("/lib64"))?;
    if site.contains("/.local/lib/") || env_list(config, "PYTHONPATH").contains(&site) {
        return None;
    }
    let own = [name, "python3", "python"]
        .iter()
        .any(|n| fs.exists(&format!("{prefix}/bin/{n}")));
    if own {
        return None;
    }
    let mut msg = format!(
        "{site} holds packages that no interpreter of the image reads: there is no {prefix}/bin/{name} for it and PYTHONPATH does not name it"
    );
    let debian = format!("/usr/bin/{name}");
    if fs.exists(&debian) {
        msg.push_str(&format!(
            "; {debian} is Debian's python3, which reads {prefix}/lib/{name}/dist-packages"
        ));
    }
    Some(msg)
}

#[cfg(test)]
mod tests;
