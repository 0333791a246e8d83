//! sdists built into wheels with PEP 517 inside the target (real sdists from the index, the
//! real Debian bookworm python3 base, real runc): installed, imported, pinned, cached; and the
//! ways a build goes wrong, each a clear error that names the package, nothing half-written.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sha256_of(p: &Path) -> String {
    let out = ok(Command::new("sha256sum").arg(p));
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

/// A local sdist `NAME-1.0.tar.gz` made of `files` (under `NAME-1.0/`), locked in pylock.toml.
fn local_sdist(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let top = format!("{name}-1.0");
    let src = dir.join("src");
    for (p, text) in files {
        write_text(&src.join(&top).join(p), text);
    }
    let tgz = dir.join(format!("{top}.tar.gz"));
    ok(Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&src)
        .arg(&top));
    write_text(
        &dir.join("pylock.toml"),
        &format!(
            "lock-version = \"1.0\"\ncreated-by = \"test\"\n\n[[packages]]\nname = \"{name}\"\nversion = \"1.0\"\nsdist = {{ name = \"{top}.tar.gz\", path = \"{top}.tar.gz\", hashes = {{ sha256 = \"{}\" }} }}\n",
            sha256_of(&tgz)
        ),
    );
    tgz
}

/// An in-tree PEP 517 backend (no build requirements: nothing comes from the index).
fn in_tree(build_wheel: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "pyproject.toml",
            "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n"
                .to_string(),
        ),
        (
            "backend.py",
            format!("import os, socket, zipfile\n\ndef build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n{build_wheel}\n"),
        ),
    ]
}

fn failing_build(
    name: &str,
    files: &[(&str, &str)],
    python_extra: &str,
) -> (String, tempfile::TempDir) {
    require_tool("runc");
    let d = tempfile::tempdir().unwrap();
    let t = d.path().to_path_buf();
    local_sdist(&t, name, files);
    python_app_spec(
        &t,
        &format!(
            "lock = \"pylock.toml\", index_url = \"{}\"{python_extra}",
            package_index()
        ),
        &[],
    );
    let (_, err) = fails(imgbuild(&t).args(["build", "app"]));
    assert!(
        !t.join(".imgbuild/oci").exists(),
        "no image after a failed build"
    );
    let lock = std::fs::read_to_string(t.join("imgbuild.lock")).unwrap_or_default();
    assert!(!lock.contains("python-build"), "nothing pinned: {lock}");
    (err, d)
}

#[test]
fn pure_python_sdist_from_uv_lock_is_built_in_the_target_installed_imported_and_cached() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    write_text(
        &p.join("pyproject.toml"),
        "[project]\nname = \"app\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = [\"sgmllib3k==1.0.0\"]\n\n[tool.uv]\npackage = false\n",
    );
    ok(Command::new(uv())
        .args(["lock", "--quiet"])
        .current_dir(p)
        .env("UV_INDEX_URL", package_index()));
    let lock = std::fs::read_to_string(p.join("uv.lock")).unwrap();
    assert!(
        lock.contains("sdist = {") && !lock.contains("wheels = ["),
        "sgmllib3k is sdist-only: {lock}"
    );
    python_app_spec(
        p,
        "lock = \"uv.lock\", require = [\"sgmllib\"]",
        &["python3 -c 'import sgmllib; print(sgmllib.SGMLParser.__name__)'"],
    );
    let started = std::time::Instant::now();
    let out = ok(imgbuild(p).args(["build", "app"]));
    let first = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("built sgmllib3k-1.0.0-py3-none-any.whl from the sdist of sgmllib3k 1.0.0"),
        "{err}"
    );
    eprintln!("first build (with the sdist build): {first:?}; {err}");
    let pins = std::fs::read_to_string(p.join("imgbuild.lock")).unwrap();
    assert!(
        pins.contains("[python-build.\"sgmllib3k 1.0.0 for cp311 x86_64 glibc 2.36\"]"),
        "{pins}"
    );
    assert!(pins.contains("name = \"setuptools\""), "{pins}");
    assert!(pins.contains("sha256 = \""), "{pins}");
    ok(imgbuild(p).args(["verify", "app"]));
    let out = ok(imgbuild(p).args(["test", "app"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ok "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Rebuilds build nothing: the first finds the wheel by (sdist, target, pins), the next the layer.
    for _ in 0..2 {
        let out = ok(imgbuild(p).args(["build", "app", "-v"]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("from the sdist of"), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(p.join("imgbuild.lock")).unwrap(),
        pins,
        "the pins are used, not resolved again"
    );
    // `lock --update` drops the pins; the next build resolves the same ones and builds nothing.
    ok(imgbuild(p).args(["lock", "--update"]));
    assert!(!std::fs::read_to_string(p.join("imgbuild.lock"))
        .unwrap_or_default()
        .contains("python-build"));
    let out = ok(imgbuild(p).args(["build", "app"]));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("from the sdist of"));
    assert!(std::fs::read_to_string(p.join("imgbuild.lock"))
        .unwrap()
        .contains("sgmllib3k 1.0.0 for cp311"));
}

#[test]
fn a_setup_py_that_raises_is_a_clear_error_naming_the_package() {
    let (err, _) = failing_build(
        "boom",
        &[(
            "setup.py",
            "raise RuntimeError('this sdist refuses to build')\n",
        )],
        "",
    );
    assert!(
        err.contains("building boom 1.0 from its sdist boom-1.0.tar.gz"),
        "{err}"
    );
    assert!(
        err.contains("the build backend setuptools.build_meta:__legacy__ failed"),
        "{err}"
    );
    assert!(
        err.contains("| RuntimeError: this sdist refuses to build"),
        "{err}"
    );
}

#[test]
fn a_backend_that_tries_the_network_fails_inside_the_container() {
    let files =
        in_tree("    socket.create_connection(('192.0.2.1', 80), timeout=5)\n    return 'never'");
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let (err, _) = failing_build("netty", &files, "");
    assert!(err.contains("building netty 1.0"), "{err}");
    assert!(err.contains("failed in build_wheel"), "{err}");
    assert!(err.contains("Network is unreachable"), "{err}");
}

#[test]
fn a_wheel_for_the_wrong_tags_is_refused() {
    let files = in_tree(
        "    name = 'tagged-1.0-cp27-cp27m-win32.whl'\n    with zipfile.ZipFile(os.path.join(wheel_directory, name), 'w') as z:\n        z.writestr('tagged.py', '')\n    return name",
    );
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let (err, _) = failing_build("tagged", &files, "");
    assert!(err.contains("building tagged 1.0"), "{err}");
    assert!(
        err.contains("the built wheel tagged-1.0-cp27-cp27m-win32.whl is for tags cp27-cp27m-win32, which the target"),
        "{err}"
    );
}

#[test]
fn without_runc_the_error_names_both_ways_out() {
    let t = tempfile::tempdir().unwrap();
    local_sdist(t.path(), "plain", &[("setup.py", "")]);
    python_app_spec(
        t.path(),
        "lock = \"pylock.toml\", index_url = \"http://127.0.0.1:9/\"",
        &[],
    );
    let (_, err) = fails(
        imgbuild(t.path())
            .args(["build", "app"])
            .env("PATH", "/nonexistent"),
    );
    assert!(
        err.contains("cannot build plain 1.0 from its sdist plain-1.0.tar.gz: no OCI runtime"),
        "{err}"
    );
    assert!(err.contains("install runc"), "{err}");
    assert!(err.contains("find_links"), "{err}");
}

/// A setuptools sdist with one C extension (`fast._speed`); its setup.py needs a C compiler.
fn native_sdist(dir: &Path) {
    local_sdist(
        dir,
        "fast",
        &[
            (
                "pyproject.toml",
                "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n",
            ),
            (
                "setup.py",
                "from setuptools import setup, Extension\nsetup(name='fast', version='1.0', packages=['fast'], ext_modules=[Extension('fast._speed', ['speed.c'])])\n",
            ),
            ("fast/__init__.py", "from ._speed import answer\n"),
            (
                "speed.c",
                "#include <Python.h>\nstatic PyObject *answer(PyObject *s, PyObject *a) { return PyLong_FromLong(42); }\nstatic PyMethodDef M[] = {{\"answer\", answer, METH_NOARGS, 0}, {0}};\nstatic struct PyModuleDef D = {PyModuleDef_HEAD_INIT, \"_speed\", 0, -1, M};\nPyMODINIT_FUNC PyInit__speed(void) { return PyModule_Create(&D); }\n",
            ),
        ],
    );
}

#[test]
fn a_native_sdist_needs_a_compiler_and_build_base_names_an_image_that_has_one() {
    require_tool("runc");
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    native_sdist(t);
    let index = format!("index_url = \"{}\"", package_index());
    // The target (bookworm + python3) has no compiler: the backend's own words say so.
    python_app_spec(t, &format!("lock = \"pylock.toml\", {index}"), &[]);
    let (_, err) = fails(imgbuild(t).args(["build", "app"]));
    assert!(err.contains("building fast 1.0 from its sdist"), "{err}");
    assert!(err.contains("last 20 lines"), "{err}");
    assert!(
        err.contains("gcc") || err.contains("x86_64-linux-gnu-gcc") || err.contains("compiler"),
        "{err}"
    );
    // The same release with gcc and the Python headers as the build base: built there, and the
    // extension loads in the image (which still has no compiler).
    let gcc = debian_base("bookworm", "python3,gcc,libc6-dev,python3-dev");
    python_app_spec(
        t,
        &format!(
            "lock = \"pylock.toml\", {index}, build = {{ base = \"oci:{}:bookworm\" }}, require = [\"fast\"]",
            gcc.display()
        ),
        &["python3 -c 'import fast; assert fast.answer() == 42'"],
    );
    let out = ok(imgbuild(t).args(["build", "app"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("built fast-1.0-cp311-cp311-linux_x86_64.whl from the sdist of fast 1.0"),
        "{err}"
    );
    ok(imgbuild(t).args(["test", "app"]));
    ok(imgbuild(t).args(["verify", "app"]));
    let out = ok(imgbuild(t).args(["build", "app"]));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("from the sdist of"));
    // A build base with another Python (trixie's 3.13) cannot build for 3.11: refused up front.
    let trixie = debian_base("trixie", "python3");
    python_app_spec(
        t,
        &format!(
            "lock = \"pylock.toml\", {index}, build = {{ base = \"oci:{}:trixie\" }}",
            trixie.display()
        ),
        &[],
    );
    let (code, err) = fails(imgbuild(t).args(["build", "app"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("build base `oci:") && err.contains("cannot build wheels for this image"),
        "{err}"
    );
    assert!(err.contains("its Python is 3.13"), "{err}");
    assert!(
        err.contains("its libc (glibc 2.41) is newer than the image's (glibc 2.36)"),
        "{err}"
    );
}
