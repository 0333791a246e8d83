//! Reading a layer blob back: its digest, size and diff_id checked while it is listed.

use crate::compress::{self, Compression};
use crate::digest::{Digest, HashReader};
use crate::image::Descriptor;
use crate::rootfs::{Listing, ReadLimits};
use crate::usage;
use anyhow::{bail, Context, Result};
use std::io::{self, Read};

/// Reads a layer blob: checks its digest, size and diff_id, and lists it.
pub fn read_layer(r: impl Read, layer: &Descriptor, diff_id: &Digest) -> Result<Listing> {
    let c = Compression::from_media_type(&layer.media_type).ok_or_else(|| {
        usage!(
            "layer {} has media type `{}`, which imgbuild cannot read",
            layer.digest,
            layer.media_type
        )
    })?;
    let mut outer = HashReader::new(r);
    let parsed = (|| -> Result<(Listing, Digest)> {
        let dec = compress::decoder(c, &mut outer)
            .with_context(|| format!("decompressing layer {}", layer.digest))?;
        let mut inner = HashReader::new(dec);
        let listing = Listing::from_tar(
            &mut inner,
            &ReadLimits {
                refuse_devices: true,
            },
        )
        .with_context(|| format!("reading layer {}", layer.digest))?;
        io::copy(&mut inner, &mut io::sink())
            .with_context(|| format!("decompressing layer {}", layer.digest))?;
        Ok((listing, inner.finish().0))
    })();
    // The blob's own digest is checked first: a corrupt blob explains any parse error.
    io::copy(&mut outer, &mut io::sink())?;
    let (blob_digest, size) = outer.finish();
    if blob_digest != layer.digest {
        bail!(
            "layer blob {} is corrupt: its content hashes to {blob_digest}",
            layer.digest
        );
    }
    if size != layer.size {
        bail!(
            "layer blob {} has {size} bytes, but its descriptor says {}",
            layer.digest,
            layer.size
        );
    }
    let (listing, got) = parsed?;
    if &got != diff_id {
        bail!(
            "layer {} uncompresses to {got}, but the image config says its diff_id is {diff_id}",
            layer.digest
        );
    }
    Ok(listing)
}
