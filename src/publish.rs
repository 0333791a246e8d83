//! Where a built image goes: `--output` (or the default layout) turned into its `Destination`
//! (OCI layout, docker-archive; the registry's is `registry::RegistryDest`), and publishing to
//! an image's repository with the push recorded for `pin`.

use crate::archive::ArchiveDest;
use crate::image::Built;
use crate::layout::LayoutDest;
use crate::project::Project;
use crate::record::{self, Summary};
use crate::registry::{self, RegistryDest};
use crate::store::Store;
use crate::target::{Destination, Output, Written};
use crate::usage;
use anyhow::Result;

/// The destination an `--output` names.
pub fn destination(out: Output) -> Box<dyn Destination> {
    match out {
        Output::Layout { dir, tag } => Box::new(LayoutDest { dir, tag }),
        Output::DockerArchive { file } => Box::new(ArchiveDest { file }),
    }
}

/// Publishes a built image to its `repository` and records the pushed `repo@digest` in the
/// build record (for `pin`).
pub fn push(
    project: &Project,
    built: &Built,
    tags: &[String],
    reg: &registry::Options,
    store: &Store,
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
    record::record_push(project, built, &written.reference)?;
    Ok(written)
}

/// `imgbuild push NAME`: publishes the last build of `name` to the repository imgbuild.toml
/// names now; the summary `--json` prints.
pub fn push_last(
    project: &Project,
    name: &str,
    tags: &[String],
    reg: &registry::Options,
    store: &Store,
) -> Result<Summary> {
    let t0 = std::time::Instant::now();
    let (_, mut built) = record::last_build(project, name)?;
    // The repository configured now is where the user means to push.
    if let Some(r) = &project.image(name)?.repository {
        built.repository = Some(r.clone());
    }
    let written = push(project, &built, tags, reg, store)?;
    let mut timings = std::collections::BTreeMap::new();
    timings.insert("push".to_string(), t0.elapsed().as_secs_f64());
    timings.insert("total".to_string(), t0.elapsed().as_secs_f64());
    Ok(Summary {
        image: name.to_string(),
        digest: Some(built.digest.clone()),
        repository: built.repository.clone(),
        reference: written.reference.clone(),
        layers: if built.is_index() {
            vec![]
        } else {
            record::layer_reports(project, name, &built, store)
        },
        platforms: built
            .platforms
            .iter()
            .map(|(p, b)| record::PlatformReport {
                platform: p.to_string(),
                digest: b.digest.clone(),
                layers: record::layer_reports(project, name, b, store),
            })
            .collect(),
        uploaded_bytes: written.uploaded_bytes,
        skipped_blobs: written.skipped_blobs,
        mounted_blobs: written.mounted_blobs,
        referrer_bytes: written.referrer_bytes,
        timings,
        shared_cache: None,
    })
}
