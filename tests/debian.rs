//! Debian packages as layers, against the real archive (the mirror the host's apt uses, read
//! at test time) and against a small archive made here with real tools (dpkg-deb, gpg, a
//! python3 http.server on loopback) for the failures the real archive cannot show.
//!
//! On the real bookworm base: a `libpq5` layer makes an extension compiled against libpq
//! load in runc, and without it the build fails naming libpq.so.5; the image's dpkg status
//! lists the packages for `dpkg-query --admindir`; the lock is honoured with the mirror
//! unreachable. Bad input: an unknown package (closest names), an unsatisfiable dependency
//! (the chain), a changed package after locking (the package named), a bad or missing
//! signature, a base that is not Debian.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const EXT: &str = "cpython-311-x86_64-linux-gnu.so";

fn build(dir: &Path, args: &[&str]) -> Command {
    let mut c = imgbuild(dir);
    c.env("IMGBUILD_CACHE", dir.join(".store"))
        .env_remove("IMGBUILD_DEBIAN_MIRROR")
        .args(args);
    c
}

/// A Python extension module `pgnative._pq` compiled here against libpq, in a platform
/// wheel; returns (filename, sha256).
fn libpq_extension_wheel(dir: &Path) -> (String, String) {
    require_tool("cc");
    assert!(
        Path::new("/usr/include/postgresql/libpq-fe.h").is_file()
            && Path::new("/usr/include/python3.11/Python.h").is_file(),
        "this test needs libpq's and Python 3.11's headers: install the Debian packages `libpq-dev` and `python3-dev` (.ci/install-deps does)"
    );
    let src = dir.join("pq.c");
    std::fs::write(
        &src,
        r#"#include <Python.h>
#include <libpq-fe.h>
static PyObject *version(PyObject *self, PyObject *args) { return PyLong_FromLong(PQlibVersion()); }
static PyMethodDef methods[] = {{"version", version, METH_NOARGS, ""}, {0}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_pq", "", -1, methods};
PyMODINIT_FUNC PyInit__pq(void) { return PyModule_Create(&mod); }
"#,
    )
    .unwrap();
    let so = dir.join(format!("_pq.{EXT}"));
    ok(Command::new("cc")
        .args([
            "-shared",
            "-fPIC",
            "-O1",
            "-I/usr/include/python3.11",
            "-I/usr/include/postgresql",
            "-o",
        ])
        .arg(&so)
        .arg(&src)
        .arg("-lpq"));
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("pgnative/__init__.py", vec![]),
        (
            Box::leak(format!("pgnative/_pq.{EXT}").into_boxed_str()),
            std::fs::read(&so).unwrap(),
        ),
    ];
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let w = dir.join("wheels");
    std::fs::create_dir_all(&w).unwrap();
    let filename = "pgnative-1.0-cp311-cp311-manylinux_2_17_x86_64.whl";
    let sha = py_wheel(
        &w,
        filename,
        &files,
        "Metadata-Version: 2.1\nName: pgnative\nVersion: 1.0\n",
    );
    (filename.to_string(), sha)
}

/// imgbuild.toml for image `t` on the real bookworm python base: optionally a `system` layer
/// of Debian packages, then the extension's wheel.
fn libpq_project(dir: &Path, debian: Option<&str>, whl: &(String, String)) {
    let base = debian_python_base();
    std::fs::write(
        dir.join("pylock.toml"),
        format!(
            "lock-version = \"1.0\"\ncreated-by = \"test\"\n\n[[packages]]\nname = \"pgnative\"\nversion = \"1.0\"\nwheels = [{{ path = \"wheels/{}\", hashes = {{ sha256 = \"{}\" }} }}]\n",
            whl.0, whl.1
        ),
    )
    .unwrap();
    let system = debian
        .map(|d| format!("[[images.t.layers]]\nname = \"system\"\ndebian = {d}\n\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "[images.t]\nbase = \"oci:{}:bookworm\"\n\n{system}[[images.t.layers]]\nname = \"python-deps\"\npython = {{ lock = \"pylock.toml\", require = [\"pgnative._pq\"] }}\n",
            base.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_libpq5_layer_makes_an_extension_linking_libpq_import_and_is_locked() {
    let t = tempfile::tempdir().unwrap();
    let whl = libpq_extension_wheel(t.path());

    // Without the system library the native check names it.
    libpq_project(t.path(), None, &whl);
    let (code, err) = fails(&mut build(t.path(), &["build", "t"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "pgnative/_pq.{EXT} needs libpq.so.5, which is not in the image"
        )),
        "{err}"
    );
    // The release's Contents index says which package ships it.
    assert!(
        err.contains("hint: libpq.so.5 is in the Debian package libpq5: add a layer `debian = { packages = [\"libpq5\"] }`"),
        "{err}"
    );

    // With it: resolved against the base, pinned, unpacked, and the import works in runc.
    libpq_project(t.path(), Some("{ packages = [\"libpq5\"] }"), &whl);
    let out = ok(&mut build(t.path(), &["build", "t"]));
    let first = stdout(&out);
    let lock = std::fs::read_to_string(t.path().join("imgbuild.lock")).unwrap();
    assert!(lock.contains("[debian.\"t/system\"]"), "{lock}");
    assert!(lock.contains("name = \"libpq5\""), "{lock}");
    assert!(
        lock.contains("filename = \"pool/main/p/postgresql-15/libpq5_"),
        "{lock}"
    );
    // What the base has is left out: libc6 and libssl3 are in the python base.
    assert!(!lock.contains("name = \"libc6\""), "{lock}");
    assert!(!lock.contains("name = \"libssl3\""), "{lock}");
    assert!(
        !lock.contains("deb.debian.org"),
        "no mirror host in the lock: {lock}"
    );

    let bundle = t.path().join("bundle");
    umoci_unpack(&t.path().join(".imgbuild/oci"), "t", &bundle);
    let run = runc_run(
        &bundle,
        &[
            "/usr/bin/python3",
            "-c",
            "import pgnative._pq as m; print('libpq', m.version())",
        ],
    );
    assert!(
        run.status.success() && String::from_utf8_lossy(&run.stdout).contains("libpq 15"),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    // dpkg reads the image's database: the new packages and the base's are listed.
    require_tool("dpkg-query");
    let admin = bundle.join("rootfs/var/lib/dpkg");
    let q = ok(Command::new("dpkg-query")
        .arg("--admindir")
        .arg(&admin)
        .args([
            "-W",
            "-f",
            "${Package} ${Status}\\n",
            "libpq5",
            "libc6",
            "python3",
        ]));
    let listed = stdout(&q);
    for p in [
        "libpq5 install ok installed",
        "libc6 install ok installed",
        "python3 install ok installed",
    ] {
        assert!(listed.contains(p), "{listed}");
    }
    let files = ok(Command::new("dpkg-query")
        .arg("--admindir")
        .arg(&admin)
        .args(["-L", "libpq5"]));
    assert!(
        stdout(&files).contains("/usr/lib/x86_64-linux-gnu/libpq.so.5"),
        "{}",
        stdout(&files)
    );

    // The lock is honoured: with the mirror unreachable (a closed loopback port) and a new
    // source date (the layer is written again, from the packages in the store) it builds.
    let closed = format!("http://127.0.0.1:{}/debian", free_port());
    let mut again = build(t.path(), &["build", "t"]);
    again
        .env("IMGBUILD_DEBIAN_MIRROR", &closed)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let out = ok(&mut again);
    assert_ne!(stdout(&out), first, "a new source date gives a new image");
    let mut same = build(t.path(), &["build", "t"]);
    same.env("IMGBUILD_DEBIAN_MIRROR", &closed);
    assert_eq!(stdout(&ok(&mut same)), first, "same inputs, same digest");
    // Another store with the mirror closed: the packages cannot come from anywhere.
    let mut cold = build(t.path(), &["build", "t"]);
    cold.env("IMGBUILD_DEBIAN_MIRROR", &closed)
        .env("IMGBUILD_CACHE", t.path().join("other-store"));
    let (code, err) = fails(&mut cold);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("cannot fetch {closed}/pool/main/")),
        "{err}"
    );
}

#[test]
fn an_unknown_package_names_the_closest_and_a_non_debian_base_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let base = debian_python_base();
    write_text(
        &t.path().join("imgbuild.toml"),
        &format!(
            "[images.t]\nbase = \"oci:{}:bookworm\"\n\n[[images.t.layers]]\nname = \"system\"\ndebian = {{ packages = [\"libpq\"] }}\n",
            base.display()
        ),
    );
    let (code, err) = fails(&mut build(t.path(), &["build", "t"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("layer `system`: no package `libpq`"), "{err}");
    assert!(err.contains("libpq5"), "closest names: {err}");
    assert!(err.contains("in Debian bookworm (amd64, main)"), "{err}");
    assert!(!t.path().join("imgbuild.lock").exists(), "nothing pinned");
    assert!(
        !t.path().join(".imgbuild/oci/index.json").exists(),
        "no image"
    );

    let bb = busybox_base();
    write_text(
        &t.path().join("imgbuild.toml"),
        &format!(
            "[images.t]\nbase = \"oci:{}:bb\"\n\n[[images.t.layers]]\nname = \"system\"\ndebian = {{ packages = [\"libpq5\"] }}\n",
            bb.display()
        ),
    );
    let (code, err) = fails(&mut build(t.path(), &["build", "t"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("layer `system`: the base `oci:"), "{err}");
    assert!(
        err.contains("is not a Debian image: it has no /etc/os-release"),
        "{err}"
    );
}

/// A small signed archive served over HTTP on loopback: packages made with dpkg-deb, the
/// index and `InRelease` written as the Debian archive writes them, signed with a key made
/// here with gpg (given to imgbuild with `keyring = "FILE"`).
struct LocalArchive {
    dir: tempfile::TempDir,
    server: Child,
    port: u16,
    gnupg: PathBuf,
}

impl Drop for LocalArchive {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl LocalArchive {
    /// Packages as (name, version, depends).
    fn new(packages: &[(&str, &str, &str)]) -> LocalArchive {
        require_tool("dpkg-deb");
        require_tool("gpg");
        let dir = tempfile::tempdir().unwrap();
        let gnupg = dir.path().join("gnupg");
        std::fs::create_dir_all(&gnupg).unwrap();
        std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        ok(Command::new("gpg").env("GNUPGHOME", &gnupg).args([
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "imgbuild test archive <archive@test.invalid>",
            "ed25519",
            "sign",
            "never",
        ]));
        let keyring = ok(Command::new("gpg")
            .env("GNUPGHOME", &gnupg)
            .args(["--export"]));
        std::fs::write(dir.path().join("keyring.gpg"), &keyring.stdout).unwrap();
        let root = dir.path().join("www");
        let mut index = String::new();
        for (name, version, depends) in packages {
            let pkg = dir.path().join(format!("src-{name}"));
            std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
            std::fs::create_dir_all(pkg.join(format!("usr/share/{name}"))).unwrap();
            std::fs::write(
                pkg.join(format!("usr/share/{name}/hello")),
                format!("{name} {version}\n"),
            )
            .unwrap();
            let dep = if depends.is_empty() {
                String::new()
            } else {
                format!("Depends: {depends}\n")
            };
            let control = format!("Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: test <t@test.invalid>\n{dep}Description: test package\n");
            std::fs::write(pkg.join("DEBIAN/control"), &control).unwrap();
            let rel = format!("pool/main/{name}_{version}_all.deb");
            std::fs::create_dir_all(root.join("pool/main")).unwrap();
            ok(Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Zgzip", "--build"])
                .arg(&pkg)
                .arg(root.join(&rel)));
            let bytes = std::fs::read(root.join(&rel)).unwrap();
            index.push_str(&format!(
                "{control}Filename: {rel}\nSize: {}\nSHA256: {}\n\n",
                bytes.len(),
                sha256_hex(&bytes)
            ));
        }
        let dists = root.join("dists/bookworm");
        let bin = dists.join("main/binary-amd64");
        std::fs::create_dir_all(&bin).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, index.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        std::fs::write(bin.join("Packages.gz"), &gz).unwrap();
        std::fs::write(
            dists.join("Release"),
            format!(
                "Origin: test\nCodename: bookworm\nSuite: stable\nArchitectures: amd64\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages.gz\n",
                sha256_hex(&gz),
                gz.len()
            ),
        )
        .unwrap();
        let port = free_port();
        let server = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let a = LocalArchive {
            dir,
            server,
            port,
            gnupg,
        };
        a.sign();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return a;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the test archive's http.server did not start");
    }

    fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    /// (Re)writes InRelease: the Release file clear-signed.
    fn sign(&self) {
        let dists = self.www().join("dists/bookworm");
        let _ = std::fs::remove_file(dists.join("InRelease"));
        ok(Command::new("gpg")
            .env("GNUPGHOME", &self.gnupg)
            .args(["--batch", "--yes", "--clearsign", "--output"])
            .arg(dists.join("InRelease"))
            .arg(dists.join("Release")));
    }

    fn mirror(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn keyring(&self) -> PathBuf {
        self.dir.path().join("keyring.gpg")
    }
}

/// A project on the real bookworm base whose layer `system` installs `packages` from `a`.
fn local_project(dir: &Path, a: &LocalArchive, packages: &str) {
    write_text(
        &dir.join("imgbuild.toml"),
        &format!(
            "[defaults]\ndebian_mirror = \"{}\"\n\n[images.t]\nbase = \"oci:{}:bookworm\"\n\n[[images.t.layers]]\nname = \"system\"\ndebian = {{ packages = [{packages}], keyring = \"{}\" }}\n",
            a.mirror(),
            debian_python_base().display(),
            a.keyring().display()
        ),
    );
}

#[test]
fn a_signed_local_archive_shows_chains_changed_packages_and_bad_signatures() {
    let a = LocalArchive::new(&[
        ("hello-top", "1.0", "hello-mid"),
        ("hello-mid", "1.0", "hello-low (>= 2)"),
        ("hello-low", "1.5", ""),
        ("hello-ok", "1.0", "hello-low (>= 1), libc6 (>= 2.30)"),
    ]);
    let t = tempfile::tempdir().unwrap();

    // An unsatisfiable dependency: the chain up to the requested package.
    local_project(t.path(), &a, "\"hello-top\"");
    let (code, err) = fails(&mut build(t.path(), &["build", "t"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("layer `system`: cannot satisfy `hello-low (>= 2)`, needed by hello-mid ← hello-top (requested): the archive has only hello-low 1.5"),
        "{err}"
    );

    // A good one: resolved (libc6 is the base's), pinned, installed.
    local_project(t.path(), &a, "\"hello-ok\"");
    ok(&mut build(t.path(), &["build", "t"]));
    let lock = std::fs::read_to_string(t.path().join("imgbuild.lock")).unwrap();
    assert!(
        lock.contains("name = \"hello-low\"") && lock.contains("name = \"hello-ok\""),
        "{lock}"
    );
    assert!(!lock.contains("name = \"libc6\""), "{lock}");
    // `imgbuild lock --update` drops the pins; the next build resolves the same again.
    ok(&mut build(t.path(), &["lock", "--update"]));
    let dropped = std::fs::read_to_string(t.path().join("imgbuild.lock")).unwrap_or_default();
    assert!(!dropped.contains("[debian."), "{dropped}");
    ok(&mut build(t.path(), &["build", "t"]));
    assert_eq!(
        std::fs::read_to_string(t.path().join("imgbuild.lock")).unwrap(),
        lock
    );

    // The archive changes after locking: the new file is refused, naming the package.
    let low = a.www().join("pool/main/hello-low_1.5_all.deb");
    let mut bytes = std::fs::read(&low).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&low, bytes).unwrap();
    let mut c = build(t.path(), &["build", "t"]);
    c.env("IMGBUILD_CACHE", t.path().join("store2"));
    let (code, err) = fails(&mut c);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("package hello-low 1.5: "), "{err}");
    assert!(err.contains("but imgbuild.lock pins sha256:"), "{err}");
    assert!(err.contains("imgbuild lock --update"), "{err}");
    let blobs = std::fs::read_dir(t.path().join("store2/tmp"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "nothing half-written in the store");

    // A signature that does not verify (the signed text changed), then none at all.
    let inrelease = a.www().join("dists/bookworm/InRelease");
    let text = std::fs::read_to_string(&inrelease).unwrap();
    std::fs::write(&inrelease, text.replace("Origin: test", "Origin: evil")).unwrap();
    local_project(t.path(), &a, "\"hello-low\"");
    let (code, err) = fails(&mut build(t.path(), &["build", "t"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "dists/bookworm/InRelease: its signature does not verify with any key of the keyring"
        ),
        "{err}"
    );
    std::fs::copy(a.www().join("dists/bookworm/Release"), &inrelease).unwrap();
    let (code, err) = fails(&mut build(t.path(), &["build", "t"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("InRelease: not an OpenPGP cleartext-signed message"),
        "{err}"
    );
}

/// uv.lock for the job-agent fixture, made once per test binary with its make-lock.sh.
fn job_agent_lock() -> PathBuf {
    static LOCK: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("imgbuild-test-debian-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        copy_fixture("job-agent", &dir);
        make_uv_lock(&dir);
        dir.join("uv.lock")
    })
    .clone()
}

#[test]
fn the_job_agent_api_runs_on_a_base_built_from_the_archive_with_the_same_digest_everywhere() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("job-agent");
    copy_fixture("job-agent", &p);
    std::fs::copy(job_agent_lock(), p.join("uv.lock")).unwrap();
    let toml = std::fs::read_to_string(p.join("imgbuild.toml")).unwrap();
    let toml = toml.replace(
        "base = \"oci:../.bases/debian-python3:bookworm\"",
        "base = { debian = \"bookworm\", packages = [\"python3\"] }",
    );
    assert!(toml.contains("base = { debian = \"bookworm\""));
    std::fs::write(p.join("imgbuild.toml"), toml).unwrap();

    let digest = |store: &str| {
        let mut c = build(&p, &["build", "api"]);
        c.env("IMGBUILD_CACHE", t.path().join(store));
        stdout(&ok(&mut c))
    };
    let first = digest("store-a");
    let lock = std::fs::read_to_string(p.join("imgbuild.lock")).unwrap();
    assert!(lock.contains("[debian.\"api/[base]\"]"), "{lock}");
    for essential in [
        "name = \"base-files\"",
        "name = \"dash\"",
        "name = \"python3.11-minimal\"",
        "name = \"usr-is-merged\"",
    ] {
        assert!(lock.contains(essential), "{essential}: {lock}");
    }
    assert!(!lock.contains("name = \"usrmerge\""), "{lock}");
    // Another empty store, the same lock: the same image.
    assert_eq!(digest("store-b"), first);

    // The fixture's smoke lines (alembic upgrade head among them) run in it with runc.
    let mut test = build(&p, &["test", "api"]);
    test.env("IMGBUILD_CACHE", t.path().join("store-b"));
    let out = ok(&mut test);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ok    alembic upgrade head"), "{err}");
    assert!(err.contains("smoke command(s) passed"), "{err}");
}

#[test]
fn a_trixie_base_from_the_archive_runs_python_and_node() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    write_text(
        &t.path().join("imgbuild.toml"),
        "[images.b]\nbase = { debian = \"trixie\", packages = [\"python3\", \"nodejs\"] }\ncmd = [\"python3\"]\nsmoke = [\"python3 -c 'import ssl, sqlite3; print(ssl.OPENSSL_VERSION)'\", \"node -e 'console.log(process.version)'\", \"awk 'BEGIN { print 1 }'\", \"id -un\", \"test -d /tmp -a -k /tmp\"]\n",
    );
    ok(&mut build(t.path(), &["build", "b"]));
    let out = ok(&mut build(t.path(), &["test", "b"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("5 smoke command(s) passed"), "{err}");
    let lock = std::fs::read_to_string(t.path().join("imgbuild.lock")).unwrap();
    assert!(lock.contains("release = \"trixie\""), "{lock}");
    assert!(lock.contains("name = \"nodejs\""), "{lock}");
}

#[test]
fn build_debian_packages_compile_an_sdist_against_libpq_and_stay_out_of_the_image() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    // An sdist with an in-tree backend that compiles a C extension against libpq with the
    // build root's gcc, libpq-dev and python3-dev (none of which the base has).
    let top = "pgbuilt-1.0";
    let src = p.join("src").join(top);
    write_text(
        &src.join("pyproject.toml"),
        "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n",
    );
    write_text(
        &src.join("pq.c"),
        "#include <Python.h>\n#include <libpq-fe.h>\nstatic PyObject *version(PyObject *s, PyObject *a) { return PyLong_FromLong(PQlibVersion()); }\nstatic PyMethodDef m[] = {{\"version\", version, METH_NOARGS, \"\"}, {0}};\nstatic struct PyModuleDef d = {PyModuleDef_HEAD_INIT, \"pgbuilt\", \"\", -1, m};\nPyMODINIT_FUNC PyInit_pgbuilt(void) { return PyModule_Create(&d); }\n",
    );
    write_text(
        &src.join("backend.py"),
        r#"import base64, hashlib, os, subprocess, sysconfig, zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    ext = "pgbuilt" + sysconfig.get_config_var("EXT_SUFFIX")
    subprocess.run(["x86_64-linux-gnu-gcc", "-shared", "-fPIC", "-O1",
                    "-I" + sysconfig.get_paths()["include"], "-I/usr/include/postgresql",
                    "-o", ext, "pq.c", "-lpq"], check=True)
    name = "pgbuilt-1.0-cp311-cp311-linux_x86_64.whl"
    files = {ext: open(ext, "rb").read(),
             "pgbuilt-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: pgbuilt\nVersion: 1.0\n",
             "pgbuilt-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-linux_x86_64\n"}
    rows = []
    for n, b in files.items():
        h = base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b"=").decode()
        rows.append(f"{n},sha256={h},{len(b)}")
    rows.append("pgbuilt-1.0.dist-info/RECORD,,")
    files["pgbuilt-1.0.dist-info/RECORD"] = ("\n".join(rows) + "\n").encode()
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
    return name
"#,
    );
    let tgz = p.join(format!("{top}.tar.gz"));
    ok(Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(p.join("src"))
        .arg(top));
    let sha = sha256_hex(std::fs::read(&tgz).unwrap());
    write_text(
        &p.join("pylock.toml"),
        &format!("lock-version = \"1.0\"\ncreated-by = \"test\"\n\n[[packages]]\nname = \"pgbuilt\"\nversion = \"1.0\"\nsdist = {{ name = \"{top}.tar.gz\", path = \"{top}.tar.gz\", hashes = {{ sha256 = \"{sha}\" }} }}\n"),
    );
    write_text(
        &p.join("imgbuild.toml"),
        &format!(
            "[images.t]\nbase = \"oci:{}:bookworm\"\nsmoke = [\"python3 -c 'import pgbuilt; print(pgbuilt.version())'\", \"test ! -e /usr/bin/gcc\", \"test ! -e /usr/include/postgresql/libpq-fe.h\"]\n\n[[images.t.layers]]\nname = \"system\"\ndebian = {{ packages = [\"libpq5\"] }}\n\n[[images.t.layers]]\nname = \"python-deps\"\npython = {{ lock = \"pylock.toml\", index_url = \"{}\", require = [\"pgbuilt\"], build = {{ debian = [\"gcc\", \"libpq-dev\", \"python3-dev\"] }} }}\n",
            debian_python_base().display(),
            package_index()
        ),
    );
    let out = ok(&mut build(p, &["build", "t"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("from the sdist of pgbuilt 1.0"), "{err}");
    let lock = std::fs::read_to_string(p.join("imgbuild.lock")).unwrap();
    assert!(
        lock.contains("[debian.\"t/python-deps [build]\"]"),
        "{lock}"
    );
    assert!(lock.contains("name = \"gcc-12\""), "{lock}");
    let out = ok(&mut build(p, &["test", "t"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 smoke command(s) passed"), "{err}");
}

#[test]
fn the_sample_builds_both_images_on_archive_bases_and_runs_their_smoke_lines() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("sample");
    let mut c = imgbuild(t.path());
    c.args(["sample"]).arg(&dir);
    let out = ok(&mut c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app: 4 smoke command(s) passed"), "{err}");
    assert!(err.contains("ok    alembic upgrade head"), "{err}");
    assert!(err.contains("frontend: 2 smoke command(s) passed"), "{err}");
    let lock = std::fs::read_to_string(dir.join("imgbuild.lock")).unwrap();
    assert!(
        lock.contains("[debian.\"app/[base]\"]") && lock.contains("[debian.\"frontend/[base]\"]"),
        "{lock}"
    );
    assert!(lock.contains("name = \"python3-alembic\""), "{lock}");
}
