//! Shared helpers for the integration tests: the binary, sample projects, real tools.
#![allow(dead_code)]

pub mod faultproxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imgbuild"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `imgbuild ARGS` in `dir`, with its own store and a fixed source date unless the caller sets one.
pub fn imgbuild(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("IMGBUILD_CACHE", dir.join(".store"));
    c
}

/// Runs a command, returning its output; panics with its stderr when it fails.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs a command expected to fail; returns (exit code, stderr).
pub fn fails(cmd: &mut Command) -> (i32, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The Debian package that provides `tool` (the ones .ci/install-deps installs).
fn package_of(tool: &str) -> &str {
    match tool {
        "busybox" => "busybox-static",
        "htpasswd" => "apache2-utils",
        "python3" | "pip" => "python3 python3-venv",
        other => other,
    }
}

/// Panics unless the external tool `tool` is on PATH, naming the package that provides it:
/// a test that needs a real tool never passes without having used it. CI installs them all
/// with .ci/install-deps.
pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        panic!(
            "this test needs `{tool}`, which is not on PATH: install the Debian package `{}` (.ci/install-deps installs every tool the tests use)",
            package_of(tool)
        );
    }
}

/// A busybox root filesystem imported as an OCI layout, made once per test binary.
/// Returns the layout directory (tag `bb`).
pub fn busybox_base() -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("imgbuild-test-busybox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ok(Command::new("bash")
            .arg(repo().join("fixtures/base/make-busybox.sh"))
            .arg(dir.join("rootfs")));
        ok(imgbuild(&dir).args(["base", "import", "rootfs", "--output", "oci:layout:bb"]));
        dir.join("layout")
    })
    .clone()
}

/// A real `docker-registry` on 127.0.0.1, stopped (by PID) on drop.
pub struct Registry {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// Starts an open registry, or one with htpasswd Basic auth for `user`/`password`.
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        require_tool("docker-registry");
        require_tool("curl");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = auth {
            require_tool("htpasswd");
            let htpasswd = dir.path().join("htpasswd");
            ok(Command::new("htpasswd")
                .arg("-Bbc")
                .arg(&htpasswd)
                .arg(u)
                .arg(p));
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: imgbuild-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("starting docker-registry");
        let r = Registry { child, port, dir };
        r.wait_ready(if auth.is_some() { "401" } else { "200" });
        r
    }

    /// Waits up to 10 s for `/v2/` to answer with HTTP status `want`; panics with the log if not.
    fn wait_ready(&self, want: &str) {
        for _ in 0..100 {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{}/v2/", self.port))
                .output();
            if let Ok(o) = out {
                if String::from_utf8_lossy(&o.stdout) == want {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "docker-registry on port {} did not come up; log: {}",
            self.port,
            self.log()
        );
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Unpacks `layout:tag` with umoci into `bundle` (umoci checks diff_ids and sizes).
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) {
    require_tool("umoci");
    ok(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle));
}

/// Runs the bundle's process with runc (no terminal); returns its stdout.
pub fn runc_run(bundle: &Path, args: &[&str]) -> Output {
    require_tool("runc");
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["terminal"] = false.into();
    if !args.is_empty() {
        cfg["process"]["args"] = args
            .iter()
            .map(|s| serde_json::Value::from(*s))
            .collect::<Vec<_>>()
            .into();
    }
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let id = format!("imgbuild-test-{}-{}", std::process::id(), free_port());
    let out = Command::new("runc")
        .arg("run")
        .arg(&id)
        .current_dir(bundle)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("runc").args(["delete", "-f", &id]).output();
    out
}

impl Registry {
    /// A registry whose config gets `extra` appended (e.g. an `auth:` section), logging every
    /// request (stdout and stderr) to `registry.log`; ready when `/v2/` answers `ready_code`.
    pub fn start_custom(extra: &str, ready_code: &str) -> Registry {
        require_tool("docker-registry");
        require_tool("curl");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let r = Registry { child, port, dir };
        r.wait_ready(ready_code);
        r
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The file in the registry's filesystem storage that holds a blob's bytes.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// `skopeo inspect --raw` of a reference on a loopback registry: the manifest bytes.
pub fn skopeo_raw(reference: &str, creds: Option<&str>) -> Vec<u8> {
    require_tool("skopeo");
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(cr) = creds {
        c.arg("--creds").arg(cr);
    }
    ok(c.arg(format!("docker://{reference}"))).stdout
}

/// The Debian bookworm + python3 base (fixtures/base/make-debian-python.sh, tarball cached per
/// machine), imported uncompressed once per machine into the temp directory (keyed by the
/// tarball's size and mtime; made in a scratch directory and renamed into place when done).
/// Returns the layout (tag `bookworm`).
pub fn debian_python_base() -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| debian_base("bookworm", "python3"))
        .clone()
}

/// A Debian bookworm base with real nginx (nginx-light, serving /var/www/html) and a real node
/// binary (Debian's nodejs), made like `debian_python_base`. Returns the layout (tag `bookworm`).
pub fn debian_web_base() -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| debian_base("bookworm", "nginx-light,nodejs"))
        .clone()
}

/// debootstrap of Debian `suite` (minbase + `packages`) through make-debian-python.sh, imported
/// once per machine. Returns the layout (tag = the suite).
pub fn debian_base(suite: &str, packages: &str) -> PathBuf {
    let out = ok(Command::new("bash")
        .arg(repo().join("fixtures/base/make-debian-python.sh"))
        .args(["--suite", suite, "--include", packages, "--print-tar"]));
    let tar = stdout(&out);
    let md = std::fs::metadata(&tar).unwrap();
    let mtime = md
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let dir = std::env::temp_dir().join(format!(
        "imgbuild-test-debian-{suite}-{}-{}-{}",
        packages.replace(',', "-"),
        md.len(),
        mtime.as_secs()
    ));
    if !dir.join("layout/index.json").is_file() {
        let scratch = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        ok(imgbuild(scratch.path()).args([
            "base",
            "import",
            &tar,
            "--output",
            &format!("oci:layout:{suite}"),
            "--compression",
            "none",
        ]));
        let _ = std::fs::remove_dir_all(scratch.path().join(".store"));
        // Another test binary may have won the race: then its copy is used.
        let _ = std::fs::rename(scratch.path(), &dir);
    }
    dir.join("layout")
}

/// A uv binary: `uv` on PATH, else one installed from the package index into a venv in the
/// temp directory (once per machine).
pub fn uv() -> PathBuf {
    static UV: OnceLock<PathBuf> = OnceLock::new();
    UV.get_or_init(|| {
        if let Ok(o) = Command::new("sh").arg("-c").arg("command -v uv").output() {
            if o.status.success() {
                return PathBuf::from(stdout(&o));
            }
        }
        let venv = std::env::temp_dir().join("imgbuild-test-uv");
        if !venv.join("bin/uv").is_file() {
            let scratch = tempfile::Builder::new()
                .prefix("imgbuild-test-uv-venv.")
                .tempdir()
                .unwrap()
                .keep();
            ok(Command::new("python3").arg("-m").arg("venv").arg(&scratch));
            ok(Command::new(scratch.join("bin/pip")).args(["install", "--quiet", "uv"]));
            let bin = scratch.join("bin/uv");
            // The venv's scripts name its own path: keep it where it was made, link to it.
            let _ = std::fs::create_dir_all(venv.join("bin"));
            let _ = std::os::unix::fs::symlink(&bin, venv.join("bin/uv"));
        }
        venv.join("bin/uv")
    })
    .clone()
}

/// The package index URL as pip sees it: PIP_INDEX_URL, else pip's own default (asked at run
/// time, so that no index host is written in this repository).
pub fn package_index() -> String {
    if let Ok(v) = std::env::var("PIP_INDEX_URL") {
        return v;
    }
    let out = ok(Command::new("python3")
        .arg("-c")
        .arg("from pip._internal.models.index import PyPI; print(PyPI.simple_url)"));
    stdout(&out)
}

/// `len` bytes that do not compress (xorshift from `seed`): layers of a known, real size.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

/// Clears every place registry credentials could come from, and points HOME at `home`:
/// a test's imgbuild sees only the credentials the test gives it.
pub fn without_credentials<'a>(c: &'a mut Command, home: &Path) -> &'a mut Command {
    c.env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("IMGBUILD_REGISTRY_USER")
        .env_remove("IMGBUILD_REGISTRY_PASSWORD")
        .env_remove("IMGBUILD_REGISTRY_HOST")
}

/// Wheels come from (and go to) the store the Python tests share (python.rs, walkthrough.rs),
/// so each is downloaded once per machine; the store is content addressed and safe to share.
pub fn shared_store() -> PathBuf {
    std::env::temp_dir().join("imgbuild-test-pystore")
}

/// `cp -r fixtures/REL DEST`: a copy of a fixture (`DEST` must not exist yet).
pub fn copy_fixture(rel: &str, dest: &Path) {
    ok(Command::new("cp")
        .arg("-r")
        .arg(repo().join("fixtures").join(rel))
        .arg(dest));
}

/// Runs the copy of the job-agent fixture's make-lock.sh in `dir` (uv and the package index):
/// it writes `dir/uv.lock`.
pub fn make_uv_lock(dir: &Path) {
    ok(Command::new("bash")
        .arg(dir.join("make-lock.sh"))
        .env("UV", uv())
        .env("UV_INDEX_URL", package_index()));
}

/// The regular files below `dir`, at any depth (symlinks are not followed); none if it is absent.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub fn bytes_contain(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The SHA-256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes.as_ref()))
}

/// The OCI digest of `bytes`: `sha256:<hex>` (computed here, not by imgbuild).
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// The busybox base as an image reference: `oci:<layout>:bb`.
pub fn busybox_ref() -> String {
    format!("oci:{}:bb", busybox_base().display())
}

/// Writes a project into `dir`: each `(path, contents)` of `files` (parent directories made)
/// and `imgbuild.toml` holding `toml`.
pub fn write_project(dir: &Path, files: &[(&str, &[u8])], toml: &str) {
    for (path, bytes) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    std::fs::write(dir.join("imgbuild.toml"), toml).unwrap();
}

/// The one-image config the registry and fault tests push: image `api` for linux/amd64 in
/// `repository` on `base`, running /app/main.sh, with one layer `app` (`app/` → `/app`).
pub fn api_toml(repository: &str, base: &str) -> String {
    format!(
        "[defaults]\nplatform = \"linux/amd64\"\n[images.api]\nrepository = \"{repository}\"\nbase = \"{base}\"\ncmd = [\"/bin/sh\", \"/app/main.sh\"]\n[[images.api.layers]]\nname = \"app\"\nfiles = [{{ from = \"app\", to = \"/app\" }}]\n"
    )
}

/// A tiny root filesystem that looks like Debian 12's python3 (/usr/bin/python3.11, 3.11.2,
/// glibc 2.36), imported as the layout `DIR/base:py`; `store` is the IMGBUILD_CACHE to use.
pub fn fake_bookworm_python(dir: &Path, store: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let r = dir.join("rootfs");
    let put = |p: &str, b: &[u8], mode: u32| {
        let p = r.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let link = |to: &str, at: &str| {
        let at = r.join(at);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(to, at).unwrap();
    };
    link("usr/bin", "bin");
    link("usr/lib", "lib");
    put("usr/bin/sh", b"\x7fELF", 0o755);
    put("usr/bin/env", b"\x7fELF", 0o755);
    put(
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        b"\x7fELF GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36.\n",
        0o755,
    );
    put("usr/bin/python3.11", b"\x7fELF\0Python \x003.11.2\0", 0o755);
    link("python3.11", "usr/bin/python3");
    put(
        "usr/lib/python3.11/site.py",
        b"# local/lib dist-packages\n",
        0o644,
    );
    std::fs::create_dir_all(r.join("usr/local/lib/python3.11/dist-packages")).unwrap();
    std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    ok(imgbuild(dir).env("IMGBUILD_CACHE", store).args([
        "base",
        "import",
        "rootfs",
        "--output",
        "oci:base:py",
        "--compression",
        "none",
    ]));
    dir.join("base")
}

/// A wheel `dir/filename` with `files`, WHEEL, METADATA (`metadata` lines added) and a correct
/// RECORD; returns its sha256.
pub fn py_wheel(dir: &Path, filename: &str, files: &[(&str, &[u8])], metadata: &str) -> String {
    use sha2::{Digest as _, Sha256};
    use std::io::Write;
    let parts: Vec<&str> = filename.split('-').collect();
    let di = format!("{}-{}.dist-info", parts[0], parts[1]);
    let mut all: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    all.push((
        format!("{di}/WHEEL"),
        b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n".to_vec(),
    ));
    all.push((
        format!("{di}/METADATA"),
        format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{metadata}",
            parts[0], parts[1]
        )
        .into_bytes(),
    ));
    let mut record = String::new();
    for (n, b) in &all {
        let h = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            Sha256::digest(b),
        );
        record.push_str(&format!("{n},sha256={h},{}\n", b.len()));
    }
    record.push_str(&format!("{di}/RECORD,,\n"));
    all.push((format!("{di}/RECORD"), record.into_bytes()));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(filename);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (n, b) in all {
        z.start_file(
            n,
            zip::write::SimpleFileOptions::default().unix_permissions(0o644),
        )
        .unwrap();
        z.write_all(&b).unwrap();
    }
    z.finish().unwrap();
    hex::encode(Sha256::digest(std::fs::read(&path).unwrap()))
}

/// Writes `text` to `path`, making its parent directories.
#[allow(dead_code)]
pub fn write_text(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// imgbuild.toml of an image `app` on the Debian python3 base with one python layer `deps`
/// (`python` is the body of its table) and these smoke lines.
#[allow(dead_code)]
pub fn python_app_spec(dir: &Path, python: &str, smoke: &[&str]) {
    let base = debian_python_base();
    let smoke: Vec<String> = smoke.iter().map(|s| format!("{s:?}")).collect();
    write_text(
        &dir.join("imgbuild.toml"),
        &format!(
            "[images.app]\nbase = \"oci:{}:bookworm\"\nsmoke = [{}]\n\n[[images.app.layers]]\nname = \"deps\"\npython = {{ {python} }}\n",
            base.display(),
            smoke.join(", ")
        ),
    );
}

/// `c` (an imgbuild command) run as `base import` of a one-file root filesystem in `dir`
/// (`/etc/arch` naming `arch`) for linux/`arch` into `layout:tiny`, adding that platform to
/// the tag's index.
pub fn import_tiny_base(c: &mut Command, dir: &Path, arch: &str, layout: &Path) -> Output {
    let r = dir.join(format!("rootfs-{arch}"));
    write_text(&r.join("etc/arch"), arch);
    ok(c.args([
        "base",
        "import",
        r.to_str().unwrap(),
        "--platform",
        &format!("linux/{arch}"),
        "--output",
        &format!("oci:{}:tiny", layout.display()),
    ]))
}
