//! Read packages turned into one layer's entries: each package's data members (paths
//! through a directory symlink of the image, such as merged-/usr's `/lib` → `usr/lib`,
//! written to the real directory, as dpkg's writes through the symlink would land), dpkg's
//! `info/` files, and the `status` file with the packages' entries added.

use super::deb::Deb;
use super::status;
use crate::layer::{Body, Entry};
use crate::rootfs::{Kind, Rootfs};
use anyhow::Result;
use std::collections::BTreeMap;

/// `path` with every directory component that is a symlink in `fs` replaced by where it
/// points (the last component is kept as is: a symlink the package ships stays one).
pub fn real_path(fs: &Rootfs, path: &str) -> String {
    let Some((dir, name)) = path.rsplit_once('/') else {
        return path.to_string();
    };
    let mut cur = String::new();
    for c in dir.split('/') {
        let cand = if cur.is_empty() {
            c.to_string()
        } else {
            format!("{cur}/{c}")
        };
        cur = match fs.files.get(&cand) {
            Some((n, _)) if n.kind == Kind::Symlink => match fs.resolve(&cand) {
                Some((real, node)) if node.kind == Kind::Dir => real,
                _ => cand,
            },
            _ => cand,
        };
    }
    format!("{cur}/{name}")
}

/// The entries of a layer installing `debs` on a base whose merged filesystem is `fs` and
/// whose dpkg status file is `base_status`. Directories two packages share are written once;
/// a file two packages ship is the later package's (in the order given).
pub fn entries(debs: &mut [Deb], fs: &Rootfs, base_status: &str) -> Result<Vec<Entry>> {
    let mut out: Vec<Entry> = Vec::new();
    let mut at: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut put = |e: Entry, out: &mut Vec<Entry>| match at.get(&e.path) {
        Some(&i) if matches!(e.body, Body::Dir) && matches!(out[i].body, Body::Dir) => {}
        Some(&i) => out[i] = e,
        None => {
            at.insert(e.path.clone(), out.len());
            out.push(e);
        }
    };
    let mut added = Vec::new();
    for d in debs.iter_mut() {
        let info = status::info_name(&d.control);
        for mut e in std::mem::take(&mut d.entries) {
            let mut real = real_path(fs, &String::from_utf8_lossy(&e.path));
            // A directory the image has as a symlink to a directory stays that symlink.
            if matches!(e.body, Body::Dir) {
                if let Some((r, n)) = fs.resolve(&real) {
                    if n.kind == Kind::Dir {
                        real = r;
                    }
                }
            }
            e.path = real.into_bytes();
            if let Body::Link(t) = &e.body {
                e.body = Body::Link(real_path(fs, &String::from_utf8_lossy(t)).into_bytes());
            }
            put(e, &mut out);
        }
        let list = d.paths.join("\n") + "\n";
        put(
            Entry::bytes(
                format!("{}/{info}.list", status::INFO),
                0o644,
                list.into_bytes(),
            ),
            &mut out,
        );
        for (member, bytes) in &d.files {
            let exec = matches!(
                member.as_str(),
                "preinst" | "postinst" | "prerm" | "postrm" | "config"
            );
            put(
                Entry::bytes(
                    format!("{}/{info}.{member}", status::INFO),
                    if exec { 0o755 } else { 0o644 },
                    bytes.clone(),
                ),
                &mut out,
            );
        }
        added.push(status::entry(&d.control));
    }
    let text = status::merged(base_status, &added)
        .map_err(|e| anyhow::anyhow!("the base's /{}: {e}", status::STATUS))?;
    put(
        Entry::bytes(status::STATUS, 0o644, text.into_bytes()),
        &mut out,
    );
    Ok(out)
}

/// The packages among `debs` whose `preinst` or `postinst` would have run.
pub fn with_scripts(debs: &[Deb]) -> Vec<String> {
    debs.iter()
        .filter(|d| d.files.contains_key("preinst") || d.files.contains_key("postinst"))
        .map(|d| d.control.get("Package").unwrap_or("").to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::{Listing, Node};

    #[test]
    fn writes_through_directory_symlinks_of_the_base() {
        let node = |p: &str, kind, t: Option<&str>| Node {
            path: p.into(),
            kind,
            mode: 0o755,
            size: 0,
            sha256: None,
            target: t.map(String::from),
        };
        let mut fs = Rootfs::default();
        fs.apply(
            0,
            &Listing {
                nodes: vec![
                    node("lib", Kind::Symlink, Some("usr/lib")),
                    node("usr", Kind::Dir, None),
                    node("usr/lib", Kind::Dir, None),
                ],
                captured: Default::default(),
            },
        );
        assert_eq!(
            real_path(&fs, "lib/x86_64-linux-gnu/libc.so.6"),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(real_path(&fs, "lib"), "lib");
        assert_eq!(real_path(&fs, "usr/share/doc/x"), "usr/share/doc/x");
    }
}
