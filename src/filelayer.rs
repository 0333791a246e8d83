//! A layer of project files (optionally from a preset): `files`, `exclude`, `ensure_dirs`,
//! `writable`, `expect`, `owner`, `mode`, `root`.
//!
//! `expect` is checked against what this layer itself provides: a path the base already has
//! (nginx's own `index.html`) does not satisfy it. `{webroot}` in a preset is the directory the
//! base's web server serves, read from its configuration (nginx `root`, caddy `root`, busybox
//! httpd `-h`); a base whose server imgbuild cannot read fails, asking for `to`.

use crate::error::Hint;
use crate::files::{self, Collector, Mapping};
use crate::image::ImageConfig;
use crate::layer::Entry;
use crate::preset;
use crate::recipe::{BaseView, Ctx, Problem, Recipe, PREHASH_LIMIT, UNHASHED};
use crate::rootfs::{Listing, Rootfs};
use crate::spec::{FileSpec, LayerSpec};
use crate::usage;
use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// A layer of project files (optionally from a preset).
pub struct FilesRecipe {
    spec: LayerSpec,
    mappings: Vec<Mapping>,
    exclude: Vec<String>,
    ensure_dirs: Vec<String>,
    expect: Vec<String>,
    owner: Option<(u32, u32)>,
    hint: Option<String>,
    /// Directories owned by the image's user (resolved against the base when collected).
    writable: Vec<String>,
    /// Files whose `to` names `{webroot}`: mapped once the base is known.
    deferred: Vec<(FileSpec, std::path::PathBuf)>,
    /// The web root the base serves, once detected.
    webroot: Option<String>,
    collected: Option<Collector>,
}

const WEBROOT: &str = "{webroot}";

impl FilesRecipe {
    pub fn new(cx: &Ctx, l: &LayerSpec, workdir: &str) -> Result<FilesRecipe> {
        let p = match &l.preset {
            Some(name) => Some(preset::get(name).with_context(|| format!("layer `{}`", l.name))?),
            None => None,
        };
        let exp = |v: &Vec<String>| {
            v.iter()
                .map(|s| preset::expand(s, workdir))
                .collect::<Vec<_>>()
        };
        let files = l
            .files
            .clone()
            .or_else(|| p.as_ref().and_then(|p| p.files.clone()))
            .unwrap_or_default();
        let exclude = l
            .exclude
            .clone()
            .or_else(|| p.as_ref().and_then(|p| p.exclude.clone()))
            .unwrap_or_default();
        let ensure_dirs = exp(&l
            .ensure_dirs
            .clone()
            .or_else(|| p.as_ref().and_then(|p| p.ensure_dirs.clone()))
            .unwrap_or_default());
        let expect = exp(&l
            .expect
            .clone()
            .or_else(|| p.as_ref().and_then(|p| p.expect.clone()))
            .unwrap_or_default());
        let hint = l
            .hint
            .clone()
            .or_else(|| p.as_ref().and_then(|p| p.hint.clone()));
        let writable = exp(&l
            .writable
            .clone()
            .or_else(|| p.as_ref().and_then(|p| p.writable.clone()))
            .unwrap_or_default());
        let owner = l.owner.as_deref().map(files::parse_owner).transpose()?;
        if files.is_empty() && ensure_dirs.is_empty() {
            return Err(usage!("layer `{}` has nothing to add: give it `files`, `ensure_dirs`, `preset` or `python`", l.name));
        }
        let base = match &l.root {
            Some(r) => cx.root.join(r),
            None => cx.root.clone(),
        };
        let mut mappings = Vec::new();
        let mut deferred = Vec::new();
        for f in &files {
            // A missing source: skipped when optional, else the error says what makes it.
            let Some(from) = files::resolve_from(&cx.root, &base, &f.from)
                .with_context(|| format!("layer `{}`", l.name))?
            else {
                if f.optional {
                    continue;
                }
                let mut e = usage!(
                    "layer `{}`: `from = \"{}\"` does not exist ({})",
                    l.name,
                    f.from,
                    base.join(&f.from).display()
                );
                if let Some(h) = &hint {
                    e = e.hint(h.clone());
                }
                return Err(e);
            };
            let to = preset::expand(&f.to, workdir);
            if to.contains(WEBROOT) {
                deferred.push((f.clone(), from));
                continue;
            }
            let to = if to.starts_with('/') {
                to
            } else {
                format!("{}/{to}", workdir.trim_end_matches('/'))
            };
            mappings.push(mapping(&l.name, f, from, &to, owner)?);
        }
        for d in ensure_dirs.iter().chain(&writable) {
            files::image_path(d).with_context(|| format!("layer `{}`: ensure_dirs", l.name))?;
        }
        // With its own `files`, a layer's `{webroot}` is where it puts them.
        let webroot = match &l.files {
            Some(own) if p.is_some() => own
                .first()
                .map(|f| preset::expand(&f.to, workdir))
                .filter(|t| !t.contains(WEBROOT)),
            _ => None,
        };
        Ok(FilesRecipe {
            spec: l.clone(),
            mappings,
            exclude,
            ensure_dirs,
            expect,
            owner,
            hint,
            writable,
            deferred,
            webroot,
            collected: None,
        })
    }

    /// `{webroot}` resolved against the base (once): the deferred files mapped, `expect` expanded.
    fn resolve_webroot(&mut self, base: &BaseView) -> Result<()> {
        let needed = !self.deferred.is_empty() || self.expect.iter().any(|e| e.contains(WEBROOT));
        if !needed {
            return Ok(());
        }
        let root = match self.webroot.clone() {
            Some(r) => r,
            None => webroot(base)?.ok_or_else(|| {
                usage!(
                    "cannot tell which directory the base `{}` serves files from (no nginx, caddy or busybox httpd configuration found)",
                    base.base.name
                )
                .hint("give the layer its own `files = [{ from = \"dist\", to = \"/DIR/THE/SERVER/SERVES\" }]`")
            })?,
        };
        let root = root.trim_end_matches('/').to_string();
        for (f, from) in std::mem::take(&mut self.deferred) {
            let to = f.to.replace(WEBROOT, &root);
            self.mappings
                .push(mapping(&self.spec.name, &f, from, &to, self.owner)?);
        }
        for e in &mut self.expect {
            *e = e.replace(WEBROOT, &root);
        }
        self.webroot = Some(root);
        Ok(())
    }

    fn collect(&mut self, cx: &Ctx, base: &BaseView) -> Result<&Collector> {
        if self.collected.is_none() {
            self.resolve_webroot(base)?;
            let mut c = Collector::new(files::globs(&self.exclude)?);
            for m in &self.mappings {
                c.add(m, &cx.stat)
                    .with_context(|| format!("layer `{}`: {}", self.spec.name, m.written))?;
            }
            for d in &self.ensure_dirs {
                c.ensure_dir(d, self.owner)?;
            }
            if !self.writable.is_empty() {
                let owner = image_user(cx, base)
                    .with_context(|| format!("layer `{}`: writable", self.spec.name))?;
                for d in &self.writable {
                    c.own_dir(d, owner)
                        .with_context(|| format!("layer `{}`: writable", self.spec.name))?;
                }
            }
            c.finish()
                .with_context(|| format!("layer `{}`", self.spec.name))?;
            if c.unhashed_bytes() <= PREHASH_LIMIT {
                c.hash_unhashed(&cx.stat)?;
            }
            self.collected = Some(c);
        }
        Ok(self.collected.as_ref().unwrap())
    }
}

impl Recipe for FilesRecipe {
    fn name(&self) -> &str {
        &self.spec.name
    }
    /// Files are the same bytes on every platform (what they depend on of the base, such as
    /// owners' ids, is in the inputs).
    fn platform_bound(&self) -> bool {
        false
    }
    /// The layer's settings; its paths are `rows`.
    fn inputs(&mut self, cx: &Ctx, base: &BaseView) -> Result<BTreeMap<String, String>> {
        let c = self.collect(cx, base)?;
        let mut m = BTreeMap::new();
        if c.unhashed_files() > 0 {
            m.insert(UNHASHED.into(), c.unhashed_files().to_string());
        }
        m.insert("[layer]".into(), serde_json::to_string(&self.spec)?);
        if let Some(w) = &self.webroot {
            m.insert("[webroot]".into(), w.clone());
        }
        Ok(m)
    }
    fn rows<'a>(
        &'a self,
        written: Option<(&'a [Entry], &'a Listing)>,
    ) -> Option<Box<dyn crate::key::Rows + 'a>> {
        match written {
            Some((entries, listing)) => Some(Box::new(files::WrittenRows { entries, listing })),
            // With files the stat cache did not know the key is not looked up: no rows.
            None => {
                let c = self.collected.as_ref()?;
                (c.unhashed_files() == 0).then(|| Box::new(c.rows()) as Box<dyn crate::key::Rows>)
            }
        }
    }
    fn entries(&mut self, cx: &Ctx, base: &BaseView) -> Result<Vec<Entry>> {
        self.collect(cx, base)?;
        let c = self.collected.as_mut().unwrap();
        if c.unhashed_files() > 0 {
            // The rows come from the written layer now.
            c.forget_hashes();
        }
        Ok(std::mem::take(&mut c.entries))
    }
    /// The rows of the written layer have every file's hash.
    fn inputs_after(
        &mut self,
        _cx: &Ctx,
        _listing: &Listing,
        inputs: &mut BTreeMap<String, String>,
    ) -> bool {
        inputs.remove(UNHASHED);
        true
    }
    fn written(&mut self, cx: &Ctx, listing: &Listing) {
        if let Some(c) = self.collected.as_mut() {
            c.learn(&cx.stat, listing);
        }
    }
    fn check(&self, fs: &Rootfs, _config: &ImageConfig, me: usize, problems: &mut Vec<Problem>) {
        for e in &self.expect {
            // The layer must provide the path itself (or a later layer): the base's does not count.
            let written = e.trim_start_matches('/');
            let owner = fs.files.get(written).map(|(_, l)| *l).or_else(|| {
                fs.resolve(e)
                    .and_then(|(real, _)| fs.files.get(&real).map(|(_, l)| *l))
            });
            let message = match owner {
                Some(l) if l >= me || written.is_empty() => None,
                Some(_) => Some(format!(
                    "expected path {e} comes from the base image, not from this layer"
                )),
                None => Some(format!("expected path {e} is missing from the image")),
            };
            if let Some(mut message) = message {
                if let Some(h) = &self.hint {
                    message.push_str(&format!(" (hint: {h})"));
                }
                problems.push(Problem {
                    layer: self.spec.name.clone(),
                    message,
                });
            }
        }
    }
    /// The npm packages the layer ships or was built from, as their lock states them: a
    /// `node_modules/.package-lock.json`, `npm-shrinkwrap.json` or `package-lock.json` at the
    /// top of a directory the layer copies; else, for a preset's layer or one with a `root`,
    /// the lock of that directory (the build's production set).
    fn supply(&self, cx: &Ctx) -> Result<crate::sbom::Supply> {
        use crate::sbom::npm;
        let mut locks: Vec<(std::path::PathBuf, bool)> = Vec::new();
        for m in &self.mappings {
            let found = if m.from.is_dir() {
                npm::lock_of(&m.from)
            } else {
                m.from
                    .file_name()
                    .filter(|n| npm::LOCKS.iter().any(|l| std::ffi::OsStr::new(l) == *n))
                    .map(|_| (m.from.clone(), false))
            };
            if let Some(l) = found.filter(|l| !locks.contains(l)) {
                locks.push(l);
            }
        }
        if locks.is_empty() && (self.spec.preset.is_some() || self.spec.root.is_some()) {
            let dir = match &self.spec.root {
                Some(r) => cx.root.join(r),
                None => cx.root.clone(),
            };
            locks.extend(
                npm::LOCKS
                    .iter()
                    .map(|l| dir.join(l))
                    .find(|p| p.is_file())
                    .map(|p| (p, false)),
            );
        }
        let root = cx.root.canonicalize().unwrap_or_else(|_| cx.root.clone());
        let mut out = crate::sbom::Supply::default();
        for (lock, all) in locks {
            let rel = lock
                .strip_prefix(&root)
                .or_else(|_| lock.strip_prefix(&cx.root))
                .unwrap_or(&lock)
                .display()
                .to_string();
            let s = npm::supply(&lock, &rel, all, &cx.platform)?;
            for p in s.packages {
                if !out.packages.contains(&p) {
                    out.packages.push(p);
                }
            }
            out.inputs.extend(s.inputs);
        }
        Ok(out)
    }
    fn created_by(&self) -> String {
        let what: Vec<String> = self
            .mappings
            .iter()
            .map(|m| format!("{} → /{}", m.written, m.to))
            .collect();
        format!("imgbuild layer {} ({})", self.spec.name, what.join(", "))
    }
}

/// One file of a layer mapped to its place in the image (`to` absolute), with its mode and owner.
fn mapping(
    layer: &str,
    f: &FileSpec,
    from: std::path::PathBuf,
    to: &str,
    owner: Option<(u32, u32)>,
) -> Result<Mapping> {
    Ok(Mapping {
        from,
        to: files::image_path(to).with_context(|| format!("layer `{layer}`"))?,
        mode: f.mode.as_deref().map(files::parse_mode).transpose()?,
        owner: f
            .owner
            .as_deref()
            .map(files::parse_owner)
            .transpose()?
            .or(owner),
        optional: f.optional,
        written: f.from.clone(),
    })
}

/// The directory the base's web server serves: nginx's `root` in its default site
/// (`conf.d/default.conf` of the official image, Debian's `sites-enabled/default`, else
/// `nginx.conf`), caddy's `root` in its Caddyfile, or busybox httpd's `-h DIR` in the base's
/// command. `None` when the base has none of them.
pub fn webroot(base: &BaseView) -> Result<Option<String>> {
    let nginx = [
        "/etc/nginx/conf.d/default.conf",
        "/etc/nginx/sites-enabled/default",
        "/etc/nginx/nginx.conf",
    ];
    let caddy = "/etc/caddy/Caddyfile";
    let mut asked: Vec<&str> = nginx.to_vec();
    asked.push(caddy);
    let found = base.read_files(&asked)?;
    for f in nginx {
        if let Some(root) = found
            .get(f)
            .and_then(|t| directive(&String::from_utf8_lossy(t), "root", false))
        {
            return Ok(Some(root));
        }
    }
    if let Some(root) = found
        .get(caddy)
        .and_then(|t| directive(&String::from_utf8_lossy(t), "root", true))
    {
        return Ok(Some(root));
    }
    let rc = &base.config().config;
    let argv: Vec<&String> = rc
        .entrypoint
        .iter()
        .flatten()
        .chain(rc.cmd.iter().flatten())
        .collect();
    if argv.iter().any(|a| a.ends_with("httpd")) {
        if let Some(i) = argv.iter().position(|a| *a == "-h") {
            if let Some(d) = argv.get(i + 1) {
                return Ok(Some(d.to_string()));
            }
        }
    }
    Ok(None)
}

/// The first `NAME value` directive of a config text (comments skipped); caddy writes
/// `root * DIR`, so `skip_matcher` drops a `*` matcher.
fn directive(text: &str, name: &str, skip_matcher: bool) -> Option<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == name).then_some(())?;
            let mut v = w.next()?;
            if skip_matcher && v == "*" {
                v = w.next()?;
            }
            let v = v.trim_end_matches(';').trim_matches('"');
            v.starts_with('/').then(|| v.to_string())
        })
}

/// The image's `user` as uid:gid: numbers as given, names through the base's /etc/passwd and
/// /etc/group; root when the image sets no user.
fn image_user(cx: &Ctx, base: &BaseView) -> Result<(u32, u32)> {
    let Some(user) = cx.image.user.as_deref().filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let files = base.read_files(&["/etc/passwd", "/etc/group"])?;
    let text = |f: &str| {
        files
            .get(f)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let (passwd, group) = (text("/etc/passwd"), text("/etc/group"));
    let entry = |text: &str, by: &dyn Fn(&[&str]) -> bool| -> Option<(u32, u32)> {
        text.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| by(f))
            .and_then(|f| {
                Some((
                    f.get(2)?.parse().ok()?,
                    f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0),
                ))
            })
    };
    let (uid, default_gid) = match u.parse::<u32>() {
        Ok(n) => (
            n,
            entry(&passwd, &|f| f.get(2) == Some(&u))
                .map(|e| e.1)
                .unwrap_or(n),
        ),
        Err(_) => entry(&passwd, &|f| f.first() == Some(&u)).ok_or_else(|| {
            usage!("user `{u}` of the image is not in the base's /etc/passwd; use uid:gid numbers")
        })?,
    };
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => entry(&group, &|f| f.first() == Some(&g))
                .map(|e| e.0)
                .ok_or_else(|| {
                    usage!("group `{g}` of the image is not in the base's /etc/group")
                })?,
        },
    };
    Ok((uid, gid))
}
