//! Where blobs are known to be, per registry: the repositories cross-repository mounts
//! come from (a cache in the store; losing it only costs an upload).

use crate::digest::Digest;
use crate::store::Store;
use std::collections::BTreeMap;

/// Known repositories holding a blob, per registry: where cross-repository mounts come from.
type Locations = BTreeMap<String, Vec<String>>;
const LOCATIONS: &str = "registry-blobs";

pub fn known_repositories(store: &Store, registry: &str, d: &Digest) -> Vec<String> {
    store
        .get_record::<Locations>(LOCATIONS, d.hex())
        .and_then(|mut l| l.remove(registry))
        .unwrap_or_default()
}

/// Records that `repository` on `registry` holds these blobs (most recent last, five kept).
pub fn remember<'a>(
    store: &Store,
    registry: &str,
    repository: &str,
    digests: impl Iterator<Item = &'a Digest>,
) {
    for d in digests {
        let mut l: Locations = store.get_record(LOCATIONS, d.hex()).unwrap_or_default();
        let repos = l.entry(registry.to_string()).or_default();
        if repos.last().map(|s| s.as_str()) == Some(repository) {
            continue;
        }
        repos.retain(|r| r != repository);
        repos.push(repository.to_string());
        if repos.len() > 5 {
            repos.remove(0);
        }
        // A cache: failing to write it only costs a mount later.
        let _ = store.put_record(LOCATIONS, d.hex(), &l);
    }
}
