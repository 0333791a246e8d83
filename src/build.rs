//! `imgbuild build`: images in dependency order; for each, base → layers (cached) →
//! verification → image → its SBOM and provenance (`referrers`) → destination (and `--push`).

use crate::base;
use crate::cache::{self, CachedLayer};
use crate::image::{self, BaseImage, Built, Descriptor, History, ImageConfig};
use crate::key;
use crate::layer::{self, LayerBlob};
use crate::plan::{self, Overrides};
use crate::progress::Progress;
use crate::project::Project;
use crate::publish;
use crate::recipe::{self, BaseView, Ctx, Problem, Recipe, UNHASHED};
use crate::record::{self, LayerReport, Summary};
use crate::referrers;
use crate::registry;
use crate::rootfs::{Listing, Rootfs};
use crate::sharedcache::{self, SharedCache};
use crate::start;
use crate::target::{Destination, Output};
use anyhow::{Context, Result};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Default, Clone)]
pub struct Options {
    pub output: Option<String>,
    pub compression: Option<crate::compress::Compression>,
    pub gzip_level: Option<u32>,
    pub verbose: bool,
    /// Also publish to the image's `repository` (`--push`), with these tags (`--tag`).
    pub push: bool,
    pub tags: Vec<String>,
    /// Registry settings (insecure hosts, credentials) for bases and `--push`.
    pub registry: registry::Options,
    /// The shared cache (`cache = "REPO"`, `--cache`), when there is one.
    pub shared: Option<sharedcache::Settings>,
    /// `--platform` (repeatable): build for these instead of the image's `platforms`.
    pub platforms: Vec<image::Platform>,
}

impl Options {
    fn overrides(&self) -> Overrides {
        Overrides {
            compression: self.compression,
            gzip_level: self.gzip_level,
        }
    }
}

/// Builds images `names` of `project` (every image when empty) and the images they build on
/// (`base = "image:OTHER"`), each once, in dependency order; a cycle or a missing image is
/// reported before anything is built. An image built only because another builds on it goes
/// to the project's layout and is neither pushed nor reported. Calls `done` for each image
/// asked for, as soon as it is built.
pub fn build_all(
    project: &Project,
    names: &[String],
    opts: &Options,
    progress: &Progress,
    mut done: impl FnMut(&Built, &Summary) -> Result<()>,
) -> Result<()> {
    let order = project.build_order(names)?;
    let shared = match &opts.shared {
        Some(s) => Some(std::sync::Arc::new(SharedCache::new(
            s.clone(),
            &opts.registry,
        )?)),
        None => None,
    };
    let mut built: BTreeMap<String, Built> = BTreeMap::new();
    for name in &order {
        let asked = names.is_empty() || names.contains(name);
        let (b, summary) = if asked {
            build(project, name, opts, shared.as_ref(), &built, progress)?
        } else {
            let inner = Options {
                output: None,
                push: false,
                tags: vec![],
                ..opts.clone()
            };
            build(project, name, &inner, shared.as_ref(), &built, progress)?
        };
        if asked {
            done(&b, &summary)?;
        }
        built.insert(name.clone(), b);
    }
    Ok(())
}

/// One platform's plan: its context, base and recipes, with every layer's inputs resolved.
struct Planned {
    cx: Ctx,
    recipes: Vec<Box<dyn Recipe>>,
    base: BaseImage,
    build_bases: BTreeMap<String, BaseImage>,
    inputs: Vec<BTreeMap<String, String>>,
}

/// One platform's image, built: its manifest (with referrers), layers and where they came from.
struct PlatformBuilt {
    built: Built,
    layers: Vec<(LayerBlob, Option<Listing>)>,
    sources: Vec<(Source, String)>,
    names: Vec<String>,
    store_has_all: bool,
}

/// Builds image `name` of `project` and writes it to its destination: one image manifest for
/// one platform, an image index of one manifest per platform for several. Every platform is
/// planned — base resolved, every layer's inputs (wheel selection) checked — before any
/// layer is written, so a platform a lock cannot serve fails before work is done for the
/// others. `built` holds the images of this project built before it (an `image:OTHER` base
/// is taken from there, the entry for the same platform).
fn build(
    project: &Project,
    name: &str,
    opts: &Options,
    shared: Option<&std::sync::Arc<SharedCache>>,
    built: &BTreeMap<String, Built>,
    progress: &Progress,
) -> Result<(Built, Summary)> {
    let t0 = Instant::now();
    let mut timings = BTreeMap::new();
    let spec = project.image(name)?;
    let platforms = if opts.platforms.is_empty() {
        project.platforms(spec)?
    } else {
        opts.platforms.clone()
    };
    let many = platforms.len() > 1;
    let output = match &opts.output {
        Some(o) => Output::parse(o, name, &std::env::current_dir()?)?,
        None => Output::Layout {
            dir: project.state_dir().join("oci"),
            tag: name.to_string(),
        },
    };
    if many && matches!(output, Output::DockerArchive { .. }) {
        return Err(crate::archive::one_platform(name, &platforms));
    }
    let locked = crate::registry::lock::LockFile::load(&project.root)?.files;
    let mut planned = Vec::new();
    for platform in &platforms {
        planned.push(on_platform(
            plan_platform(project, name, opts, platform, &locked, built, shared),
            many.then_some((name, platform)),
        )?);
    }
    timings.insert("base".into(), t0.elapsed().as_secs_f64());

    // The platforms' layers are written side by side: much of a layer (unpacking wheels,
    // hashing, checks) is one thread's work, and an index of two fills the second core.
    let mut times: BTreeMap<String, f64> = BTreeMap::new();
    let shared: Option<&SharedCache> = shared.map(|c| &**c);
    let results: Vec<Result<(PlatformBuilt, BTreeMap<String, f64>)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = planned
            .into_iter()
            .map(|p| {
                sc.spawn(move || {
                    let mut t = BTreeMap::new();
                    build_platform(project, name, opts, shared, p, progress, &mut t).map(|b| (b, t))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut done: Vec<(image::Platform, PlatformBuilt)> = Vec::new();
    for (platform, r) in platforms.iter().zip(results) {
        let (pb, t) = on_platform(r, many.then_some((name, platform)))?;
        for (k, v) in t {
            // Side by side: the phases' longest platform, not their sum.
            let e = times.entry(k).or_default();
            *e = e.max(v);
        }
        done.push((platform.clone(), pb));
    }
    timings.extend(times);

    let t3 = Instant::now();
    let img = spec;
    let store = project.store()?;
    let built = if many {
        let mut ann = BTreeMap::new();
        ann.insert(
            image::ANN_CREATED.to_string(),
            done[0].1.built.manifest.annotations[image::ANN_CREATED].clone(),
        );
        if let Some(r) = done[0]
            .1
            .built
            .manifest
            .annotations
            .get(image::ANN_REVISION)
        {
            ann.insert(image::ANN_REVISION.to_string(), r.clone());
        }
        image::assemble_index(
            name,
            img.repository.clone(),
            done.iter()
                .map(|(p, b)| (p.clone(), b.built.clone()))
                .collect(),
            ann,
            &store,
        )?
    } else {
        done[0].1.built.clone()
    };
    let dest: Box<dyn Destination> = publish::destination(output);
    // A pushed build whose layers stayed in the shared cache (no `--output`): the default
    // layout would need their bytes, so it is not written; the registry gets the image.
    let remote = done.iter().filter(|(_, b)| !b.store_has_all).count();
    let mut written = if remote > 0 && opts.output.is_none() && opts.push {
        progress.note(&format!(
            "image `{name}`: layers are in the shared cache only, so the default layout {} is not written (pass --output oci:DIR to download them)",
            project.state_dir().join("oci").display()
        ));
        crate::target::Written::default()
    } else {
        dest.write(&built, &store)?
    };
    record::record_build(project, &built, &store)?;
    timings.insert("write".into(), t3.elapsed().as_secs_f64());
    if opts.push {
        let t4 = Instant::now();
        written = publish::push(project, &built, &opts.tags, &opts.registry, &store)?;
        timings.insert("push".into(), t4.elapsed().as_secs_f64());
    }
    let mut shared_report = None;
    if let Some(cache) = shared {
        // After the push, so that layer blobs just pushed to the same registry are mounted.
        let t5 = Instant::now();
        let mut new: Vec<(String, LayerBlob)> = Vec::new();
        for (_, b) in &done {
            for ((source, key), (blob, _)) in b.sources.iter().zip(&b.layers) {
                if *source != Source::Shared
                    && !key.is_empty()
                    && !new.iter().any(|(k, _)| k == key)
                {
                    new.push((key.clone(), blob.clone()));
                }
            }
        }
        cache.publish(&new, &store);
        timings.insert("shared_cache".into(), t5.elapsed().as_secs_f64());
        shared_report = Some(cache.take_report());
    }
    timings.insert("total".into(), t0.elapsed().as_secs_f64());

    let reports = |b: &PlatformBuilt| -> Vec<LayerReport> {
        b.names
            .iter()
            .zip(&b.layers)
            .zip(&b.sources)
            .map(|((n, (blob, _)), (source, _))| LayerReport {
                name: n.clone(),
                digest: blob.digest.clone(),
                diff_id: blob.diff_id.clone(),
                size: blob.size,
                // (not from the listing: the checks took the listings of the layers written now)
                cached: *source != Source::Built,
                source: Some(source.as_str().to_string()),
            })
            .collect()
    };
    let summary = Summary {
        image: name.to_string(),
        digest: Some(built.digest.clone()),
        repository: img.repository.clone(),
        reference: written.reference,
        layers: if many { vec![] } else { reports(&done[0].1) },
        platforms: if many {
            done.iter()
                .map(|(p, b)| record::PlatformReport {
                    platform: p.to_string(),
                    digest: b.built.digest.clone(),
                    layers: reports(b),
                })
                .collect()
        } else {
            vec![]
        },
        uploaded_bytes: written.uploaded_bytes,
        skipped_blobs: written.skipped_blobs,
        mounted_blobs: written.mounted_blobs,
        referrer_bytes: written.referrer_bytes,
        timings,
        shared_cache: shared_report,
    };
    Ok((built, summary))
}

/// An error of one platform of an index (`of`: the image and the platform) says which; a
/// one-platform build's (`None`) read as they always did.
fn on_platform<T>(r: Result<T>, of: Option<(&str, &image::Platform)>) -> Result<T> {
    match of {
        Some((name, p)) => r.with_context(|| format!("image `{name}` for {p}")),
        None => r,
    }
}

/// Plans image `name` on `platform`: context, base (an `image:OTHER` base is OTHER's image
/// for this platform), the builds' bases, and every layer's inputs.
fn plan_platform(
    project: &Project,
    name: &str,
    opts: &Options,
    platform: &image::Platform,
    locked: &BTreeMap<String, String>,
    built: &BTreeMap<String, Built>,
    shared: Option<&std::sync::Arc<SharedCache>>,
) -> Result<Planned> {
    let (mut cx, mut recipes) = plan::plan(project, name, opts.overrides(), platform)?;
    cx.pins.locked = locked.clone();
    let other = |other: &str| -> Result<Built> {
        let b = built.get(other).ok_or_else(|| {
            anyhow::anyhow!("image `{other}` must be built before `{name}` (build_order)")
        })?;
        Ok(b.for_platform(platform, &cx.store)?.clone())
    };
    let base = resolve_base(project, &cx, &opts.registry, other)?;
    if let Some(c) = shared {
        // The base's facts from the shared cache; recipes reach it through `cx.remote`.
        c.prefetch_base(&base, &cx.store, needs_bytes(opts, &cx.image, c));
        cx.remote = Some(c.clone());
    }
    let build_bases = resolve_build_bases(project, &cx, &recipes, &opts.registry, other)?;
    let view = BaseView::new(&base, &cx.store).with_build_bases(build_bases.clone());
    let mut inputs = Vec::new();
    for r in recipes.iter_mut() {
        inputs.push(
            r.inputs(&cx, &view)
                .with_context(|| format!("layer `{}`", r.name()))?,
        );
    }
    drop(view);
    Ok(Planned {
        cx,
        recipes,
        base,
        build_bases,
        inputs,
    })
}

/// One platform's layers (cached), verification, manifest and referrers.
fn build_platform(
    project: &Project,
    name: &str,
    opts: &Options,
    shared: Option<&SharedCache>,
    p: Planned,
    progress: &Progress,
    timings: &mut BTreeMap<String, f64>,
) -> Result<PlatformBuilt> {
    let Planned {
        cx,
        mut recipes,
        base,
        build_bases,
        inputs,
    } = p;
    let img = cx.image.clone();
    let t1 = Instant::now();
    let view = BaseView::new(&base, &cx.store).with_build_bases(build_bases);
    let shared = shared.map(|cache| Shared {
        needs_bytes: needs_bytes(opts, &img, cache),
        cache,
    });
    // Each layer, with its listing when it was written now (None: taken from a cache), where
    // it came from and its key.
    let mut layers: Vec<(LayerBlob, Option<Listing>)> = Vec::new();
    let mut sources: Vec<(Source, String)> = Vec::new();
    for (r, inputs) in recipes.iter_mut().zip(inputs) {
        let (blob, listing, source, key) = build_layer(
            &cx,
            r.as_mut(),
            inputs,
            &view,
            opts,
            shared.as_ref(),
            progress,
        )?;
        layers.push((blob, listing));
        sources.push((source, key));
    }
    cx.stat.save()?;
    for n in std::mem::take(&mut *cx.notes.lock().unwrap()) {
        progress.note(&format!("image `{name}`: {n}"));
    }
    *timings.entry("layers".into()).or_default() += t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let config = image_config(&cx, &base, &recipes, &layers)?;
    // An image whose every input is the same as one that passed the checks passes them again:
    // the checks read only the merged filesystem, the config and the layers' settings, all in
    // `verdict_key`. Then the filesystem is not merged at all (a no-op rebuild of 100k files
    // spent most of its time there), unless the SBOM is not in the store either.
    let verdict = verdict_key(&cx, &base, &config, &sources);
    let passed = verdict
        .as_ref()
        .is_some_and(|k| cx.store.get_record::<bool>(VERIFIED, k) == Some(true));
    let fs = if passed {
        None
    } else {
        let fs = verify(&cx, &view, &recipes, &mut layers, &config)?;
        if let Some(k) = &verdict {
            cx.store.put_record(VERIFIED, k, &true)?;
        }
        Some(fs)
    };
    *timings.entry("verify".into()).or_default() += t2.elapsed().as_secs_f64();

    let t3 = Instant::now();
    let mut descs = base.layers.clone();
    descs.extend(layers.iter().map(|(b, _)| descriptor(b)));
    let mut ann = BTreeMap::new();
    ann.insert(
        image::ANN_CREATED.to_string(),
        image::rfc3339(cx.source_date),
    );
    if let Some(r) = &cx.revision {
        ann.insert(image::ANN_REVISION.to_string(), r.clone());
    }
    // The base is identified by its digest only: its name says where the bytes were fetched
    // from (a layout path, a registry or a mirror), and the image must not depend on that —
    // the same base content gives the same image digest wherever it came from.
    if let Some(d) = &base.digest {
        ann.insert(image::ANN_BASE_DIGEST.to_string(), d.to_string());
    }
    // A registry base also says which reference it is (as imgbuild.toml names it, normalised):
    // that name is the same on every machine, unlike a layout path or a mirror.
    if let Some(name) = base_reference(&cx) {
        ann.insert(image::ANN_BASE_NAME.to_string(), name);
    }
    let mut built = image::assemble(name, img.repository.clone(), &config, descs, ann, &cx.store)?;
    *timings.entry("image".into()).or_default() += t3.elapsed().as_secs_f64();
    let t_sbom = Instant::now();
    built.referrers = referrers::make(&referrers::Made {
        project,
        cx: &cx,
        base: &base,
        base_name: referrers::base_name(
            cx.image.base.as_ref().map(|b| b.label()).as_deref(),
            base_reference(&cx),
        ),
        recipes: &recipes,
        built: &built,
        diff_ids: &config.rootfs.diff_ids,
        fs: &|| match &fs {
            Some(fs) => Ok(Cow::Borrowed(fs)),
            None => merged(&cx, &view, &layers).map(Cow::Owned),
        },
    })?;
    drop(fs);
    *timings.entry("sbom".into()).or_default() += t_sbom.elapsed().as_secs_f64();
    let new_pins = std::mem::take(&mut *cx.pins.new.lock().unwrap());
    if !new_pins.is_empty() {
        crate::registry::lock::LockFile::update(&project.root, |l| l.files.extend(new_pins))?;
    }
    let store_has_all = layers.iter().all(|(b, _)| cx.store.has(&b.digest));
    Ok(PlatformBuilt {
        built,
        layers,
        sources,
        names: recipes.iter().map(|r| r.name().to_string()).collect(),
        store_has_all,
    })
}

/// The base of the image planned in `cx`: `image:OTHER` from `other` (an image of this project
/// already built), anything else through `base::resolve_with`.
fn resolve_base(
    project: &Project,
    cx: &Ctx,
    reg: &registry::Options,
    other: impl Fn(&str) -> Result<Built>,
) -> Result<BaseImage> {
    let written = match &cx.image.base {
        Some(crate::spec::BaseSpec::Debian(d)) => return crate::debian::bootstrap::base(cx, d),
        Some(crate::spec::BaseSpec::Name(n)) => n.clone(),
        // `plan` put the platform's entry in its place.
        Some(crate::spec::BaseSpec::PerPlatform(_)) => {
            unreachable!("plan resolves a per-platform base")
        }
        None => "scratch".into(),
    };
    resolve_written(&written, project, cx, reg, other)
}

/// The images the recipes' builds run in (`build.base` of a python layer), each resolved once.
fn resolve_build_bases(
    project: &Project,
    cx: &Ctx,
    recipes: &[Box<dyn Recipe>],
    reg: &registry::Options,
    other: impl Fn(&str) -> Result<Built>,
) -> Result<BTreeMap<String, BaseImage>> {
    let mut out = BTreeMap::new();
    for r in recipes {
        for written in r.build_bases() {
            if let std::collections::btree_map::Entry::Vacant(e) = out.entry(written) {
                let b = resolve_written(e.key(), project, cx, reg, &other)
                    .with_context(|| format!("layer `{}`: build base `{}`", r.name(), e.key()))?;
                e.insert(b);
            }
        }
    }
    Ok(out)
}

/// A base as written (`image:OTHER`, or what `base::resolve_with` reads).
fn resolve_written(
    written: &str,
    project: &Project,
    cx: &Ctx,
    reg: &registry::Options,
    other: impl Fn(&str) -> Result<Built>,
) -> Result<BaseImage> {
    let written = written.to_string();
    match written.strip_prefix("image:") {
        Some(name) => {
            let built = other(name)?;
            let config: ImageConfig =
                serde_json::from_slice(&cx.store.read(&built.manifest.config.digest)?)?;
            Ok(BaseImage {
                name: written.clone(),
                digest: Some(built.digest),
                config,
                layers: built.manifest.layers,
            })
        }
        None => base::resolve_with(&written, &project.root, &cx.platform, &cx.store, reg),
    }
}

/// The reference a registry base is known by (`docker.io/library/python:3.12-slim`), without
/// its digest (that is `base.digest`); `None` for scratch, `oci:` and `image:` bases.
fn base_reference(cx: &Ctx) -> Option<String> {
    let written = cx.image.base.as_ref()?.name()?;
    let r = base::registry_reference(written).ok()??;
    let mut r = registry::reference::Reference::parse(&r).ok()?;
    r.digest = None;
    Some(r.to_string())
}

/// Runs the layer checks of image `name` (expect, python require/scripts/RECORD...) on the
/// merged filesystem of an image already built: what `imgbuild verify NAME` adds to the
/// blob checks. An `image:OTHER` base is OTHER's last build. Returns the problems found.
pub fn recheck(
    project: &Project,
    name: &str,
    fs: &Rootfs,
    config: &ImageConfig,
) -> Result<Vec<Problem>> {
    let platform = image::Platform {
        architecture: config.architecture.clone(),
        os: config.os.clone(),
        variant: config.variant.clone(),
    };
    let (cx, mut recipes) = plan::plan(project, name, Overrides::default(), &platform)?;
    let last = |other: &str| -> Result<Built> {
        Ok(record::last_build(project, other)?
            .1
            .for_platform(&platform, &cx.store)?
            .clone())
    };
    let base = resolve_base(project, &cx, &registry::Options::default(), last)?;
    let build_bases =
        resolve_build_bases(project, &cx, &recipes, &registry::Options::default(), last)?;
    let view = BaseView::new(&base, &cx.store).with_build_bases(build_bases);
    let mut problems = Vec::new();
    for (i, r) in recipes.iter_mut().enumerate() {
        r.inputs(&cx, &view)
            .with_context(|| format!("layer `{}`", r.name()))?;
        r.check(fs, config, base.layers.len() + i, &mut problems);
    }
    Ok(problems)
}

fn descriptor(b: &LayerBlob) -> Descriptor {
    Descriptor {
        media_type: b.media_type.clone(),
        digest: b.digest.clone(),
        size: b.size,
        platform: None,
        artifact_type: None,
        annotations: BTreeMap::new(),
    }
}

/// Where a layer of a build came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Built,
    Local,
    Shared,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Built => "built",
            Source::Local => "local cache",
            Source::Shared => "shared cache",
        }
    }
}

/// The shared cache as one image's build uses it.
struct Shared<'a> {
    cache: &'a SharedCache,
    /// Whether a hit's blob must be downloaded: the output needs the bytes (an OCI layout or
    /// docker-archive), or the image is pushed to another registry than the cache's.
    needs_bytes: bool,
}

/// Whether this build needs the bytes of layers found in the shared cache: not when the image
/// is only pushed (no `--output`) to the cache's registry, where its blobs are HEAD-skipped
/// or mounted.
fn needs_bytes(opts: &Options, img: &crate::spec::ImageSpec, cache: &SharedCache) -> bool {
    if opts.output.is_some() || !opts.push {
        return true;
    }
    let same_registry = img
        .repository
        .as_deref()
        .and_then(|r| registry::reference::Reference::parse(r).ok())
        .is_some_and(|r| r.registry == cache.registry());
    !same_registry
}

/// A layer from the local cache when its inputs are unchanged, else from the shared cache,
/// else written anew. Returns the blob, its listing when written now, where it came from and
/// its key (empty when the inputs were not complete).
fn build_layer(
    cx: &Ctx,
    r: &mut dyn Recipe,
    inputs: BTreeMap<String, String>,
    base: &BaseView,
    opts: &Options,
    shared: Option<&Shared>,
    progress: &Progress,
) -> Result<(LayerBlob, Option<Listing>, Source, String)> {
    let name = r.name().to_string();
    let mut inputs = inputs;
    let platform = r.platform_bound().then_some(&cx.platform);
    let material = |inputs: key::Inputs| {
        key::layer(
            cx.compression,
            cx.gzip_level,
            cx.source_date,
            platform,
            inputs,
        )
    };
    let rows = r.rows(None);
    let before = key::Inputs {
        map: &inputs,
        rows: rows.as_deref(),
    };
    let key = material(before);
    let scope = key::last_inputs(&cx.root, &cx.image_name, &name);
    let complete = !inputs.contains_key(UNHASHED);
    // The platforms of an index build side by side; a layer they share (one key) is written by
    // the first to reach it, and the others wait and take it from the cache.
    let slot = complete.then(|| building(&key));
    let _writing = slot
        .as_ref()
        .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()));
    if let Some(hit) = complete
        .then(|| cache::get_layer(&cx.store, &key))
        .flatten()
    {
        if opts.verbose {
            progress.note(&format!(
                "layer {name}: local cache ({} inputs unchanged)",
                before.count()
            ));
        }
        return Ok((hit.blob, None, Source::Local, key));
    }
    if let Some(sh) = shared.filter(|_| complete) {
        if let Some(hit) = sh.cache.lookup(&name, &key, &cx.store) {
            // The SBOM reads the layer's facts: without them in the record, the bytes are needed.
            let facts = cx
                .store
                .get_record::<crate::sbom::LayerFacts>(crate::sbom::FACTS, hit.blob.diff_id.hex())
                .is_some();
            let usable = (!sh.needs_bytes && facts)
                || sh.cache.download_or_warn(&name, &key, &hit, &cx.store);
            if usable {
                if opts.verbose {
                    progress.note(&format!(
                        "layer {name}: shared cache {} ({}){}",
                        sh.cache.settings.repository,
                        sharedcache::layer_tag(&key),
                        if sh.needs_bytes {
                            ", downloaded"
                        } else {
                            ", not downloaded"
                        }
                    ));
                }
                if cx.store.has(&hit.blob.digest) {
                    cache::put_layer(
                        &cx.store,
                        &key,
                        &CachedLayer {
                            blob: hit.blob.clone(),
                            inputs: BTreeMap::new(),
                        },
                    )?;
                }
                return Ok((hit.blob, None, Source::Shared, key));
            }
        }
    }
    if opts.verbose {
        let why = match cache::last_inputs(&cx.store, &scope) {
            _ if !complete => {
                "many files are new to the stat cache; building and hashing in one pass".into()
            }
            Some(old) => {
                let mut d = cache::explain_change(&old, &before.to_map());
                if d.is_empty() {
                    d.push(
                        "build settings changed (compression, source date, platform or format)"
                            .into(),
                    );
                }
                if d.len() > 8 {
                    let n = d.len() - 8;
                    d.truncate(8);
                    d.push(format!("… and {n} more"));
                }
                d.join("; ")
            }
            None => "first build".into(),
        };
        progress.note(&format!("layer {name}: rebuilding: {why}"));
    }
    drop(rows);
    let entries = layer::normalise(
        r.entries(cx, base)
            .with_context(|| format!("layer `{name}`"))?,
    )
    .with_context(|| format!("layer `{name}`"))?;
    let total: u64 = entries
        .iter()
        .map(|e| {
            if let layer::Body::File { size, .. } = e.body {
                size
            } else {
                0
            }
        })
        .sum();
    let bar = progress.layer(&name, total);
    let (blob, listing) = layer::write(
        &entries,
        cx.source_date,
        cx.compression,
        cx.gzip_level,
        &cx.store,
        &|n| bar.inc(n),
    )
    .with_context(|| format!("layer `{name}`"))?;
    bar.finish();
    // What the SBOM needs of this layer (METADATA, dpkg status), kept while its entries are
    // at hand: an SBOM never reads the layer back.
    let facts = crate::sbom::facts(
        layer::read_entries(&entries, crate::sbom::wanted)
            .with_context(|| format!("layer `{name}`"))?,
    );
    cache::put_listing(&cx.store, &blob.diff_id, &listing)?;
    cx.store
        .put_record(crate::sbom::FACTS, blob.diff_id.hex(), &facts)?;
    let completed = !complete && r.inputs_after(cx, &listing, &mut inputs);
    let rows = r.rows(Some((&entries, &listing)));
    let key = if completed {
        material(key::Inputs {
            map: &inputs,
            rows: rows.as_deref(),
        })
    } else {
        key
    };
    if !inputs.contains_key(UNHASHED) {
        cache::put_layer(
            &cx.store,
            &key,
            &CachedLayer {
                blob: blob.clone(),
                inputs: BTreeMap::new(),
            },
        )?;
        cache::put_last_inputs(
            &cx.store,
            &scope,
            key::Inputs {
                map: &inputs,
                rows: rows.as_deref(),
            },
        )?;
    }
    drop(rows);
    // The entries go before the recipe learns from the listing: at 100k new files the entries
    // (~20 MB), the listing and the stat cache's new records were the build's peak together.
    drop(entries);
    r.written(cx, &listing);
    let key = if inputs.contains_key(UNHASHED) {
        String::new()
    } else {
        key
    };
    Ok((blob, Some(listing), Source::Built, key))
}

/// The lock held while the layer with cache key `key` is looked up and written (one per key,
/// for the life of the process).
fn building(key: &str) -> std::sync::Arc<std::sync::Mutex<()>> {
    static SLOTS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<std::sync::Mutex<()>>>>,
    > = std::sync::OnceLock::new();
    SLOTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.to_string())
        .or_default()
        .clone()
}

/// The image config: the base's, overridden by the image section, with one history entry per layer.
fn image_config(
    cx: &Ctx,
    base: &BaseImage,
    recipes: &[Box<dyn Recipe>],
    layers: &[(LayerBlob, Option<Listing>)],
) -> Result<ImageConfig> {
    let img = &cx.image;
    let mut c = base.config.clone();
    let created = image::rfc3339(cx.source_date);
    c.created = Some(created.clone());
    c.architecture = cx.platform.architecture.clone();
    c.os = cx.platform.os.clone();
    c.variant = cx.platform.variant.clone();
    let rc = &mut c.config;
    if rc.env_var("PATH").is_none() {
        rc.set_env("PATH", image::DEFAULT_PATH);
    }
    for (k, v) in &img.env {
        rc.set_env(k, v);
    }
    if let Some(w) = &img.workdir {
        rc.working_dir = Some(w.clone());
    }
    if let Some(u) = &img.user {
        rc.user = Some(u.clone());
    }
    if let Some(e) = &img.entrypoint {
        rc.entrypoint = Some(e.clone());
        rc.cmd = None; // as in a Dockerfile: a new ENTRYPOINT resets the base's CMD
    }
    if let Some(cmd) = &img.cmd {
        rc.cmd = Some(cmd.clone());
    }
    for p in &img.ports {
        let p = if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        };
        rc.exposed_ports
            .get_or_insert_with(BTreeMap::new)
            .insert(p, serde_json::json!({}));
    }
    for (k, v) in &img.labels {
        rc.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.clone(), v.clone());
    }
    for v in &img.volumes {
        rc.volumes
            .get_or_insert_with(BTreeMap::new)
            .insert(v.clone(), serde_json::json!({}));
    }
    if let Some(s) = &img.stop_signal {
        rc.stop_signal = Some(s.clone());
    }
    if let Some(h) = &img.healthcheck {
        // Validated when the plan was made.
        rc.extra.insert(
            "Healthcheck".into(),
            h.to_config().map_err(anyhow::Error::msg)?,
        );
    }
    c.rootfs.kind = "layers".into();
    for ((blob, _), r) in layers.iter().zip(recipes) {
        c.rootfs.diff_ids.push(blob.diff_id.clone());
        c.history.push(History {
            created: Some(created.clone()),
            created_by: Some(r.created_by()),
            comment: Some("imgbuild".into()),
            empty_layer: None,
        });
    }
    Ok(c)
}

/// The store's records of images that passed `verify`, by `verdict_key`.
const VERIFIED: &str = "verified-v1";

/// The key of `verify`'s verdict (`key::verdict`); None when a layer has no key (its inputs
/// were not all known before it was written).
fn verdict_key(
    cx: &Ctx,
    base: &BaseImage,
    config: &ImageConfig,
    sources: &[(Source, String)],
) -> Option<String> {
    if sources.iter().any(|(_, k)| k.is_empty()) {
        return None;
    }
    let base_layers: Vec<String> = base.layers.iter().map(|d| d.digest.to_string()).collect();
    let layers: Vec<&str> = sources.iter().map(|(_, k)| k.as_str()).collect();
    Some(key::verdict(
        &cx.platform,
        &cx.image,
        &base_layers,
        &layers,
        config,
    ))
}

/// The image's filesystem: the base's with every layer's listing applied.
fn merged(cx: &Ctx, base: &BaseView, layers: &[(LayerBlob, Option<Listing>)]) -> Result<Rootfs> {
    merged_from(
        cx,
        base,
        layers
            .iter()
            .map(|(b, l)| (b, l.as_ref().map(Cow::Borrowed))),
    )
}

/// `merged`, with the listings of the layers written now moved into it (the build needs them
/// no more): `layers` has none afterwards.
fn merged_taking(
    cx: &Ctx,
    base: &BaseView,
    layers: &mut [(LayerBlob, Option<Listing>)],
) -> Result<Rootfs> {
    merged_from(
        cx,
        base,
        layers
            .iter_mut()
            .map(|(b, l)| (&*b, l.take().map(Cow::Owned))),
    )
}

fn merged_from<'a>(
    cx: &Ctx,
    base: &BaseView,
    layers: impl Iterator<Item = (&'a LayerBlob, Option<Cow<'a, Listing>>)>,
) -> Result<Rootfs> {
    let mut fs: Rootfs = base
        .rootfs()
        .context("reading the base image's layers for verification")?
        .clone();
    let offset = base.base.layers.len();
    for (i, (blob, written)) in layers.enumerate() {
        match written {
            Some(Cow::Owned(listing)) => fs.apply_owned(offset + i, listing),
            Some(Cow::Borrowed(listing)) => fs.apply(offset + i, listing),
            None => fs.apply(
                offset + i,
                &cache::listing(&cx.store, &descriptor(blob), &blob.diff_id)?,
            ),
        }
    }
    Ok(fs)
}

/// Runs every layer's checks on the merged filesystem; fails listing all problems.
fn verify(
    cx: &Ctx,
    base: &BaseView,
    recipes: &[Box<dyn Recipe>],
    layers: &mut [(LayerBlob, Option<Listing>)],
    config: &ImageConfig,
) -> Result<Rootfs> {
    let fs = merged_taking(cx, base, layers)?;
    let offset = base.base.layers.len();
    let mut problems: Vec<Problem> = Vec::new();
    for (i, r) in recipes.iter().enumerate() {
        r.check(&fs, config, offset + i, &mut problems);
    }
    if cx.image.start_check != Some(false) {
        problems.extend(start_problems(&fs, config));
    }
    problems.extend(native_problems(&fs, config, offset, |l| {
        recipes
            .get(l - offset)
            .map(|r| r.name().to_string())
            .unwrap_or_else(|| format!("{}", l + 1))
    }));
    if problems.is_empty() {
        return Ok(fs);
    }
    let err = recipe::report(
        &format!("image `{}`", cx.image_name),
        &problems,
        |l| match l {
            start::PLACE => l.to_string(),
            _ => format!("layer `{l}`"),
        },
    );
    // On a Debian image: which package of its release ships each missing library.
    let mut libs: Vec<String> = problems
        .iter()
        .filter_map(|p| crate::native::missing_library(&p.message))
        .map(String::from)
        .collect();
    libs.sort();
    libs.dedup();
    if libs.is_empty() {
        return Err(err);
    }
    let Some(found) = crate::debian::contents::providers(cx, base, &libs) else {
        return Err(err);
    };
    let mut hints = Vec::new();
    for (lib, pkgs) in &found {
        hints.push(format!(
            "{lib} is in the Debian package {}: add a layer `debian = {{ packages = [\"{}\"] }}`",
            pkgs.join(" or "),
            pkgs[0]
        ));
    }
    if hints.is_empty() {
        return Err(err);
    }
    Err(anyhow::anyhow!("{err}\nhint: {}", hints.join("\nhint: ")))
}

/// The native libraries of layers `from_layer..`: every ELF file's needs (`native::check`), as
/// problems of the layer `layer_name` names.
pub fn native_problems(
    fs: &Rootfs,
    config: &ImageConfig,
    from_layer: usize,
    layer_name: impl Fn(usize) -> String,
) -> Vec<Problem> {
    crate::native::check(fs, config, from_layer)
        .into_iter()
        .map(|m| Problem {
            layer: layer_name(m.layer),
            message: m.message,
        })
        .collect()
}

/// The start command's problems, as verification problems of the image config.
pub fn start_problems(fs: &Rootfs, config: &ImageConfig) -> Vec<Problem> {
    start::check(fs, config)
        .into_iter()
        .map(|message| Problem {
            layer: start::PLACE.into(),
            message: format!(
                "{message}; the container would not start (set `start_check = false` if the command is given at run time)"
            ),
        })
        .collect()
}
