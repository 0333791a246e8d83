//! Which Debian package ships a library: the release's `Contents-ARCH.gz` (file path →
//! sections/packages, fetched by the sha256 of the signed release and kept in the store),
//! searched for files of that name in the library directories. Used to say, when the native
//! check misses a library on a Debian image, which package to add.

use super::archive::Archive;
use super::mirror;
use crate::recipe::{BaseView, Ctx};
use anyhow::Result;
use std::collections::BTreeMap;
use std::io::BufRead;

/// Whether `path` (relative, as Contents lists it) is in a directory the loader searches.
fn in_lib_dir(path: &str) -> bool {
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    matches!(dir, "lib" | "usr/lib" | "lib64" | "usr/lib64")
        || (dir.starts_with("lib/") || dir.starts_with("usr/lib/")) && dir.ends_with("-linux-gnu")
}

/// Packages (sorted) shipping each of `libs` in a library directory, from a Contents file.
pub fn search(contents: impl BufRead, libs: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let suffixes: Vec<String> = libs.iter().map(|l| format!("/{l}")).collect();
    for line in contents.lines() {
        let line = line?;
        let Some(i) = line.rfind([' ', '\t']) else {
            continue;
        };
        let path = line[..i].trim_end();
        for (lib, suffix) in libs.iter().zip(&suffixes) {
            if path.ends_with(suffix.as_str()) && in_lib_dir(path) {
                let e = out.entry(lib.clone()).or_default();
                for loc in line[i + 1..].split(',') {
                    let pkg = loc.rsplit('/').next().unwrap_or(loc).to_string();
                    if !e.contains(&pkg) {
                        e.push(pkg);
                    }
                }
                e.sort();
            }
        }
    }
    Ok(out)
}

/// For an image on a Debian `base`: the packages of its release that ship `libs`. `None`
/// when the base is not Debian or the archive cannot be read (the caller's error stands alone).
pub fn providers(
    cx: &Ctx,
    base: &BaseView,
    libs: &[String],
) -> Option<BTreeMap<String, Vec<String>>> {
    let os = base.read_file("etc/os-release").ok()??;
    let release = super::release_of(&String::from_utf8_lossy(&os)).ok()?;
    let arch = super::architecture(&cx.platform).ok()?;
    let archive = Archive {
        mirror: mirror::choose(cx.debian_mirror.as_deref(), &release).ok()?,
        release,
        arch,
        keyring: super::archive::default_keyring().to_path_buf(),
    };
    let path = archive.contents(&cx.store).ok()?;
    let f = std::fs::File::open(path).ok()?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(f));
    search(std::io::BufReader::with_capacity(1 << 20, gz), libs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_packages_shipping_a_library_in_a_library_directory() {
        let c = "usr/lib/x86_64-linux-gnu/libpq.so.5                         libs/libpq5\nusr/share/doc/x/libpq.so.5    doc/x\nusr/lib/x86_64-linux-gnu/libpq.so                           libdevel/libpq-dev\nlib/x86_64-linux-gnu/libz.so.1    libs/zlib1g,libs/zlib1g-other\n";
        let got = search(
            c.as_bytes(),
            &[
                "libpq.so.5".into(),
                "libz.so.1".into(),
                "libnone.so.1".into(),
            ],
        )
        .unwrap();
        assert_eq!(got["libpq.so.5"], vec!["libpq5"]);
        assert_eq!(got["libz.so.1"], vec!["zlib1g", "zlib1g-other"]);
        assert!(!got.contains_key("libnone.so.1"));
    }
}
