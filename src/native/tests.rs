//! The loader's search order on made-up root filesystems (the real ones: tests/native.rs).

use super::*;
use crate::rootfs::Listing;

fn elf(needed: &[&str], rpath: Option<&str>, runpath: Option<&str>) -> Info {
    Info {
        machine: 62,
        class64: true,
        needed: needed.iter().map(|s| s.to_string()).collect(),
        rpath: rpath.map(String::from),
        runpath: runpath.map(String::from),
        complete: true,
        ..Info::default()
    }
}

/// Layer 0 (the base) holds `base`, layer 1 `layer`: (path, ELF info or file text).
fn fs(base: &[(&str, Result<Info, &str>)], layer: &[(&str, Result<Info, &str>)]) -> Rootfs {
    let mut r = Rootfs::default();
    for (i, files) in [base, layer].into_iter().enumerate() {
        let mut l = Listing::default();
        for (p, body) in files {
            let text = match body {
                Ok(info) => info.encode(),
                Err(t) => t.to_string(),
            };
            l.add_file(p, 0o755, 1, Some(text));
        }
        r.apply(i, &l);
    }
    r
}

fn amd64() -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..ImageConfig::default()
    }
}

fn messages(fs: &Rootfs, c: &ImageConfig) -> Vec<String> {
    check(fs, c, 1).into_iter().map(|m| m.message).collect()
}

const LIBC: &str = "lib/x86_64-linux-gnu/libc.so.6";

#[test]
fn default_and_configured_directories() {
    let ext = (
        "opt/app/ext.so",
        Ok(elf(&["libc.so.6", "libx.so.1"], None, None)),
    );
    let libx = (
        "opt/vendor/lib/libx.so.1",
        Ok(elf(&["libc.so.6"], None, None)),
    );
    let base = vec![(LIBC, Ok(elf(&[], None, None))), libx.clone()];
    assert_eq!(
        messages(&fs(&base, std::slice::from_ref(&ext)), &amd64()),
        ["/opt/app/ext.so needs libx.so.1, which is not in the image"]
    );
    let mut conf = base.clone();
    conf.push(("etc/ld.so.conf", Err("include /etc/ld.so.conf.d/*.conf\n")));
    conf.push((
        "etc/ld.so.conf.d/vendor.conf",
        Err("# vendor\n/opt/vendor/lib\n"),
    ));
    assert!(messages(&fs(&conf, std::slice::from_ref(&ext)), &amd64()).is_empty());
    // LD_LIBRARY_PATH of the image config counts too.
    let mut c = amd64();
    c.config.set_env("LD_LIBRARY_PATH", "/opt/vendor/lib");
    assert!(messages(&fs(&base, &[ext]), &c).is_empty());
}

#[test]
fn origin_rpath_runpath_and_what_loaded_objects_pass_on() {
    let base = [(LIBC, Ok(elf(&[], None, None)))];
    let vendored = |needed: &[&str]| Ok(elf(needed, None, None));
    let layer = |ext: Info| {
        vec![
            ("site/pkg/_ext.so", Ok(ext)),
            (
                "site/pkg.libs/liba-1.so",
                vendored(&["libb-2.so", "libc.so.6"]),
            ),
            ("site/pkg.libs/libb-2.so", vendored(&["libc.so.6"])),
        ]
    };
    // DT_RPATH $ORIGIN/../pkg.libs: liba found, and libb through liba (which has no path of its
    // own: the extension's RPATH is inherited). liba alone would not load; loaded, it does.
    let ok = elf(
        &["liba-1.so", "libc.so.6"],
        Some("$ORIGIN/../pkg.libs"),
        None,
    );
    assert!(messages(&fs(&base, &layer(ok)), &amd64()).is_empty());
    // DT_RUNPATH is not inherited: libb is missing for liba.
    let run = elf(&["liba-1.so"], None, Some("${ORIGIN}/../pkg.libs"));
    assert_eq!(
        messages(&fs(&base, &layer(run)), &amd64()),
        ["/site/pkg.libs/liba-1.so needs libb-2.so, which is not in the image"]
    );
    // With DT_RUNPATH present, DT_RPATH is ignored (and liba, loaded by nothing, is checked
    // on its own).
    let both = elf(
        &["liba-1.so"],
        Some("$ORIGIN/../pkg.libs"),
        Some("/nowhere"),
    );
    assert_eq!(
        messages(&fs(&base, &layer(both)), &amd64()),
        [
            "/site/pkg.libs/liba-1.so needs libb-2.so, which is not in the image",
            "/site/pkg/_ext.so needs liba-1.so, which is not in the image"
        ]
    );
}

#[test]
fn machine_class_and_loader() {
    let mut lib32 = elf(&[], None, None);
    lib32.class64 = false;
    lib32.machine = 3;
    let base = [("usr/lib/x86_64-linux-gnu/libz.so.1", Ok(lib32))];
    let mut arm = elf(&["libc.so.6"], None, None);
    arm.machine = 183;
    let mut exe = elf(&["libz.so.1"], None, None);
    exe.interp = Some("/lib64/ld-linux-x86-64.so.2".into());
    let m = messages(
        &fs(
            &base,
            &[("usr/bin/tool", Ok(exe)), ("usr/lib/arm.so", Ok(arm))],
        ),
        &amd64(),
    );
    assert_eq!(
        m,
        [
            "/usr/bin/tool needs its loader /lib64/ld-linux-x86-64.so.2, which is not in the image (built for another libc?)",
            "/usr/bin/tool needs libz.so.1, which is not in the image",
            "/usr/lib/arm.so is built for aarch64 (ELF machine 183, 64-bit), but the image is linux/amd64",
        ]
    );
}

#[test]
fn the_owner_is_named_from_its_record() {
    let site = "usr/local/lib/python3.11/dist-packages";
    let ext = format!("{site}/psycopg_c/_psycopg.so");
    let rec = format!("{site}/psycopg_c-3.2.1.dist-info/RECORD");
    let f = fs(
        &[(LIBC, Ok(elf(&[], None, None)))],
        &[
            (
                ext.as_str(),
                Ok(elf(&["libpq.so.5", "libc.so.6"], None, None)),
            ),
            (
                rec.as_str(),
                Err("psycopg_c/_psycopg.so,sha256=x,1\npsycopg_c-3.2.1.dist-info/RECORD,,\n"),
            ),
        ],
    );
    let m = check(&f, &amd64(), 1);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].layer, 1);
    assert_eq!(
        m[0].message,
        format!("psycopg_c/_psycopg.so needs libpq.so.5, which is not in the image (installed by psycopg_c 3.2.1 into /{site})")
    );
    // The base's own files are not checked by a build.
    assert!(check(&f, &amd64(), 2).is_empty());
}

#[test]
fn files_for_other_platforms_shipped_inside_a_package_are_not_a_problem() {
    // speech_recognition 3.16 ships flac-linux-x86 (i386) beside flac-linux-x86_64; embit 0.8
    // ships prebuilt/libsecp256k1_linux_aarch64.so beside the x86_64 one (loaded with ctypes).
    let site = "usr/local/lib/python3.13/dist-packages";
    let mut i386 = elf(&["libc.so.6"], None, None);
    i386.machine = 3;
    i386.class64 = false;
    i386.interp = Some("/lib/ld-linux.so.2".into());
    let flac = format!("{site}/speech_recognition/flac-linux-x86");
    let arm = || {
        let mut e = elf(&["libc.so.6"], None, None);
        e.machine = 183;
        e
    };
    let prebuilt = format!("{site}/embit/util/prebuilt/libsecp256k1_linux_aarch64.so");
    let m = messages(
        &fs(
            &[(LIBC, Ok(elf(&[], None, None)))],
            &[
                (flac.as_str(), Ok(i386)),
                (prebuilt.as_str(), Ok(arm())),
                ("usr/local/bin/tool", Ok(arm())),
                ("usr/lib/x86_64-linux-gnu/libarm.so.1", Ok(arm())),
            ],
        ),
        &amd64(),
    );
    // A program on PATH and a library in the loader's directories would be loaded: reported.
    assert_eq!(
        m,
        [
            "/usr/lib/x86_64-linux-gnu/libarm.so.1 is built for aarch64 (ELF machine 183, 64-bit), but the image is linux/amd64",
            "/usr/local/bin/tool is built for aarch64 (ELF machine 183, 64-bit), but the image is linux/amd64",
        ]
    );
}

#[test]
fn the_missing_library_is_read_back_from_a_miss() {
    use crate::native::missing_library;
    assert_eq!(
        missing_library(
            "pgnative/_pq.so needs libpq.so.5, which is not in the image (installed by x)"
        ),
        Some("libpq.so.5")
    );
    assert_eq!(
        missing_library("a loads /usr/lib/b.so, which needs libz.so.1, which is not in the image"),
        Some("libz.so.1")
    );
    assert_eq!(
        missing_library("/x needs its loader /lib/ld.so, which is not in the image"),
        None
    );
}
