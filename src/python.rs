//! Python layers: a lock file's wheels installed straight into one site-packages layer.

use crate::plan::{Ctx, Recipe};
use crate::spec::LayerSpec;
use crate::usage;
use anyhow::Result;

pub fn recipe(_cx: &Ctx, l: &LayerSpec) -> Result<Box<dyn Recipe>> {
    Err(usage!(
        "layer `{}`: python layers are not available in this build of imgbuild yet",
        l.name
    ))
}
