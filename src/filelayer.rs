//! A layer of project files (optionally from a preset): `files`, `exclude`, `ensure_dirs`,
//! `expect`, `owner`, `mode`, `root`.

use crate::error::Hint;
use crate::files::{self, Collector, Mapping};
use crate::image::ImageConfig;
use crate::layer::Entry;
use crate::preset;
use crate::recipe::{BaseView, Ctx, Problem, Recipe, PREHASH_LIMIT, UNHASHED};
use crate::rootfs::{Listing, Rootfs};
use crate::spec::LayerSpec;
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
    collected: Option<Collector>,
}

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
        let owner = l.owner.as_deref().map(files::parse_owner).transpose()?;
        if files.is_empty() && ensure_dirs.is_empty() {
            return Err(usage!("layer `{}` has nothing to add: give it `files`, `ensure_dirs`, `preset` or `python`", l.name));
        }
        let base = match &l.root {
            Some(r) => cx.root.join(r),
            None => cx.root.clone(),
        };
        let mut mappings = Vec::new();
        for f in &files {
            let to = preset::expand(&f.to, workdir);
            let to = if to.starts_with('/') {
                to
            } else {
                format!("{}/{to}", workdir.trim_end_matches('/'))
            };
            let to = files::image_path(&to).with_context(|| format!("layer `{}`", l.name))?;
            let from = files::resolve_from(&cx.root, &base, &f.from)
                .with_context(|| format!("layer `{}`", l.name))?;
            let from = match from {
                Some(p) => p,
                None if f.optional => continue,
                None => {
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
                }
            };
            mappings.push(Mapping {
                from,
                to,
                mode: f.mode.as_deref().map(files::parse_mode).transpose()?,
                owner: f
                    .owner
                    .as_deref()
                    .map(files::parse_owner)
                    .transpose()?
                    .or(owner),
                optional: f.optional,
                written: f.from.clone(),
            });
        }
        for d in &ensure_dirs {
            files::image_path(d).with_context(|| format!("layer `{}`: ensure_dirs", l.name))?;
        }
        Ok(FilesRecipe {
            spec: l.clone(),
            mappings,
            exclude,
            ensure_dirs,
            expect,
            owner,
            hint,
            collected: None,
        })
    }

    fn collect(&mut self, cx: &Ctx) -> Result<&Collector> {
        if self.collected.is_none() {
            let mut c = Collector::new(files::globs(&self.exclude)?);
            for m in &self.mappings {
                c.add(m, &cx.stat)
                    .with_context(|| format!("layer `{}`: {}", self.spec.name, m.written))?;
            }
            for d in &self.ensure_dirs {
                c.ensure_dir(d, self.owner)?;
            }
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
    fn inputs(&mut self, cx: &Ctx, _base: &BaseView) -> Result<BTreeMap<String, String>> {
        let c = self.collect(cx)?;
        let mut m = c.summary();
        if !c.unhashed.is_empty() {
            m.insert(UNHASHED.into(), c.unhashed.len().to_string());
        }
        m.insert("[layer]".into(), serde_json::to_string(&self.spec)?);
        Ok(m)
    }
    fn entries(&mut self, cx: &Ctx, _base: &BaseView) -> Result<Vec<Entry>> {
        self.collect(cx)?;
        Ok(std::mem::take(
            &mut self.collected.as_mut().unwrap().entries,
        ))
    }
    fn inputs_after(
        &mut self,
        cx: &Ctx,
        listing: &Listing,
        inputs: &mut BTreeMap<String, String>,
    ) -> bool {
        let Some(c) = self.collected.as_mut() else {
            return false;
        };
        for (path, size, sha) in c.hashes_from(&cx.stat, listing) {
            if let Some(v) = inputs.get_mut(&path) {
                *v = v.replacen(&format!("file {size}  "), &format!("file {size} {sha} "), 1);
            }
        }
        inputs.remove(UNHASHED);
        c.unhashed.is_empty()
    }
    fn check(&self, fs: &Rootfs, _config: &ImageConfig, _me: usize, problems: &mut Vec<Problem>) {
        for e in &self.expect {
            if !fs.exists(e) {
                let mut message = format!("expected path {e} is missing from the image");
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
    fn created_by(&self) -> String {
        let what: Vec<String> = self
            .mappings
            .iter()
            .map(|m| format!("{} → /{}", m.written, m.to))
            .collect();
        format!("imgbuild layer {} ({})", self.spec.name, what.join(", "))
    }
}
