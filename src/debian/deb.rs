//! A `.deb` read (deb(5)): an `ar` archive of `debian-binary` (format 2.0), `control.tar`
//! and `data.tar`, each tar compressed with xz, zstd, gzip or not at all. The control
//! paragraph and the control members (md5sums, conffiles, maintainer scripts) are read into
//! memory; `data.tar` is decompressed to a temporary file whose members become layer entries
//! that point into it. Members with an absolute path or a `..` component are refused, as are
//! hard links outside the package; device nodes and FIFOs are not written into layers.

use super::control::{self, Paragraph};
use crate::layer::member::{member, Member};
use crate::layer::Entry;
use crate::rootfs::clean_tar_path;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

/// One unpacked package.
pub struct Deb {
    /// `DEBIAN/control`.
    pub control: Paragraph,
    /// The other control members by name (`md5sums`, `conffiles`, `postinst`, `triggers`…).
    pub files: BTreeMap<String, Vec<u8>>,
    /// The data members as layer entries (paths as the package writes them).
    pub entries: Vec<Entry>,
    /// Every data path in archive order, as dpkg lists them in `info/PKG.list` (`/.` first).
    pub paths: Vec<String>,
    /// Device nodes, FIFOs and sockets the package has (not written).
    pub skipped: Vec<String>,
    /// The decompressed `data.tar` the entries point into (removed when dropped).
    _data: tempfile::TempPath,
}

/// How an `ar` member is compressed, by its name's suffix.
fn decoder<'a>(name: &str, r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    Ok(if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new(r))
    } else if name.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(r)?)
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(r)))
    } else if name.ends_with(".tar") {
        Box::new(r)
    } else {
        bail!("member `{name}` has an unknown compression")
    })
}

/// Reads the package at `path` (`what` names it in errors), decompressing `data.tar` into
/// `tmp_dir`.
pub fn read(path: &Path, what: &str, tmp_dir: &Path) -> Result<Deb> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ar = ar::Archive::new(BufReader::new(f));
    let mut control_files: Option<BTreeMap<String, Vec<u8>>> = None;
    let mut data: Option<tempfile::TempPath> = None;
    let mut format_ok = false;
    while let Some(m) = ar.next_entry() {
        let mut m = m.with_context(|| format!("{what}: not a .deb (ar archive)"))?;
        let name = String::from_utf8_lossy(m.header().identifier()).into_owned();
        if name == "debian-binary" {
            let mut v = String::new();
            m.read_to_string(&mut v)?;
            if !v.starts_with("2.") {
                bail!("{what}: .deb format `{}` is not 2.x", v.trim());
            }
            format_ok = true;
        } else if name.starts_with("control.tar") {
            let mut out = BTreeMap::new();
            let mut t = tar::Archive::new(decoder(&name, &mut m)?);
            for e in t.entries().with_context(|| format!("{what}: {name}"))? {
                let mut e = e.with_context(|| format!("{what}: {name}"))?;
                if !e.header().entry_type().is_file() {
                    continue;
                }
                let p =
                    clean_tar_path(&e.path_bytes()).with_context(|| format!("{what}: {name}"))?;
                let mut b = Vec::new();
                e.read_to_end(&mut b)?;
                out.insert(p, b);
            }
            control_files = Some(out);
        } else if name.starts_with("data.tar") {
            let mut t = tempfile::NamedTempFile::new_in(tmp_dir)?;
            io::copy(&mut decoder(&name, &mut m)?, t.as_file_mut())
                .with_context(|| format!("{what}: decompressing {name}"))?;
            data = Some(t.into_temp_path());
        }
    }
    if !format_ok {
        bail!("{what}: no `debian-binary` member: not a .deb");
    }
    let mut files = control_files.ok_or_else(|| anyhow::anyhow!("{what}: no control.tar"))?;
    let data = data.ok_or_else(|| anyhow::anyhow!("{what}: no data.tar"))?;
    let text = files
        .remove("control")
        .ok_or_else(|| anyhow::anyhow!("{what}: control.tar has no `control` file"))?;
    let control = control::parse(&String::from_utf8_lossy(&text))
        .map_err(|e| anyhow::anyhow!("{what}: control: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("{what}: control is empty"))?;
    let (entries, paths, skipped) = data_entries(&data, what)?;
    Ok(Deb {
        control,
        files,
        entries,
        paths,
        skipped,
        _data: data,
    })
}

type DataEntries = (Vec<Entry>, Vec<String>, Vec<String>);

fn data_entries(data: &Path, what: &str) -> Result<DataEntries> {
    let file = Arc::new(data.to_path_buf());
    let mut t = tar::Archive::new(BufReader::new(File::open(data)?));
    let (mut entries, mut paths, mut skipped) = (Vec::new(), vec!["/.".to_string()], Vec::new());
    for e in t.entries().with_context(|| format!("{what}: data.tar"))? {
        let e = e.with_context(|| format!("{what}: data.tar"))?;
        let raw = e.path_bytes().into_owned();
        if raw.starts_with(b"/") || raw.split(|&b| b == b'/').any(|c| c == b"..") {
            bail!(
                "{what}: data.tar member `{}` has an absolute path or a `..` component; refusing the package",
                String::from_utf8_lossy(&raw)
            );
        }
        let h = e.header();
        if h.entry_type().is_hard_link() {
            let target = e
                .link_name_bytes()
                .map(|b| b.into_owned())
                .unwrap_or_default();
            if target.starts_with(b"/") || target.split(|&b| b == b'/').any(|c| c == b"..") {
                bail!(
                    "{what}: hard link `{}` points outside the package (`{}`); refusing it",
                    clean_tar_path(&raw)?,
                    String::from_utf8_lossy(&target)
                );
            }
        }
        match member(&e, &file).with_context(|| format!("{what}: data.tar"))? {
            Member::Entry(entry) => {
                paths.push(format!("/{}", String::from_utf8_lossy(&entry.path)));
                entries.push(entry);
            }
            Member::Skip => {}
            Member::Unsupported(p) => skipped.push(format!("/{p}")),
        }
    }
    Ok((entries, paths, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A .deb of `members` (name, bytes) in an ar archive, with `data` as data.tar.gz.
    fn deb(dir: &Path, data: &[(&str, &[u8])]) -> std::path::PathBuf {
        let tar_of = |files: &[(&str, &[u8])]| {
            let mut b = tar::Builder::new(Vec::new());
            for (n, bytes) in files {
                let mut h = tar::Header::new_gnu();
                h.set_size(bytes.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                // Written raw so that an absolute or `..` name reaches the reader.
                let name = n.as_bytes();
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, *bytes).unwrap();
            }
            b.into_inner().unwrap()
        };
        let gz = |b: Vec<u8>| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&b).unwrap();
            e.finish().unwrap()
        };
        let control = gz(tar_of(&[
            ("./control", b"Package: t\nVersion: 1\nArchitecture: all\n"),
            ("./postinst", b"#!/bin/sh\necho hi\n"),
        ]));
        let data = gz(tar_of(data));
        let path = dir.join("t.deb");
        let mut a = ar::Builder::new(File::create(&path).unwrap());
        for (n, b) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", control),
            ("data.tar.gz", data),
        ] {
            a.append(
                &ar::Header::new(n.as_bytes().to_vec(), b.len() as u64),
                &b[..],
            )
            .unwrap();
        }
        path
    }

    #[test]
    fn reads_control_and_data_and_refuses_escaping_members() {
        let d = tempfile::tempdir().unwrap();
        let p = deb(d.path(), &[("./usr/lib/libt.so.1", b"elf")]);
        let got = read(&p, "t 1", d.path()).unwrap();
        assert_eq!(got.control.get("Package"), Some("t"));
        assert!(got.files.contains_key("postinst"));
        assert_eq!(got.paths, ["/.", "/usr/lib/libt.so.1"]);
        assert_eq!(got.entries[0].path, b"usr/lib/libt.so.1");
        for bad in ["/etc/passwd", "./usr/../../etc/passwd"] {
            let p = deb(d.path(), &[(bad, b"x")]);
            let e = read(&p, "t 1", d.path()).err().unwrap().to_string();
            assert!(e.contains("absolute path or a `..` component"), "{e}");
        }
    }
}
