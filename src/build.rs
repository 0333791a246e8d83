//! `imgbuild build`: base → layers (cached) → verification → image → destination.

use crate::base::{self, BaseImage};
use crate::cache::{self, CachedLayer, StatCache};
use crate::compress::Compression;
use crate::digest::Digest;
use crate::error::Hint;
use crate::image::{
    self, Descriptor, History, ImageConfig, Manifest, Platform, MT_CONFIG, MT_MANIFEST,
};
use crate::layer::{self, LayerBlob};
use crate::plan::{self, BaseView, Ctx, Problem, Project};
use crate::progress::Progress;
use crate::publish::{Built, Destination, Output, Written};
use crate::registry::{self, RegistryDest};
use crate::rootfs::{Listing, Rootfs};
use crate::store::{write_atomic, Store};
use crate::usage;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Default)]
pub struct Options {
    pub output: Option<String>,
    pub compression: Option<Compression>,
    pub gzip_level: Option<u32>,
    pub verbose: bool,
    /// Also publish to the image's `repository` (`--push`), with these tags (`--tag`).
    pub push: bool,
    pub tags: Vec<String>,
    /// Registry settings (insecure hosts, credentials) for bases and `--push`.
    pub registry: registry::Options,
}

/// One layer in the summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerReport {
    pub name: String,
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub cached: bool,
}

/// The `--json` summary (DESIGN.md).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Summary {
    pub image: String,
    pub digest: Option<Digest>,
    pub repository: Option<String>,
    pub reference: String,
    pub layers: Vec<LayerReport>,
    pub uploaded_bytes: u64,
    pub skipped_blobs: usize,
    /// Of the skipped blobs, those mounted from another repository of the registry.
    #[serde(default)]
    pub mounted_blobs: usize,
    pub timings: BTreeMap<String, f64>,
}

/// Builds image `name` of `project` and writes it to its destination.
pub fn build(
    project: &Project,
    name: &str,
    opts: &Options,
    progress: &Progress,
) -> Result<(Built, Summary)> {
    BUILDING.with(|b| b.borrow_mut().push(name.to_string()));
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            BUILDING.with(|b| b.borrow_mut().pop());
        }
    }
    let _pop = Pop;
    let t0 = Instant::now();
    let mut timings = BTreeMap::new();
    let (cx, mut recipes, base) = context(project, name, opts, progress)?;
    let img = cx.image.clone();
    timings.insert("base".into(), t0.elapsed().as_secs_f64());

    let t1 = Instant::now();
    let view = BaseView::new(&base, &cx.store);
    // Each layer, with its listing when it was written now (None: taken from the cache).
    let mut layers: Vec<(LayerBlob, Option<Listing>)> = Vec::new();
    for r in recipes.iter_mut() {
        layers.push(build_layer(&cx, r.as_mut(), &view, opts, progress)?);
    }
    cx.stat.save()?;
    timings.insert("layers".into(), t1.elapsed().as_secs_f64());

    let t2 = Instant::now();
    let config = image_config(&cx, &base, &recipes, &layers)?;
    verify(&cx, &view, &recipes, &layers, &config)?;
    timings.insert("verify".into(), t2.elapsed().as_secs_f64());

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
    let built = assemble(name, img.repository.clone(), &config, descs, ann, &cx.store)?;
    let dest: Box<dyn Destination> = match &opts.output {
        Some(o) => Output::parse(o, name, &std::env::current_dir()?)?.destination(),
        None => Output::Layout {
            dir: project.state_dir().join("oci"),
            tag: name.to_string(),
        }
        .destination(),
    };
    let mut written = dest.write(&built, &cx.store)?;
    record_build(project, &built, &cx.store)?;
    timings.insert("write".into(), t3.elapsed().as_secs_f64());
    if opts.push {
        let t4 = Instant::now();
        written = push(project, &built, &opts.tags, &opts.registry, &cx.store)?;
        timings.insert("push".into(), t4.elapsed().as_secs_f64());
    }
    timings.insert("total".into(), t0.elapsed().as_secs_f64());

    let summary = Summary {
        image: name.to_string(),
        digest: Some(built.digest.clone()),
        repository: img.repository.clone(),
        reference: written.reference,
        layers: recipes
            .iter()
            .zip(&layers)
            .map(|(r, (b, cached))| LayerReport {
                name: r.name().to_string(),
                digest: b.digest.clone(),
                diff_id: b.diff_id.clone(),
                size: b.size,
                cached: cached.is_none(),
            })
            .collect(),
        uploaded_bytes: written.uploaded_bytes,
        skipped_blobs: written.skipped_blobs,
        mounted_blobs: written.mounted_blobs,
        timings,
    };
    Ok((built, summary))
}

/// The platform an image is built for: its own, the defaults', or this machine's.
pub fn image_platform(project: &Project, img: &crate::spec::ImageSpec) -> Result<Platform> {
    let pstr = img
        .platform
        .as_deref()
        .or(project.spec.defaults.platform.as_deref());
    Ok(match pstr {
        Some(p) => Platform::parse(p).ok_or_else(|| {
            usage!(
                "platform `{p}` in {}: expected os/arch, e.g. linux/amd64",
                project.spec_path.display()
            )
        })?,
        None => base::host_platform(),
    })
}

thread_local! {
    /// Images being built on this thread, outermost first: `base = "image:NAME"` cycles.
    static BUILDING: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `base = "image:OTHER"`: builds OTHER of the same project (into the store only) and uses it.
fn image_base(
    project: &Project,
    me: &str,
    other: &str,
    opts: &Options,
    progress: &Progress,
    cx: &Ctx,
) -> Result<BaseImage> {
    project
        .spec
        .image(other, &project.spec_path)
        .map_err(|e| usage!("image `{me}`: base `image:{other}`: {}", e.message))?;
    let cycle = BUILDING.with(|b| {
        let b = b.borrow();
        b.iter().position(|x| x == other).map(|i| {
            let mut path = b[i..].to_vec();
            path.push(other.to_string());
            path.join(" → ")
        })
    });
    if let Some(path) = cycle {
        bail!(
            usage!("images build on each other in a cycle: {path}").hint(
                "one of them must start from a real base (scratch, oci:…, a registry reference)"
            )
        );
    }
    let inner = Options {
        output: Some(format!(
            "oci:{}:{other}",
            project.state_dir().join("oci").display()
        )),
        compression: opts.compression,
        gzip_level: opts.gzip_level,
        verbose: opts.verbose,
        push: false,
        tags: vec![],
        registry: opts.registry.clone(),
    };
    let res = build(project, other, &inner, progress);
    let (built, _) = res?;
    let config: ImageConfig =
        serde_json::from_slice(&cx.store.read(&built.manifest.config.digest)?)?;
    Ok(BaseImage {
        name: format!("image:{other}"),
        digest: Some(built.digest),
        config,
        layers: built.manifest.layers,
    })
}

fn descriptor(b: &LayerBlob) -> Descriptor {
    Descriptor {
        media_type: b.media_type.clone(),
        digest: b.digest.clone(),
        size: b.size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

type Recipes = Vec<Box<dyn plan::Recipe>>;

/// The build context of image `name`, its layers' recipes and its resolved base.
fn context(
    project: &Project,
    name: &str,
    opts: &Options,
    progress: &Progress,
) -> Result<(Ctx, Recipes, BaseImage)> {
    let img = project.spec.image(name, &project.spec_path)?.clone();
    let store = project.store()?;
    let compression = match opts.compression {
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
    let gzip_level = opts
        .gzip_level
        .or(img.gzip_level)
        .or(project.spec.defaults.gzip_level)
        .unwrap_or(crate::compress::DEFAULT_GZIP_LEVEL);
    if !(1..=9).contains(&gzip_level) {
        return Err(usage!(
            "gzip_level {gzip_level} in {}: use 1 (fastest) to 9 (smallest)",
            project.spec_path.display()
        ));
    }
    let platform = image_platform(project, &img)?;
    let cx = Ctx {
        root: project.root.clone(),
        stat: StatCache::load(&store, &project.root),
        store,
        source_date: plan::source_date(&project.root)?,
        revision: plan::revision(&project.root),
        compression,
        gzip_level,
        platform,
        image: img.clone(),
        image_name: name.to_string(),
    };
    // The layers' inputs are checked first (a missing build output or lock file fails here),
    // so a bad project fails before a base is pulled or anything is written.
    let recipes = plan::recipes(&cx)?;
    let base_name = img.base.clone().unwrap_or_else(|| "scratch".into());
    let base = match base_name.strip_prefix("image:") {
        Some(other) => image_base(project, name, other, opts, progress, &cx)?,
        None => base::resolve_with(
            &base_name,
            &project.root,
            &cx.platform,
            &cx.store,
            &opts.registry,
        )?,
    };
    Ok((cx, recipes, base))
}

/// Runs the layer checks of image `name` (expect, python require/scripts/RECORD...) on the
/// merged filesystem of an image already built: what `imgbuild verify NAME` adds to the
/// blob checks. Returns the problems found.
pub fn recheck(
    project: &Project,
    name: &str,
    fs: &Rootfs,
    config: &ImageConfig,
    progress: &Progress,
) -> Result<Vec<Problem>> {
    let (cx, mut recipes, base) = context(project, name, &Options::default(), progress)?;
    let view = BaseView::new(&base, &cx.store);
    let mut problems = Vec::new();
    for (i, r) in recipes.iter_mut().enumerate() {
        r.inputs(&cx, &view)
            .with_context(|| format!("layer `{}`", r.name()))?;
        r.check(fs, config, base.layers.len() + i, &mut problems);
    }
    Ok(problems)
}

/// What a layer's cache key is the hash of.
#[derive(Serialize)]
struct Material<'a> {
    tar_format: u32,
    compression: &'a str,
    gzip_level: u32,
    mtime: u64,
    platform: String,
    inputs: &'a BTreeMap<String, String>,
}

/// A layer from the cache when its inputs are unchanged, else written anew.
fn build_layer(
    cx: &Ctx,
    r: &mut dyn plan::Recipe,
    base: &BaseView,
    opts: &Options,
    progress: &Progress,
) -> Result<(LayerBlob, Option<Listing>)> {
    let name = r.name().to_string();
    let inputs = r
        .inputs(cx, base)
        .with_context(|| format!("layer `{name}`"))?;
    let mut inputs = inputs;
    let material = |inputs: &BTreeMap<String, String>| {
        cache::layer_key(&Material {
            tar_format: layer::TAR_FORMAT,
            compression: cx.compression.as_str(),
            gzip_level: if cx.compression == Compression::Gzip {
                cx.gzip_level
            } else {
                0
            },
            mtime: cx.source_date,
            platform: cx.platform.to_string(),
            inputs,
        })
    };
    let key = material(&inputs);
    let scope = format!("{}\0{}\0{}", cx.root.display(), cx.image_name, name);
    let complete = !inputs.contains_key(plan::UNHASHED);
    if let Some(hit) = complete
        .then(|| cache::get_layer(&cx.store, &key))
        .flatten()
    {
        if opts.verbose {
            progress.note(&format!(
                "layer {name}: cached ({} inputs unchanged)",
                inputs.len()
            ));
        }
        return Ok((hit.blob, None));
    }
    if opts.verbose {
        let why = match cache::last_inputs(&cx.store, &scope) {
            _ if !complete => {
                "many files are new to the stat cache; building and hashing in one pass".into()
            }
            Some(old) => {
                let mut d = cache::explain_change(&old, &inputs);
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
    cache::put_listing(&cx.store, &blob.diff_id, &listing)?;
    let key = if !complete && r.inputs_after(cx, &listing, &mut inputs) {
        material(&inputs)
    } else {
        key
    };
    if !inputs.contains_key(plan::UNHASHED) {
        cache::put_layer(
            &cx.store,
            &key,
            &CachedLayer {
                blob: blob.clone(),
                inputs: BTreeMap::new(),
            },
        )?;
        cache::put_last_inputs(&cx.store, &scope, &inputs)?;
    }
    Ok((blob, Some(listing)))
}

/// The image config: the base's, overridden by the image section, with one history entry per layer.
fn image_config(
    cx: &Ctx,
    base: &BaseImage,
    recipes: &[Box<dyn plan::Recipe>],
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
        rc.set_env("PATH", base::DEFAULT_PATH);
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

/// Runs every layer's checks on the merged filesystem; fails listing all problems.
fn verify(
    cx: &Ctx,
    base: &BaseView,
    recipes: &[Box<dyn plan::Recipe>],
    layers: &[(LayerBlob, Option<Listing>)],
    config: &ImageConfig,
) -> Result<()> {
    let mut fs: Rootfs = base
        .rootfs()
        .context("reading the base image's layers for verification")?
        .clone();
    let offset = base.base.layers.len();
    for (i, (blob, written)) in layers.iter().enumerate() {
        match written {
            Some(listing) => fs.apply(offset + i, listing),
            None => fs.apply(
                offset + i,
                &base::listing(&cx.store, &descriptor(blob), &blob.diff_id)?,
            ),
        }
    }
    let mut problems: Vec<Problem> = Vec::new();
    for (i, r) in recipes.iter().enumerate() {
        r.check(&fs, config, offset + i, &mut problems);
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "image `{}` failed verification ({} problem{}):",
        cx.image_name,
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in &problems {
        msg.push_str(&format!("\n  - layer `{}`: {}", p.layer, p.message));
    }
    bail!(msg)
}

/// Stores the config and manifest; returns the image.
pub fn assemble(
    name: &str,
    repository: Option<String>,
    config: &ImageConfig,
    layers: Vec<Descriptor>,
    annotations: BTreeMap<String, String>,
    store: &Store,
) -> Result<Built> {
    let config_bytes = image::to_bytes(config);
    let config_digest = store.put(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MT_MANIFEST.into()),
        config: Descriptor {
            media_type: MT_CONFIG.into(),
            digest: config_digest,
            size: config_bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        },
        layers,
        annotations,
    };
    let manifest_bytes = image::to_bytes(&manifest);
    let digest = store.put(&manifest_bytes)?;
    Ok(Built {
        name: name.to_string(),
        repository,
        manifest,
        manifest_bytes,
        digest,
    })
}

/// The last build of an image, for `push` and `pin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildRecord {
    pub image: String,
    pub repository: Option<String>,
    pub digest: Digest,
    #[serde(default)]
    pub pushed: Vec<String>,
}

pub fn record_path(project: &Project, name: &str) -> PathBuf {
    project
        .state_dir()
        .join("builds")
        .join(format!("{name}.json"))
}

fn record_build(project: &Project, built: &Built, store: &Store) -> Result<()> {
    // A root keeps the image's blobs alive through `imgbuild store gc`.
    store.put_record(
        "roots",
        built.digest.hex(),
        &serde_json::json!({"image": built.name, "project": project.root, "digest": built.digest}),
    )?;
    // Pushes of the same digest stay valid when the image is rebuilt unchanged.
    let pushed = std::fs::read(record_path(project, &built.name))
        .ok()
        .and_then(|b| serde_json::from_slice::<BuildRecord>(&b).ok())
        .filter(|r| r.digest == built.digest)
        .map(|r| r.pushed)
        .unwrap_or_default();
    let rec = BuildRecord {
        image: built.name.clone(),
        repository: built.repository.clone(),
        digest: built.digest.clone(),
        pushed,
    };
    write_atomic(
        &record_path(project, &built.name),
        &serde_json::to_vec_pretty(&rec)?,
    )
}

/// Publishes a built image to its `repository` and records the pushed `repo@digest`
/// in the build record (for `pin`).
pub fn push(
    project: &Project,
    built: &Built,
    tags: &[String],
    reg: &registry::Options,
    store: &crate::store::Store,
) -> Result<Written> {
    let repository = built.repository.as_deref().ok_or_else(|| {
        usage!(
            "image `{}` has no `repository` in {}; add one (e.g. repository = \"registry.example.com/team/{}\") to push it",
            built.name,
            project.spec_path.display(),
            built.name
        )
    })?;
    let dest = RegistryDest::new(repository, tags, reg)?;
    let written = dest.write(built, store)?;
    let p = record_path(project, &built.name);
    let mut rec = std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice::<BuildRecord>(&b).ok())
        .filter(|r| r.digest == built.digest)
        .unwrap_or_else(|| BuildRecord {
            image: built.name.clone(),
            repository: built.repository.clone(),
            digest: built.digest.clone(),
            pushed: vec![],
        });
    if !rec.pushed.contains(&written.reference) {
        rec.pushed.push(written.reference.clone());
    }
    write_atomic(&p, &serde_json::to_vec_pretty(&rec)?)?;
    Ok(written)
}

/// The record of the last build of `name` (its digest and pushes), without the image.
pub fn last_record(project: &Project, name: &str) -> Result<BuildRecord> {
    let p = record_path(project, name);
    let bytes = std::fs::read(&p).map_err(|_| {
        usage!("image `{name}` has not been built yet; run `imgbuild build {name}` first")
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("reading {}", p.display()))
}

/// Reads the last build of `name`, reconstructing the image from the store.
pub fn last_build(project: &Project, name: &str) -> Result<(BuildRecord, Built)> {
    let rec = last_record(project, name)?;
    let store = project.store()?;
    let manifest_bytes = store.read(&rec.digest).with_context(|| {
        format!("the last build of `{name}` is no longer in the store; rebuild it")
    })?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)?;
    let built = Built {
        name: name.into(),
        repository: rec.repository.clone(),
        manifest,
        manifest_bytes,
        digest: rec.digest.clone(),
    };
    Ok((rec, built))
}
