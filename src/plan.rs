//! From an image of `imgbuild.toml` to its plan: the build context, resolved once, and one
//! recipe per layer (`python` layers from `python`, the others from `filelayer`).

use crate::cache::StatCache;
use crate::compress::{self, Compression};
use crate::filelayer::FilesRecipe;
use crate::image::Platform;
use crate::project::{self, Project};
use crate::recipe::{Ctx, Recipe};
use crate::usage;
use anyhow::Result;

/// Builds the recipe for each layer of an image.
pub fn recipes(cx: &Ctx) -> Result<Vec<Box<dyn Recipe>>> {
    let workdir = cx.image.workdir.clone().unwrap_or_else(|| "/".into());
    cx.image
        .layers
        .iter()
        .map(|l| -> Result<Box<dyn Recipe>> {
            match (&l.python, &l.debian) {
                (Some(_), Some(_)) => Err(usage!(
                    "layer `{}`: `python` and `debian` cannot be combined in one layer: make two layers",
                    l.name
                )),
                (Some(_), _) | (_, Some(_)) if l.files.is_some() || l.preset.is_some() => Err(usage!(
                    "layer `{}`: `{}` cannot be combined with `files` or `preset` in one layer",
                    l.name,
                    if l.python.is_some() { "python" } else { "debian" }
                )),
                (Some(_), None) => crate::python::recipe(cx, l),
                (None, Some(d)) => Ok(Box::new(crate::debian::layer::DebianLayer::new(cx, l, d)?)),
                (None, None) => Ok(Box::new(FilesRecipe::new(cx, l, &workdir)?)),
            }
        })
        .collect()
}

/// Settings given on the command line, over imgbuild.toml's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    pub compression: Option<Compression>,
    pub gzip_level: Option<u32>,
}

/// The build context of image `name` (every setting resolved once) and its layers' recipes.
/// The layers' inputs are checked here (a missing build output or lock file fails now), so a
/// bad project fails before a base is pulled or anything is written. `platform` is one of
/// `project.platforms(image)` (or one `--platform` asked for): the image's base on it is
/// the one planned.
pub fn plan(
    project: &Project,
    name: &str,
    o: Overrides,
    platform: &Platform,
) -> Result<(Ctx, Vec<Box<dyn Recipe>>)> {
    let cx = context(project, name, o, platform)?;
    let recipes = recipes(&cx)?;
    Ok((cx, recipes))
}

fn context(project: &Project, name: &str, o: Overrides, platform: &Platform) -> Result<Ctx> {
    let mut img = project.image(name)?.clone();
    img.base = project.base_for(&img, platform)?;
    let store = project.store()?;
    let compression = match o.compression {
        Some(c) => c,
        None => {
            let s = img
                .compression
                .as_deref()
                .or(project.spec.defaults.compression.as_deref())
                .unwrap_or("gzip");
            Compression::parse(s).ok_or_else(|| {
                usage!(
                    "compression `{s}` in {}: use gzip, zstd or none",
                    project.spec_path.display()
                )
            })?
        }
    };
    let gzip_level = o
        .gzip_level
        .or(img.gzip_level)
        .or(project.spec.defaults.gzip_level)
        .unwrap_or(compress::DEFAULT_GZIP_LEVEL);
    if !(1..=9).contains(&gzip_level) {
        return Err(usage!(
            "gzip_level {gzip_level} in {}: use 1 (fastest) to 9 (smallest)",
            project.spec_path.display()
        ));
    }
    let platform = platform.clone();
    if let Some(h) = &img.healthcheck {
        h.to_config()
            .map_err(|e| usage!("image `{name}` in {}: {e}", project.spec_path.display()))?;
    }
    for v in &img.volumes {
        if !v.starts_with('/') {
            return Err(usage!(
                "image `{name}` in {}: volume `{v}` must be an absolute path",
                project.spec_path.display()
            ));
        }
    }
    Ok(Ctx {
        root: project.root.clone(),
        stat: StatCache::load(&store, &project.root),
        store,
        source_date: project::source_date(Some(&project.root))?,
        revision: project::revision(&project.root),
        compression,
        gzip_level,
        platform,
        image: img,
        image_name: name.to_string(),
        pins: Default::default(),
        notes: Default::default(),
        debian_mirror: project.spec.defaults.debian_mirror.clone(),
        multi_platform: project.platforms(project.image(name)?)?.len() > 1,
        remote: None,
    })
}
