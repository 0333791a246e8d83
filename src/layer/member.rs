//! One member of an uncompressed tar archive as a layer entry: its path cleaned (absolute paths
//! and `..` refused), mode and owners from the header, a file's body the byte range it occupies
//! in the archive (nothing is copied), symlinks and hard links as such. Shared by `imgbuild base
//! import` (a root filesystem tar) and Debian packages' `data.tar`.

use super::{Body, Entry, Source};
use crate::rootfs::clean_tar_path;
use anyhow::Result;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// What a tar member becomes.
pub enum Member {
    Entry(Entry),
    /// Not content: the archive's own root, pax and GNU long-name headers.
    Skip,
    /// A member a layer cannot hold (a device node, a FIFO): its cleaned path.
    Unsupported(String),
}

/// `e`, a member of the uncompressed archive `file`.
pub fn member<R: Read>(e: &tar::Entry<'_, R>, file: &Arc<PathBuf>) -> Result<Member> {
    let p = clean_tar_path(&e.path_bytes())?;
    if p.is_empty() {
        return Ok(Member::Skip);
    }
    let h = e.header();
    let (mode, uid, gid) = (
        h.mode().unwrap_or(0o644) & 0o7777,
        h.uid().unwrap_or(0) as u32,
        h.gid().unwrap_or(0) as u32,
    );
    let link = || {
        e.link_name_bytes()
            .map(|b| b.into_owned())
            .unwrap_or_default()
    };
    let t = h.entry_type();
    let body = if t.is_dir() {
        Body::Dir
    } else if t.is_file() || t == tar::EntryType::Continuous {
        Body::File {
            src: Source::Range {
                file: file.clone(),
                offset: e.raw_file_position(),
            },
            size: e.size(),
        }
    } else if t.is_symlink() {
        Body::Symlink(link())
    } else if t.is_hard_link() {
        Body::Link(clean_tar_path(&link())?.into_bytes())
    } else if t.is_pax_global_extensions()
        || t.is_pax_local_extensions()
        || t.is_gnu_longname()
        || t.is_gnu_longlink()
    {
        return Ok(Member::Skip);
    } else {
        return Ok(Member::Unsupported(p));
    };
    Ok(Member::Entry(Entry {
        path: p.into_bytes(),
        body,
        mode,
        uid,
        gid,
    }))
}
