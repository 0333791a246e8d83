//! Python layers end to end: the job-agent api image on a real Debian base run with runc
//! (uv.lock and requirements.txt), a Python 3.13 target from this host, and the failures a
//! builder must catch, each with its exact error.

mod common;

use common::*;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn build(dir: &Path, args: &[&str]) -> Command {
    let mut c = imgbuild(dir);
    c.env("IMGBUILD_CACHE", shared_store()).args(args);
    c
}

fn write(path: &Path, text: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn symlink(target: &str, at: &Path) {
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, at).unwrap();
}

/// A tiny root filesystem that looks like Debian 12's python3 (3.11.2, glibc 2.36), or like a
/// python.org 3.13 image (`PYTHON_VERSION` in its config), imported as layout tag `py`.
fn fake_base(dir: &Path, python_org_313: bool) -> PathBuf {
    let r = dir.join("rootfs");
    symlink("usr/bin", &r.join("bin"));
    symlink("usr/lib", &r.join("lib"));
    write(&r.join("usr/bin/sh"), b"\x7fELF", 0o755);
    write(&r.join("usr/bin/env"), b"\x7fELF", 0o755);
    write(
        &r.join("usr/lib/x86_64-linux-gnu/libc.so.6"),
        b"\x7fELF GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36.\n",
        0o755,
    );
    // The rest of glibc (and zlib, libgcc) that real extensions and vendored libraries need:
    // every DT_NEEDED of an installed ELF file must be found in the image.
    for lib in [
        "ld-linux-x86-64.so.2",
        "libdl.so.2",
        "libgcc_s.so.1",
        "libm.so.6",
        "libpthread.so.0",
        "libresolv.so.2",
        "librt.so.1",
        "libutil.so.1",
        "libz.so.1",
    ] {
        write(
            &r.join("usr/lib/x86_64-linux-gnu").join(lib),
            b"\x7fELF",
            0o755,
        );
    }
    let mut env = vec![];
    if python_org_313 {
        write(&r.join("usr/local/bin/python3.13"), b"\x7fELF", 0o755);
        symlink("python3.13", &r.join("usr/local/bin/python3"));
        write(
            &r.join("usr/local/lib/python3.13/site.py"),
            b"# site-packages\n",
            0o644,
        );
        std::fs::create_dir_all(r.join("usr/local/lib/python3.13/site-packages")).unwrap();
        env = vec![
            "--env",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "--env",
            "PYTHON_VERSION=3.13.1",
        ];
    } else {
        write(
            &r.join("usr/bin/python3.11"),
            b"\x7fELF\0Python \x003.11.2\0",
            0o755,
        );
        symlink("python3.11", &r.join("usr/bin/python3"));
        write(
            &r.join("usr/lib/python3.11/site.py"),
            b"# local/lib dist-packages\n",
            0o644,
        );
        std::fs::create_dir_all(r.join("usr/local/lib/python3.11/dist-packages")).unwrap();
        std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    }
    let mut args = vec![
        "base",
        "import",
        "rootfs",
        "--output",
        "oci:base:py",
        "--compression",
        "none",
    ];
    args.extend(env);
    ok(&mut build(dir, &args));
    dir.join("base")
}

/// A wheel with `files` plus WHEEL and a correct RECORD; returns its path and sha256.
fn make_wheel(dir: &Path, filename: &str, files: &[(&str, &[u8], u32)]) -> (PathBuf, String) {
    use imgbuild::python::record::{self, Row};
    let parts: Vec<&str> = filename.split('-').collect();
    let di = format!("{}-{}.dist-info", parts[0], parts[1]);
    let mut all: Vec<(String, Vec<u8>, u32)> = files
        .iter()
        .map(|(n, b, m)| (n.to_string(), b.to_vec(), *m))
        .collect();
    all.push((
        format!("{di}/WHEEL"),
        b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n".to_vec(),
        0o644,
    ));
    all.push((
        format!("{di}/METADATA"),
        format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: {}\n",
            parts[0], parts[1]
        )
        .into_bytes(),
        0o644,
    ));
    let mut rows: Vec<Row> = all
        .iter()
        .map(|(n, b, _)| Row::new(n.clone(), &sha256_hex(b), b.len() as u64))
        .collect();
    rows.push(Row::bare(format!("{di}/RECORD")));
    all.push((
        format!("{di}/RECORD"),
        record::write(&rows).into_bytes(),
        0o644,
    ));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(filename);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (n, b, m) in all {
        z.start_file(
            n,
            zip::write::SimpleFileOptions::default().unix_permissions(m),
        )
        .unwrap();
        z.write_all(&b).unwrap();
    }
    z.finish().unwrap();
    let sha = sha256_hex(std::fs::read(&path).unwrap());
    (path, sha)
}

const DEMO: &[(&str, &[u8], u32)] = &[
    ("demo/__init__.py", b"", 0o644),
    ("demo/cli.py", b"def main():\n    return 0\n", 0o644),
    (
        "demo-1.0.dist-info/entry_points.txt",
        b"[console_scripts]\ndemo = demo.cli:main\n",
        0o644,
    ),
];

/// A project whose image `t` has a python layer (`python` is the inline table's inside) on
/// `base`, then `extra` TOML (more layers).
fn project(dir: &Path, base: &Path, python: &str, extra: &str) {
    let toml = format!(
        "[images.t]\nbase = \"oci:{}:py\"\n\n[[images.t.layers]]\nname = \"python-deps\"\npython = {{ {python} }}\n{extra}",
        base.display()
    );
    write_project(dir, &[], &toml);
}

/// A pylock.toml naming local wheels (`wheels/NAME`) and sdists.
/// (name, version, [(wheel file, sha256)], sdist file)
type Locked<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>);

fn pylock(dir: &Path, packages: &[Locked]) {
    let mut t = String::from("lock-version = \"1.0\"\ncreated-by = \"test\"\n");
    for (name, version, wheels, sdist) in packages {
        t.push_str(&format!(
            "\n[[packages]]\nname = \"{name}\"\nversion = \"{version}\"\n"
        ));
        if let Some(s) = sdist {
            t.push_str(&format!("sdist = {{ name = \"{s}\", path = \"sdists/{s}\", hashes = {{ sha256 = \"{}\" }} }}\n", "0".repeat(64)));
        }
        let w: Vec<String> = wheels
            .iter()
            .map(|(f, h)| format!("{{ path = \"wheels/{f}\", hashes = {{ sha256 = \"{h}\" }} }}"))
            .collect();
        t.push_str(&format!("wheels = [{}]\n", w.join(", ")));
    }
    std::fs::write(dir.join("pylock.toml"), t).unwrap();
}

/// A project on the fake Debian base with the `demo` wheel: `python` adds to the layer's
/// table (default: require demo.cli, script demo), `extra` TOML follows the layer.
fn demo_project(python: Option<&str>, extra: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let base = fake_base(t.path(), false);
    let (_, sha) = make_wheel(&t.path().join("wheels"), "demo-1.0-py3-none-any.whl", DEMO);
    pylock(
        t.path(),
        &[("demo", "1.0", &[("demo-1.0-py3-none-any.whl", &sha)], None)],
    );
    let python = python.unwrap_or("require = [\"demo.cli\"], scripts = [\"demo\"]");
    project(
        t.path(),
        &base,
        &format!("lock = \"pylock.toml\", {python}"),
        extra,
    );
    t
}

fn build_fails(dir: &Path) -> String {
    let (code, err) = fails(&mut build(dir, &["build", "t"]));
    assert_eq!(code, 1, "{err}");
    err
}

const SITE: &str = "/usr/local/lib/python3.11/dist-packages";

#[test]
fn a_wheel_install_on_a_debian_layout_verifies() {
    let t = demo_project(None, "");
    ok(&mut build(t.path(), &["build", "t"]));
    ok(&mut build(t.path(), &["verify", "oci:.imgbuild/oci:t"]));
}

#[test]
fn a_record_row_whose_file_a_later_layer_deletes() {
    let t = demo_project(None, "\n[[images.t.layers]]\nname = \"app\"\nfiles = [{ from = \"wh\", to = \"/usr/local/lib/python3.11/dist-packages/demo\" }]\n");
    write(&t.path().join("wh/.wh.cli.py"), b"", 0o644);
    let err = build_fails(t.path());
    assert!(err.contains(&format!("layer `python-deps`: demo 1.0: {SITE}/demo/cli.py (in RECORD) was deleted by layer `app`")), "{err}");
    assert!(
        err.contains("require `demo.cli`: not importable by /usr/bin/python3.11"),
        "{err}"
    );
}

#[test]
fn an_extra_file_that_no_record_claims() {
    let t = demo_project(None, "\n[[images.t.layers]]\nname = \"app\"\nfiles = [{ from = \"extra.py\", to = \"/usr/local/lib/python3.11/dist-packages/demo/extra.py\" }]\n");
    write(
        &t.path().join("extra.py"),
        b"print('not installed by a wheel')\n",
        0o644,
    );
    let err = build_fails(t.path());
    assert!(
        err.contains("image `t` failed verification (1 problem):"),
        "{err}"
    );
    assert!(err.contains(&format!("layer `python-deps`: {SITE}/demo/extra.py (written by layer `app`) is claimed by no RECORD")), "{err}");
}

#[test]
fn a_later_layer_replacing_an_installed_file() {
    let t = demo_project(None, "\n[[images.t.layers]]\nname = \"app\"\nfiles = [{ from = \"cli.py\", to = \"/usr/local/lib/python3.11/dist-packages/demo/cli.py\" }]\n");
    write(&t.path().join("cli.py"), b"def main(): pass\n", 0o644);
    let err = build_fails(t.path());
    assert!(err.contains(&format!("demo 1.0: {SITE}/demo/cli.py (in RECORD) is replaced by layer `app` (it was installed by layer `python-deps`)")), "{err}");
}

#[test]
fn a_script_whose_shebang_names_a_host_path() {
    let t = tempfile::tempdir().unwrap();
    let base = fake_base(t.path(), false);
    let (_, sha) = make_wheel(
        &t.path().join("wheels"),
        "tool-2.0-py3-none-any.whl",
        &[
            ("tool/__init__.py", b"", 0o644),
            (
                "tool-2.0.data/scripts/tool",
                b"#!/tmp/build-venv/bin/python3\nimport tool\n",
                0o755,
            ),
        ],
    );
    pylock(
        t.path(),
        &[("tool", "2.0", &[("tool-2.0-py3-none-any.whl", &sha)], None)],
    );
    project(
        t.path(),
        &base,
        "lock = \"pylock.toml\", scripts = [\"tool\"]",
        "",
    );
    let err = build_fails(t.path());
    assert!(err.contains("layer `python-deps`: script `tool` (/usr/local/bin/tool): its shebang names /tmp/build-venv/bin/python3, which does not exist in the image"), "{err}");
}

#[test]
fn require_of_a_module_that_is_not_installed() {
    let t = demo_project(Some("require = [\"demo\", \"nonexistent_mod\"]"), "");
    let err = build_fails(t.path());
    assert!(err.contains("layer `python-deps`: require `nonexistent_mod`: not importable by /usr/bin/python3.11: none of nonexistent_mod.py, nonexistent_mod/__init__.py, nonexistent_mod/ or nonexistent_mod.cpython-311-x86_64-linux-gnu.so / .abi3.so / .so exists under"), "{err}");
    assert!(!err.contains("require `demo`"), "{err}");
}

#[test]
fn a_wheel_for_the_wrong_python_version() {
    let t = tempfile::tempdir().unwrap();
    let base = fake_base(t.path(), false);
    let f = "fast-1.0-cp312-cp312-manylinux_2_17_x86_64.whl";
    let (_, sha) = make_wheel(
        &t.path().join("wheels"),
        f,
        &[("fast/__init__.py", b"", 0o644)],
    );
    pylock(t.path(), &[("fast", "1.0", &[(f, &sha)], None)]);
    project(t.path(), &base, "lock = \"pylock.toml\"", "");
    let err = build_fails(t.path());
    assert!(err.contains("fast 1.0 has no wheel for the target (CPython 3.11.2 at /usr/bin/python3.11 (glibc 2.36, x86_64), site directory /usr/local/lib/python3.11/dist-packages): pylock.toml has fast-1.0-cp312-cp312-manylinux_2_17_x86_64.whl; the target accepts"), "{err}");
    assert!(
        err.contains("best cp311-cp311-manylinux_2_36_x86_64"),
        "{err}"
    );
    assert!(err.contains("set `find_links = \"wheels\"`"), "{err}");
}

#[test]
fn an_sdist_only_package_and_its_fix_through_find_links() {
    let t = tempfile::tempdir().unwrap();
    let base = fake_base(t.path(), false);
    pylock(
        t.path(),
        &[("srconly", "0.3", &[], Some("srconly-0.3.tar.gz"))],
    );
    project(t.path(), &base, "lock = \"pylock.toml\"", "");
    // The sdist is built (tests/sdist.rs), which needs an index for the build requirements.
    let (code, err) = fails(&mut build(t.path(), &["build", "t"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("building srconly 0.3 from its sdist needs a package index"),
        "{err}"
    );
    // A wheel built into find_links is used instead of building.
    make_wheel(
        &t.path().join("built"),
        "srconly-0.3-cp311-cp311-linux_x86_64.whl",
        &[("srconly.py", b"X = 1\n", 0o644)],
    );
    project(
        t.path(),
        &base,
        "lock = \"pylock.toml\", find_links = \"built\", require = [\"srconly\"]",
        "",
    );
    ok(&mut build(t.path(), &["build", "t"]));
}

/// `python3 -m http.server` on 127.0.0.1 serving `dir`, stopped (by PID) on drop.
struct Http {
    child: std::process::Child,
    port: u16,
}

impl Http {
    fn serve(dir: &Path) -> Http {
        let port = free_port();
        let mut child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Http { child, port };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("http.server did not start");
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn requirements_through_a_simple_index_and_a_tampered_download() {
    let t = tempfile::tempdir().unwrap();
    let base = fake_base(t.path(), false);
    let idx = t.path().join("index");
    let f = "demo-1.0-py3-none-any.whl";
    let (good, sha) = make_wheel(&t.path().join("good"), f, DEMO);
    // PEP 503 pages that advertise the good hash; the file served is first a tampered one.
    write(&idx.join("simple/demo/index.html"), format!("<html><body><a href=\"../../files/{f}#sha256={sha}\">{f}</a>\n<a href=\"../../files/demo-1.0.tar.gz#sha256={}\">demo-1.0.tar.gz</a></body></html>", "1".repeat(64)).as_bytes(), 0o644);
    let mut evil = std::fs::read(&good).unwrap();
    let n = evil.len();
    evil[n / 2] ^= 0xff;
    write(&idx.join("files").join(f), &evil, 0o644);
    let server = Http::serve(&idx);
    std::fs::write(
        t.path().join("requirements.txt"),
        format!("demo==1.0 \\\n    --hash=sha256:{sha}\n"),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{}/simple", server.port);
    project(
        t.path(),
        &base,
        &format!("lock = \"requirements.txt\", index_url = \"{url}\", scripts = [\"demo\"]"),
        "",
    );
    let mut cmd = imgbuild(t.path());
    cmd.args(["build", "t"]);
    let (code, err) = fails(&mut cmd);
    assert_eq!(code, 1, "{err}");
    let bad = sha256_hex(&evil);
    let want = format!("wheel {f} from http://127.0.0.1:{}/files/{f}: sha256 mismatch: requirements.txt pins {sha}, the file hashes to {bad}; refusing it (tampered, truncated or re-uploaded)", server.port);
    assert!(err.contains(&want), "{err}");
    // The real file: the build succeeds, and a second build asks the index nothing.
    std::fs::copy(&good, idx.join("files").join(f)).unwrap();
    ok(imgbuild(t.path()).args(["build", "t"]));
    drop(server);
    std::fs::remove_dir_all(t.path().join(".store/layers")).unwrap();
    ok(imgbuild(t.path()).args(["build", "t"]));
}

#[test]
fn verify_checks_the_records_of_an_image_it_did_not_build() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().join("rootfs");
    write(&r.join("usr/bin/python3.11"), b"\x7fELF", 0o755);
    let site = r.join("usr/local/lib/python3.11/site-packages");
    let body = b"VALUE = 1\n";
    write(&site.join("foo/__init__.py"), body, 0o644);
    let rec = format!(
        "foo/__init__.py,sha256={},{}\nfoo-1.0.dist-info/RECORD,,\n",
        imgbuild::python::record::b64(&Sha256::digest(body)),
        body.len()
    );
    write(
        &site.join("foo-1.0.dist-info/RECORD"),
        rec.as_bytes(),
        0o644,
    );
    ok(&mut build(
        t.path(),
        &["base", "import", "rootfs", "--output", "oci:img:good"],
    ));
    ok(&mut build(t.path(), &["verify", "oci:img:good"]));
    write(&site.join("foo/__init__.py"), b"VALUE = 2\n", 0o644);
    write(&site.join("foo/stray.py"), b"", 0o644);
    ok(&mut build(
        t.path(),
        &["base", "import", "rootfs", "--output", "oci:img:bad"],
    ));
    let (code, err) = fails(&mut build(t.path(), &["verify", "oci:img:bad"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("oci:img:bad failed verification (2 problems):"),
        "{err}"
    );
    assert!(
        err.contains("foo 1.0: /usr/local/lib/python3.11/site-packages/foo/__init__.py: sha256="),
        "{err}"
    );
    assert!(
        err.contains(
            "/usr/local/lib/python3.11/site-packages/foo/stray.py is claimed by no RECORD"
        ),
        "{err}"
    );
}

/// A copy of fixtures/job-agent with a fresh uv.lock and its api image on `base:tag`.
fn job_agent(dir: &Path, base: &str) -> PathBuf {
    let p = dir.join("job-agent");
    copy_fixture("job-agent", &p);
    make_uv_lock(&p);
    let toml = std::fs::read_to_string(p.join("imgbuild.toml")).unwrap();
    let toml = toml.replace(
        "base = \"oci:../.bases/debian-python3:bookworm\"",
        &format!("base = \"oci:{base}\""),
    );
    std::fs::write(p.join("imgbuild.toml"), toml).unwrap();
    p
}

#[test]
fn python_313_target_from_a_311_host() {
    let t = tempfile::tempdir().unwrap();
    let base = fake_base(t.path(), true);
    let p = job_agent(t.path(), &format!("{}:py", base.display()));
    ok(&mut build(&p, &["build", "api"]));
    ok(&mut build(&p, &["verify", "oci:.imgbuild/oci:api"]));
    let bundle = t.path().join("bundle");
    umoci_unpack(&p.join(".imgbuild/oci"), "api", &bundle);
    let site = bundle.join("rootfs/usr/local/lib/python3.13/site-packages");
    assert!(site
        .join("pydantic_core/_pydantic_core.cpython-313-x86_64-linux-gnu.so")
        .is_file());
    assert!(
        site.join("psycopg_binary").is_dir(),
        "the psycopg[binary] extra is installed"
    );
    let alembic = std::fs::read_to_string(bundle.join("rootfs/usr/local/bin/alembic")).unwrap();
    assert!(
        alembic.starts_with("#!/usr/local/bin/python3.13\n"),
        "{alembic}"
    );
    assert!(!bundle.join("rootfs/usr/local/lib/python3.11").exists());
}

#[test]
fn job_agent_api_on_debian_runs_alembic_and_celery_from_uv_lock_and_requirements() {
    let base = debian_python_base();
    let t = tempfile::tempdir().unwrap();
    let p = job_agent(t.path(), &format!("{}:bookworm", base.display()));
    let out = ok(&mut build(&p, &["build", "api", "--json"]));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    ok(&mut build(&p, &["verify", "oci:.imgbuild/oci:api"]));

    let bundle = t.path().join("bundle");
    umoci_unpack(&p.join(".imgbuild/oci"), "api", &bundle);
    for cmd in [
        "python3 -c 'from alembic.config import Config'",
        "alembic --help",
        "celery --version",
        "cd /app && alembic upgrade head",
    ] {
        let out = runc_run(&bundle, &["/bin/sh", "-c", cmd]);
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // No-op rebuild: every layer cached.
    let out = ok(&mut build(&p, &["build", "api", "--json"]));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        again["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["cached"] == true),
        "{again}"
    );
    assert_eq!(again["digest"], first["digest"]);

    // A cold layer cache with warm wheels downloads nothing: a dead proxy changes nothing.
    let proxied = |cmd: &mut Command| {
        cmd.env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("ALL_PROXY", "http://127.0.0.1:9");
    };
    std::fs::remove_dir_all(shared_store().join("layers")).unwrap();
    let mut cmd = build(&p, &["build", "api", "--json"]);
    proxied(&mut cmd);
    let cold: serde_json::Value = serde_json::from_slice(&ok(&mut cmd).stdout).unwrap();
    assert_eq!(
        cold["digest"], first["digest"],
        "the same inputs give the same image"
    );

    // requirements.txt through the index's simple API gives the very same python layer.
    let toml = std::fs::read_to_string(p.join("imgbuild.toml")).unwrap();
    let toml = toml.replace(
        "lock = \"uv.lock\"",
        &format!(
            "lock = \"requirements.txt\", index_url = \"{}\"",
            package_index()
        ),
    );
    std::fs::write(p.join("imgbuild.toml"), toml).unwrap();
    let out = ok(&mut build(&p, &["build", "api", "--json"]));
    let req: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        req["layers"][0]["diff_id"], first["layers"][0]["diff_id"],
        "{req}"
    );
    let bundle = t.path().join("bundle-req");
    umoci_unpack(&p.join(".imgbuild/oci"), "api", &bundle);
    for cmd in [
        "python3 -c 'from alembic.config import Config'",
        "alembic --help",
    ] {
        let out = runc_run(&bundle, &["/bin/sh", "-c", cmd]);
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn requirements_package_with_no_wheel_for_the_target_on_the_index() {
    let t = tempfile::tempdir().unwrap();
    let base = fake_base(t.path(), false);
    let idx = t.path().join("index");
    let f = "fast-1.0-cp312-cp312-manylinux_2_17_x86_64.whl";
    let (w, sha) = make_wheel(&idx.join("files"), f, &[("fast/__init__.py", b"", 0o644)]);
    assert!(w.is_file());
    let sdist = "1".repeat(64);
    let page = format!("<a href=\"/files/{f}#sha256={sha}\">{f}</a><a href=\"/files/fast-1.0.tar.gz#sha256={sdist}\">fast-1.0.tar.gz</a>");
    write(&idx.join("simple/fast/index.html"), page.as_bytes(), 0o644);
    let server = Http::serve(&idx);
    std::fs::write(
        t.path().join("requirements.txt"),
        format!("fast==1.0 --hash=sha256:{sha} --hash=sha256:{sdist}\n"),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{}/simple/", server.port);
    project(
        t.path(),
        &base,
        &format!("lock = \"requirements.txt\", index_url = \"{url}\""),
        "",
    );
    let err = build_fails(t.path());
    assert!(
        err.contains(&format!("finding the wheels of 1 package through {url}")),
        "{err}"
    );
    assert!(err.contains("fast 1.0 has no wheel for the target (CPython 3.11.2 at /usr/bin/python3.11 (glibc 2.36, x86_64), site directory /usr/local/lib/python3.11/dist-packages): requirements.txt has fast-1.0-cp312-cp312-manylinux_2_17_x86_64.whl; the target accepts"), "{err}");
}

/// A zip written exactly as given (no RECORD fixing); returns its sha256.
fn raw_wheel(dir: &Path, filename: &str, entries: &[(&str, &[u8])]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(filename);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (n, b) in entries {
        z.start_file(*n, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(b).unwrap();
    }
    z.finish().unwrap();
    sha256_hex(std::fs::read(&path).unwrap())
}

/// Bad lock files and evil wheels, end to end: exit code, message, nothing written.
/// (Rows of tests/BAD_INPUT.md.)
#[test]
fn bad_lock_files_and_evil_wheels_give_their_errors_and_write_nothing() {
    type Setup = fn(&Path);
    fn one(d: &Path, file: &str, sha: &str) {
        pylock(d, &[("demo", "1.0", &[(file, sha)], None)]);
    }
    let cases: Vec<(&str, Setup, i32, &str)> = vec![
        (
            "lock-malformed",
            |d| {
                std::fs::write(
                    d.join("pylock.toml"),
                    "lock-version = \"1.0\"\n[[packages]\nname = 1\n",
                )
                .unwrap()
            },
            2,
            "pylock.toml",
        ),
        (
            "lock-missing-hashes",
            |d| {
                std::fs::write(d.join("requirements.txt"), "demo==1.0\n").unwrap();
                let t = std::fs::read_to_string(d.join("imgbuild.toml")).unwrap();
                std::fs::write(
                    d.join("imgbuild.toml"),
                    t.replace("lock = \"pylock.toml\"", "lock = \"requirements.txt\""),
                )
                .unwrap();
            },
            2,
            "--hash",
        ),
        (
            "lock-unknown-package",
            |d| {
                let t = std::fs::read_to_string(d.join("imgbuild.toml")).unwrap();
                std::fs::write(
                    d.join("imgbuild.toml"),
                    t.replace(
                        "lock = \"pylock.toml\"",
                        "lock = \"pylock.toml\", exclude = [\"nope\"]",
                    ),
                )
                .unwrap();
            },
            2,
            "exclude `nope`",
        ),
        (
            "wheel-bad-hash",
            |d| {
                let (_, _) = make_wheel(&d.join("wheels"), "demo-1.0-py3-none-any.whl", DEMO);
                pylock(
                    d,
                    &[(
                        "demo",
                        "1.0",
                        &[("demo-1.0-py3-none-any.whl", &"1".repeat(64))],
                        None,
                    )],
                );
            },
            1,
            "sha256",
        ),
        (
            "wheel-bad-zip",
            |d| {
                std::fs::write(
                    d.join("wheels/demo-1.0-py3-none-any.whl"),
                    b"this is not a zip",
                )
                .unwrap();
                let sha = sha256_hex(b"this is not a zip");
                pylock(
                    d,
                    &[("demo", "1.0", &[("demo-1.0-py3-none-any.whl", &sha)], None)],
                );
            },
            1,
            "zip",
        ),
        (
            "wheel-zip-slip",
            |d| {
                let mut files = DEMO.to_vec();
                files.push(("../../etc/evil.py", b"x", 0o644));
                let (_, sha) = make_wheel(&d.join("wheels"), "demo-1.0-py3-none-any.whl", &files);
                pylock(
                    d,
                    &[("demo", "1.0", &[("demo-1.0-py3-none-any.whl", &sha)], None)],
                );
            },
            1,
            "..",
        ),
        (
            "wheel-absolute-path",
            |d| {
                let mut files = DEMO.to_vec();
                files.push(("/etc/evil.py", b"x", 0o644));
                let (_, sha) = make_wheel(&d.join("wheels"), "demo-1.0-py3-none-any.whl", &files);
                pylock(
                    d,
                    &[("demo", "1.0", &[("demo-1.0-py3-none-any.whl", &sha)], None)],
                );
            },
            1,
            "absolute",
        ),
        (
            "wheel-duplicate-file",
            |d| {
                let (_, sha) = make_wheel(&d.join("wheels"), "demo-1.0-py3-none-any.whl", DEMO);
                let (_, sha2) = make_wheel(
                    &d.join("wheels"),
                    "other-2.0-py3-none-any.whl",
                    &[("demo/__init__.py", b"# mine", 0o644)],
                );
                pylock(
                    d,
                    &[
                        ("demo", "1.0", &[("demo-1.0-py3-none-any.whl", &sha)], None),
                        (
                            "other",
                            "2.0",
                            &[("other-2.0-py3-none-any.whl", &sha2)],
                            None,
                        ),
                    ],
                );
            },
            1,
            "demo/__init__.py",
        ),
        (
            "wheel-malformed-record",
            |d| {
                let sha = raw_wheel(
                    &d.join("wheels"),
                    "demo-1.0-py3-none-any.whl",
                    &[
                        ("demo/__init__.py", b""),
                        (
                            "demo-1.0.dist-info/WHEEL",
                            b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n",
                        ),
                        (
                            "demo-1.0.dist-info/METADATA",
                            b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
                        ),
                        (
                            "demo-1.0.dist-info/RECORD",
                            b"demo/__init__.py,md5=abc,zero\n\"unterminated\n",
                        ),
                    ],
                );
                one(d, "demo-1.0-py3-none-any.whl", &sha);
            },
            1,
            "RECORD",
        ),
        (
            "wheel-missing-metadata",
            |d| {
                use imgbuild::python::record::{self, Row};
                let wheel = b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n";
                let rows = [
                    Row::new("demo/__init__.py", &sha256_hex(b""), 0),
                    Row::new(
                        "demo-1.0.dist-info/WHEEL",
                        &sha256_hex(wheel),
                        wheel.len() as u64,
                    ),
                    Row::bare("demo-1.0.dist-info/RECORD"),
                ];
                let rec = record::write(&rows);
                let sha = raw_wheel(
                    &d.join("wheels"),
                    "demo-1.0-py3-none-any.whl",
                    &[
                        ("demo/__init__.py", b""),
                        ("demo-1.0.dist-info/WHEEL", wheel),
                        ("demo-1.0.dist-info/RECORD", rec.as_bytes()),
                    ],
                );
                one(d, "demo-1.0-py3-none-any.whl", &sha);
            },
            1,
            "METADATA",
        ),
        (
            "wheel-wrong-tags",
            |d| {
                let (_, sha) = make_wheel(
                    &d.join("wheels"),
                    "demo-1.0-cp313-cp313-manylinux_2_17_x86_64.whl",
                    DEMO,
                );
                one(d, "demo-1.0-cp313-cp313-manylinux_2_17_x86_64.whl", &sha);
            },
            1,
            "cp313",
        ),
    ];
    let mut failures = Vec::new();
    for (id, setup, code, want) in &cases {
        let t = demo_project(Some("require = [\"demo.cli\"]"), "");
        let d = t.path();
        setup(d);
        let out = build(d, &["build", "t"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let got = out.status.code().unwrap_or(-1);
        if got != *code || !err.contains(want) {
            failures.push(format!(
                "{id}: exit {got} (want {code}), want `{want}` in:\n{err}"
            ));
        }
        if d.join(".imgbuild/oci/index.json").exists() {
            failures.push(format!("{id}: an image was written"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
