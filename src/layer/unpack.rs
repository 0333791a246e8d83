//! Layers unpacked into a directory, in order, whiteouts applied: the root filesystem of
//! `imgbuild test` and of an sdist build.

use crate::compress::{self, Compression};
use crate::image::Descriptor;
use crate::rootfs::clean_tar_path;
use crate::store::Store;
use crate::usage;
use anyhow::{Context, Result};
use std::fs;
use std::io::BufReader;
use std::path::Path;

/// Applies every layer in order into `dst`, honouring whiteouts. Device nodes are skipped.
pub fn unpack(store: &Store, layers: &[Descriptor], dst: &Path) -> Result<()> {
    fs::create_dir_all(dst)?;
    for l in layers {
        let c = Compression::from_media_type(&l.media_type)
            .ok_or_else(|| usage!("unknown layer media type {}", l.media_type))?;
        // Pass 1: whiteouts remove what lower layers put there.
        let mut ar = tar::Archive::new(compress::decoder(
            c,
            BufReader::new(store.open_blob(&l.digest)?),
        )?);
        for e in ar.entries()? {
            let e = e?;
            let p = clean_tar_path(&e.path_bytes())?;
            let (dir, name) = p.rsplit_once('/').unwrap_or(("", p.as_str()));
            if name == ".wh..wh..opq" {
                if let Ok(rd) = fs::read_dir(dst.join(dir)) {
                    for x in rd.flatten() {
                        remove(&x.path());
                    }
                }
            } else if let Some(victim) = name.strip_prefix(".wh.") {
                remove(&dst.join(dir).join(victim));
            }
        }
        // Pass 2: everything else.
        let mut ar = tar::Archive::new(compress::decoder(
            c,
            BufReader::new(store.open_blob(&l.digest)?),
        )?);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_unpack_xattrs(false);
        ar.set_overwrite(true);
        for e in ar.entries()? {
            let mut e = e?;
            let t = e.header().entry_type();
            let p = clean_tar_path(&e.path_bytes())?;
            let name = p.rsplit('/').next().unwrap_or("");
            if name.starts_with(".wh.")
                || t.is_block_special()
                || t.is_character_special()
                || t.is_fifo()
            {
                continue;
            }
            // A non-directory replaces whatever a lower layer had at that path.
            let target = dst.join(&p);
            if !t.is_dir()
                && fs::symlink_metadata(&target)
                    .map(|m| m.is_dir() && !m.file_type().is_symlink())
                    .unwrap_or(false)
            {
                remove(&target);
            }
            e.unpack_in(dst)
                .with_context(|| format!("unpacking /{p}"))?;
        }
    }
    Ok(())
}

fn remove(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}
