//! Native libraries: every ELF file a layer installs must find each `DT_NEEDED` library in the
//! final image. On the real Debian bookworm base: a real manylinux wheel with vendored
//! libraries (psycopg2-binary) builds, verifies and imports in runc; an extension compiled here
//! against libpq (which the base lacks) fails the build naming it; the same made loadable by a
//! vendored `.libs` directory and `$ORIGIN` RPATH passes, and `verify` finds a miss in an image
//! imgbuild did not build.

mod common;

use common::*;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::Path;
use std::process::Command;

const SITE: &str = "/usr/local/lib/python3.11/dist-packages";
const EXT: &str = "cpython-311-x86_64-linux-gnu.so";

fn build(dir: &Path, args: &[&str]) -> Command {
    let mut c = imgbuild(dir);
    c.env("IMGBUILD_CACHE", shared_store()).args(args);
    c
}

/// Compiles C `source` into the shared object `out` with extra `cc` arguments.
fn cc(dir: &Path, source: &str, out: &Path, args: &[&str]) {
    require_tool("cc"); // Debian: gcc, libc6-dev
    let src = dir.join(format!("{}.c", out.file_name().unwrap().to_string_lossy()));
    std::fs::write(&src, source).unwrap();
    let mut c = Command::new("cc");
    c.args(["-shared", "-fPIC", "-O1", "-o"]).arg(out).arg(&src);
    ok(c.args(args));
}

/// A platform wheel (`Root-Is-Purelib: false`) of `files`, with its RECORD; returns its sha256.
fn wheel(dir: &Path, name: &str, files: &[(String, Vec<u8>)]) -> (String, String) {
    use imgbuild::python::record::{self, Row};
    let filename = format!("{name}-1.0-cp311-cp311-manylinux_2_17_x86_64.whl");
    let di = format!("{name}-1.0.dist-info");
    let mut all = files.to_vec();
    all.push((
        format!("{di}/WHEEL"),
        b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-manylinux_2_17_x86_64\n"
            .to_vec(),
    ));
    all.push((
        format!("{di}/METADATA"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n").into_bytes(),
    ));
    let mut rows: Vec<Row> = all
        .iter()
        .map(|(n, b)| Row::new(n.clone(), &hex::encode(Sha256::digest(b)), b.len() as u64))
        .collect();
    rows.push(Row::bare(format!("{di}/RECORD")));
    all.push((format!("{di}/RECORD"), record::write(&rows).into_bytes()));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(&filename);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (n, b) in all {
        let mode = if n.ends_with(".so") || n.contains(".so.") {
            0o755
        } else {
            0o644
        };
        z.start_file(
            n,
            zip::write::SimpleFileOptions::default().unix_permissions(mode),
        )
        .unwrap();
        z.write_all(&b).unwrap();
    }
    z.finish().unwrap();
    let sha = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
    (filename, sha)
}

/// A project whose image `t` is the Debian base plus a python layer of the one local wheel.
fn project(dir: &Path, name: &str, whl: &(String, String)) {
    let base = debian_python_base();
    std::fs::write(
        dir.join("pylock.toml"),
        format!(
            "lock-version = \"1.0\"\ncreated-by = \"test\"\n\n[[packages]]\nname = \"{name}\"\nversion = \"1.0\"\nwheels = [{{ path = \"wheels/{}\", hashes = {{ sha256 = \"{}\" }} }}]\n",
            whl.0, whl.1
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "[images.t]\nbase = \"oci:{}:bookworm\"\n\n[[images.t.layers]]\nname = \"python-deps\"\npython = {{ lock = \"pylock.toml\" }}\n",
            base.display()
        ),
    )
    .unwrap();
}

/// `python3 -c CODE` in the built image `t`, with runc.
fn run_in_image(dir: &Path, code: &str) {
    let bundle = dir.join("bundle");
    let _ = std::fs::remove_dir_all(&bundle);
    umoci_unpack(&dir.join(".imgbuild/oci"), "t", &bundle);
    let out = runc_run(&bundle, &["/usr/bin/python3", "-c", code]);
    assert!(
        out.status.success(),
        "`{code}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_debian_base_resolves_every_library_its_own_files_need() {
    let base = debian_python_base();
    let t = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let v = imgbuild::verify::target(
        t.path(),
        None,
        &[],
        &format!("oci:{}:bookworm", base.display()),
    )
    .unwrap();
    let took = start.elapsed();
    let fs = &v.checked.fs;
    let infos: Vec<imgbuild::elf::Info> = fs
        .captured
        .values()
        .filter_map(|t| imgbuild::elf::Info::decode(t))
        .collect();
    let elf_bytes: usize = fs
        .captured
        .values()
        .filter(|t| t.starts_with(imgbuild::elf::TEXT_MAGIC))
        .map(String::len)
        .sum();
    let dynamic = infos.iter().filter(|i| !i.needed.is_empty()).count();
    let incomplete = infos.iter().filter(|i| !i.complete).count();
    eprintln!(
        "bookworm base: {} ELF files, {dynamic} with DT_NEEDED, {incomplete} incomplete, {elf_bytes} bytes of ELF captures; verify {took:?}",
        infos.len()
    );
    assert!(infos.len() > 200 && dynamic > 150, "{}", infos.len());
    assert_eq!(incomplete, 0, "every ELF file's dynamic section was read");
    assert!(fs.captured.contains_key("etc/ld.so.conf"));
    assert!(fs
        .captured
        .keys()
        .any(|k| k.starts_with("etc/ld.so.conf.d/")));
    // python3 itself: its needs resolved through the base's directories.
    let py = fs.resolve("/usr/bin/python3").unwrap().0;
    let i = imgbuild::elf::Info::decode(&fs.captured[&py]).unwrap();
    assert!(i.needed.iter().any(|n| n == "libc.so.6"), "{i:?}");
    assert_eq!(imgbuild::native::check(fs, &v.checked.config, 0), vec![]);
}

#[test]
fn a_real_manylinux_wheel_with_vendored_libraries_builds_and_imports() {
    let t = tempfile::tempdir().unwrap();
    let base = debian_python_base();
    // psycopg2-binary vendors libpq, libssl, krb5… in psycopg2_binary.libs/, found through
    // the extension's $ORIGIN/../psycopg2_binary.libs.
    std::fs::write(
        t.path().join("requirements.txt"),
        "psycopg2-binary==2.9.10 \\\n    --hash=sha256:512d29bb12608891e349af6a0cccedce51677725a921c07dba6342beaf576f9a\n",
    )
    .unwrap();
    std::fs::write(
        t.path().join("imgbuild.toml"),
        format!(
            "[images.t]\nbase = \"oci:{}:bookworm\"\n\n[[images.t.layers]]\nname = \"python-deps\"\npython = {{ lock = \"requirements.txt\", index_url = \"{}\", require = [\"psycopg2\"] }}\n",
            base.display(),
            package_index()
        ),
    )
    .unwrap();
    ok(&mut build(t.path(), &["build", "t"]));
    ok(&mut build(t.path(), &["verify", "oci:.imgbuild/oci:t"]));
    ok(&mut build(t.path(), &["verify", "t"]));
    run_in_image(t.path(), "import psycopg2, psycopg2.extensions");
    // What the check saw: every vendored library read whole, the extension's needs among them
    // (patchelf moved its string table behind the dynamic section).
    let v = imgbuild::verify::target(t.path(), None, &[], "oci:.imgbuild/oci:t").unwrap();
    let fs = &v.checked.fs;
    let info =
        |p: &str| imgbuild::elf::Info::decode(&fs.captured[p.trim_start_matches('/')]).unwrap();
    let ext = info(&format!("{SITE}/psycopg2/_psycopg.{EXT}"));
    assert!(ext.complete, "{ext:?}");
    assert!(
        ext.needed.iter().any(|n| n.starts_with("libpq-")),
        "{ext:?}"
    );
    let rpath = ext.rpath.clone().or(ext.runpath.clone()).unwrap();
    assert!(rpath.contains("$ORIGIN/../psycopg2_binary.libs"), "{rpath}");
    let vendored: Vec<_> = fs
        .captured
        .iter()
        .filter(|(k, _)| k.contains("/psycopg2_binary.libs/"))
        .map(|(_, t)| imgbuild::elf::Info::decode(t).unwrap())
        .collect();
    assert_eq!(vendored.len(), 14);
    assert!(vendored.iter().all(|i| i.complete), "{vendored:?}");
}

#[test]
fn an_extension_linking_a_library_the_image_lacks_fails_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path().join("wheels");
    assert!(
        Path::new("/usr/include/postgresql/libpq-fe.h").is_file(),
        "this test needs libpq's headers: install the Debian package `libpq-dev` (.ci/install-deps does)"
    );
    let so = t.path().join(format!("_pq.{EXT}"));
    cc(
        t.path(),
        "#include <libpq-fe.h>\nint pq_version(void) { return PQlibVersion(); }\n",
        &so,
        &["-I/usr/include/postgresql", "-lpq"],
    );
    let whl = wheel(
        &w,
        "pgnative",
        &[
            ("pgnative/__init__.py".into(), vec![]),
            (format!("pgnative/_pq.{EXT}"), std::fs::read(&so).unwrap()),
        ],
    );
    project(t.path(), "pgnative", &whl);
    let (code, err) = fails(&mut build(t.path(), &["build", "t"]));
    assert_eq!(code, 1, "{err}");
    let want = format!("layer `python-deps`: pgnative/_pq.{EXT} needs libpq.so.5, which is not in the image (installed by pgnative 1.0 into {SITE})");
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("failed verification (1 problem):"), "{err}");
    assert!(
        !t.path().join(".imgbuild/oci/index.json").exists(),
        "no image is written"
    );

    // An image imgbuild did not build: `verify` finds the same miss.
    let r = t.path().join("rootfs");
    let lib = r.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::copy("/lib/x86_64-linux-gnu/libc.so.6", lib.join("libc.so.6")).unwrap();
    std::fs::copy(&so, lib.join("libpqver.so")).unwrap();
    ok(&mut build(
        t.path(),
        &["base", "import", "rootfs", "--output", "oci:img:x"],
    ));
    let (code, err) = fails(&mut build(t.path(), &["verify", "oci:img:x"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("layer 1 of 1: /usr/lib/x86_64-linux-gnu/libpqver.so needs libpq.so.5, which is not in the image"),
        "{err}"
    );
}

#[test]
fn vendored_libraries_found_through_origin_rpath_load_in_the_image() {
    let t = tempfile::tempdir().unwrap();
    let libs = t.path().join("built");
    std::fs::create_dir_all(&libs).unwrap();
    // As auditwheel repairs a wheel: the library renamed with a hash, in `<pkg>.libs/`, and the
    // extension's DT_RPATH `$ORIGIN/../<pkg>.libs`.
    let vendored = "libdemo-1a2b3c4d.so.1";
    cc(
        t.path(),
        "int demo_answer(void) { return 42; }\n",
        &libs.join(vendored),
        &[&format!("-Wl,-soname,{vendored}")],
    );
    let so = libs.join(format!("_native.{EXT}"));
    cc(
        t.path(),
        "extern int demo_answer(void);\nint native_answer(void) { return demo_answer(); }\n",
        &so,
        &[
            &format!("-L{}", libs.display()),
            &format!("-l:{vendored}"),
            "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../vendemo.libs",
        ],
    );
    let whl = wheel(
        &t.path().join("wheels"),
        "vendemo",
        &[
            ("vendemo/__init__.py".into(), vec![]),
            (
                format!("vendemo/_native.{EXT}"),
                std::fs::read(&so).unwrap(),
            ),
            (
                format!("vendemo.libs/{vendored}"),
                std::fs::read(libs.join(vendored)).unwrap(),
            ),
        ],
    );
    project(t.path(), "vendemo", &whl);
    ok(&mut build(t.path(), &["build", "t"]));
    ok(&mut build(t.path(), &["verify", "oci:.imgbuild/oci:t"]));
    run_in_image(
        t.path(),
        &format!("import ctypes; assert ctypes.CDLL('{SITE}/vendemo/_native.{EXT}').native_answer() == 42"),
    );
}
