//! Test helpers: small wheels made with the `zip` crate, and a Debian-like target.

use super::record::{self, Row};
use super::tags::Libc;
use super::target::Target;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn debian_target() -> Target {
    Target {
        interpreter: "/usr/bin/python3.11".into(),
        version: "3.11.2".into(),
        site_dir: "/usr/local/lib/python3.11/dist-packages".into(),
        scripts_dir: "/usr/local/bin".into(),
        data_dir: "/usr/local".into(),
        include_dir: "/usr/local/include/python3.11".into(),
        sys_path: vec![
            "/usr/local/lib/python3.11/dist-packages".into(),
            "/usr/lib/python3/dist-packages".into(),
        ],
        libc: Libc::Glibc {
            major: 2,
            minor: 36,
        },
        arch: "x86_64".into(),
        found: vec![],
    }
}

/// A wheel member: name, content, unix mode.
pub type File<'a> = (&'a str, &'a [u8], u32);

/// Writes `dir/filename` with `files`, a WHEEL, METADATA, and a RECORD listing everything
/// (`tamper` edits the RECORD rows before they are written).
pub fn wheel(
    dir: &Path,
    filename: &str,
    files: &[File],
    tamper: impl Fn(&mut Vec<Row>),
) -> PathBuf {
    let stem: Vec<&str> = filename.split('-').take(2).collect();
    let di = format!("{}-{}.dist-info", stem[0], stem[1]);
    let path = dir.join(filename);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let wheel_meta =
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    let wheel_name = format!("{di}/WHEEL");
    let mut all: Vec<(String, Vec<u8>, u32)> = files
        .iter()
        .map(|(n, b, m)| (n.to_string(), b.to_vec(), *m))
        .collect();
    all.push((wheel_name, wheel_meta.to_vec(), 0o644));
    if !files
        .iter()
        .any(|(n, _, _)| n.ends_with(".dist-info/METADATA"))
    {
        let meta = format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: {}\n",
            stem[0], stem[1]
        );
        all.push((format!("{di}/METADATA"), meta.into_bytes(), 0o644));
    }
    let mut rows: Vec<Row> = all
        .iter()
        .map(|(n, b, _)| Row::new(n.clone(), &hex::encode(Sha256::digest(b)), b.len() as u64))
        .collect();
    rows.push(Row::bare(format!("{di}/RECORD")));
    tamper(&mut rows);
    all.push((
        format!("{di}/RECORD"),
        record::write(&rows).into_bytes(),
        0o644,
    ));
    for (n, b, m) in all {
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(m);
        z.start_file(n, o).unwrap();
        z.write_all(&b).unwrap();
    }
    z.finish().unwrap();
    path
}
