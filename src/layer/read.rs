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

/// Regular files of an image (symlinks followed), each read from the one layer of `layers`
/// that holds it in the merged filesystem `fs`, without extracting anything to disk; each
/// owning layer is streamed once, through `open`. Keys are the paths as asked; paths that are
/// missing or not regular files are left out.
pub fn files<'a>(
    fs: &crate::rootfs::Rootfs,
    layers: &[Descriptor],
    open: &dyn Fn(&Descriptor) -> Result<Box<dyn Read + 'a>>,
    paths: &[&str],
) -> Result<std::collections::BTreeMap<String, Vec<u8>>> {
    use std::collections::BTreeMap;
    // layer index → (path in that layer's tar → the paths asked for)
    let mut want: BTreeMap<usize, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for &asked in paths {
        let Some((layer, inner)) = fs.file_in_layer(asked) else {
            continue;
        };
        want.entry(layer)
            .or_default()
            .entry(inner)
            .or_default()
            .push(asked.to_string());
    }
    let mut out = BTreeMap::new();
    for (layer, mut names) in want {
        let d = layers
            .get(layer)
            .ok_or_else(|| anyhow::anyhow!("the image has no layer {}", layer + 1))?;
        let c = Compression::from_media_type(&d.media_type)
            .ok_or_else(|| anyhow::anyhow!("layer {} has an unknown media type", d.digest))?;
        let blob = io::BufReader::new(open(d)?);
        let mut ar = tar::Archive::new(compress::decoder(c, blob)?);
        for e in ar.entries()? {
            let mut e = e?;
            let p = crate::rootfs::clean_tar_path(&e.path_bytes())?;
            if let Some(asked) = names.remove(&p) {
                let mut buf = Vec::new();
                e.read_to_end(&mut buf)
                    .with_context(|| format!("reading /{p} from layer {}", d.digest))?;
                for a in asked {
                    out.insert(a, buf.clone());
                }
                if names.is_empty() {
                    break;
                }
            }
        }
    }
    Ok(out)
}
