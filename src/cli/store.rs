//! `imgbuild store fsck|gc`: check, repair and collect the blob store.

use super::global::Global;
use crate::project::store_dir;
use crate::store::Store;
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Re-hash every blob and check every cache record; exit 1 on problems (see --repair)
    Fsck {
        /// Remove corrupt blobs and records that point at missing blobs (the next build remakes them)
        #[arg(long)]
        repair: bool,
    },
    /// Remove blobs that no build root or cache record names
    Gc {
        /// First forget build roots and cache entries not written for this many days
        #[arg(long, value_name = "DAYS")]
        max_age_days: Option<u64>,
    },
}

pub fn run(g: &Global, c: &StoreCommand) -> Result<i32> {
    let dir = store_dir(g.project().ok().as_ref(), &g.cwd);
    match c {
        StoreCommand::Fsck { repair } => {
            let store = if *repair {
                Store::open_exclusive(&dir)?
            } else {
                Store::open(&dir)?
            };
            let r = crate::store::check::fsck(&store, *repair)?;
            for c in &r.corrupt {
                g.progress.note(&format!(
                    "corrupt blob sha256:{c}{}",
                    if *repair { " (removed)" } else { "" }
                ));
            }
            for d in r.dangling.iter().chain(&r.bad_records) {
                g.progress.note(&format!(
                    "bad cache record {d}{}",
                    if *repair { " (removed)" } else { "" }
                ));
            }
            g.progress.note(&format!(
                "{}: {} blobs, {} bytes checked; {} problem(s); {} stale temp file(s) removed",
                dir.display(),
                r.blobs,
                r.bytes,
                r.problems(),
                r.temps_removed
            ));
            Ok(if r.problems() > 0 && !repair { 1 } else { 0 })
        }
        StoreCommand::Gc { max_age_days } => {
            let store = Store::open_exclusive(&dir)?;
            let r = crate::store::check::gc(
                &store,
                max_age_days.map(|d| std::time::Duration::from_secs(d * 86400)),
            )?;
            g.progress.note(&format!(
                "{}: kept {} blobs, removed {} ({} bytes), expired {} records",
                dir.display(),
                r.kept,
                r.removed,
                r.freed,
                r.records_expired
            ));
            Ok(0)
        }
    }
}
