//! `bytecode = true` (issue 15): hash-based pycs compiled by the image's own interpreter (runc,
//! in the image's root filesystem), in the python layer, recorded in RECORD, deterministic,
//! cached, and used as they are by a container that runs as user 1000 with a read-only root.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const SITE: &str = "usr/local/lib/python3.11/dist-packages";

/// uv.lock for the job-agent fixture, made once per test binary with make-lock.sh.
fn uv_lock() -> PathBuf {
    static LOCK: OnceLock<PathBuf> = OnceLock::new();
    LOCK.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "imgbuild-test-bytecode-lock-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        copy_fixture("job-agent", &dir);
        make_uv_lock(&dir);
        dir.join("uv.lock")
    })
    .clone()
}

/// `t/job-agent` with its uv.lock, the Debian python3 base at `../.bases/`, and the python
/// layer's table given `extra` (e.g. `, bytecode = true`).
fn job_agent(t: &Path, extra: &str) -> PathBuf {
    let p = t.join("job-agent");
    if !p.exists() {
        copy_fixture("job-agent", &p);
        fs::copy(uv_lock(), p.join("uv.lock")).unwrap();
        fs::create_dir_all(t.join(".bases")).unwrap();
        std::os::unix::fs::symlink(debian_python_base(), t.join(".bases/debian-python3")).unwrap();
        fs::copy(p.join("imgbuild.toml"), p.join("imgbuild.toml.orig")).unwrap();
    }
    let toml = fs::read_to_string(p.join("imgbuild.toml.orig")).unwrap();
    let from = "scripts = [\"alembic\", \"celery\", \"uvicorn\"] }";
    assert!(toml.contains(from));
    let toml = toml.replace(
        from,
        &format!("scripts = [\"alembic\", \"celery\", \"uvicorn\"]{extra} }}"),
    );
    fs::write(p.join("imgbuild.toml"), toml).unwrap();
    p
}

/// `imgbuild ARGS` in `dir` with the store `store`; returns (digest from --json, stderr).
fn build(dir: &Path, store: &Path, args: &[&str]) -> (String, String) {
    let out = ok(imgbuild(dir)
        .env("IMGBUILD_CACHE", store)
        .args(["build", "api", "--json"])
        .args(args));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["digest"].as_str().unwrap().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Imports the app and its dependencies, counting every module the import system had to
/// compile from source (`SourceLoader.source_to_code` is called only when no valid pyc is
/// found), and the site modules imported without a pyc next to them.
const PROBE: &str = r#"
import importlib._bootstrap_external as be, json, os, sys
compiled = []
orig = be.SourceLoader.source_to_code
def source_to_code(self, data, path, *a, **k):
    compiled.append(path)
    return orig(self, data, path, *a, **k)
be.SourceLoader.source_to_code = source_to_code
import src.main, src.worker, alembic.config, celery, fastapi, sqlalchemy
site = [m.__spec__ for m in list(sys.modules.values())
        if getattr(m, "__spec__", None) and (m.__spec__.origin or "").endswith(".py")
        and "/dist-packages/" in m.__spec__.origin]
print(json.dumps({"compiled": compiled, "site_modules": len(site),
                  "without_pyc": [s.origin for s in site if not (s.cached and os.path.exists(s.cached))]}))
"#;

/// The image of `dir`'s last build unpacked with umoci, and PROBE run in it by runc as user
/// 1000 with a read-only root: (probe's JSON, stderr, pyc files in the rootfs before, after).
fn probe(dir: &Path, bundle: &Path) -> (serde_json::Value, String, usize, usize) {
    umoci_unpack(&dir.join(".imgbuild/oci"), "api", bundle);
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    cfg["root"]["readonly"] = true.into();
    fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let pycs = || {
        files_under(&bundle.join("rootfs"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "pyc"))
            .count()
    };
    let before = pycs();
    let out = runc_run(bundle, &["python3", "-X", "importtime", "-c", PROBE]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v, err, before, pycs())
}

#[test]
fn the_job_agent_api_with_bytecode() {
    require_tool("runc");
    require_tool("umoci");
    let t = tempfile::tempdir().unwrap();
    let p = job_agent(t.path(), ", bytecode = true");

    // Two builds from two empty stores: the same image, byte for byte.
    let (a, b) = (t.path().join("store-a"), t.path().join("store-b"));
    let (digest_a, err) = build(&p, &a, &[]);
    assert!(
        err.contains("layer `python-deps`: compiled ") && err.contains("with CPython 3.11.2"),
        "{err}"
    );
    let (digest_b, _) = build(&p, &b, &[]);
    assert_eq!(digest_a, digest_b, "two empty stores, two digests");

    // A rebuild compiles nothing (the layer is cached); verification passes.
    let out = ok(imgbuild(&p)
        .env("IMGBUILD_CACHE", &a)
        .args(["build", "api", "--json"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("compiled "), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["digest"], digest_a);
    assert!(
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["cached"] == true),
        "{v}"
    );
    let out = ok(imgbuild(&p)
        .env("IMGBUILD_CACHE", &a)
        .args(["verify", "api"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("33 Python distributions match their RECORD"),
        "{err}"
    );

    // Another layer key (zstd) writes the layer again, but its compile is the same: the pycs
    // come from the store, runc compiles nothing.
    let (_, err) = build(
        &p,
        &a,
        &["--compression", "zstd", "--output", "oci:zst:api"],
    );
    assert!(!err.contains("compiled "), "the compile is cached: {err}");

    // Every module has a pyc whose header says checked-hash (flags 0b11), and a RECORD row.
    let bundle = t.path().join("bundle");
    let (v, err, before, after) = probe(&p, &bundle);
    let site = bundle.join("rootfs").join(SITE);
    let mut modules = 0;
    for f in files_under(&site) {
        if f.extension().is_none_or(|e| e != "py") {
            continue;
        }
        modules += 1;
        let pyc = f.parent().unwrap().join("__pycache__").join(format!(
            "{}.cpython-311.pyc",
            f.file_stem().unwrap().to_string_lossy()
        ));
        let bytes = fs::read(&pyc).unwrap_or_else(|_| panic!("{} has no pyc", f.display()));
        let flags = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        assert_eq!(flags, 0b11, "{}: flags {flags:#b}", pyc.display());
    }
    assert!(modules > 1000, "{modules} modules");
    let dist_info = fs::read_dir(&site)
        .unwrap()
        .flatten()
        .find(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("fastapi-") && n.ends_with(".dist-info")
        })
        .unwrap();
    let record = fs::read_to_string(dist_info.path().join("RECORD")).unwrap();
    let row = record
        .lines()
        .find(|l| l.starts_with("fastapi/__pycache__/__init__.cpython-311.pyc,sha256="))
        .unwrap_or_else(|| panic!("no pyc row: {record}"));
    let size: u64 = row.rsplit(',').next().unwrap().parse().unwrap();
    assert_eq!(
        size,
        fs::metadata(site.join("fastapi/__pycache__/__init__.cpython-311.pyc"))
            .unwrap()
            .len()
    );

    // User 1000, read-only root: nothing of the install is compiled, no pyc is written.
    assert!(
        err.lines()
            .any(|l| l.starts_with("import time:") && l.ends_with(" fastapi")),
        "-X importtime shows the imports: {err}"
    );
    let compiled: Vec<&str> = v["compiled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    // (The app's own files are a files layer without pycs, and this Debian base ships its
    // standard library without pycs: those are compiled, in memory, at every start.)
    let ours: Vec<&&str> = compiled
        .iter()
        .filter(|c| c.starts_with(&format!("/{SITE}/")))
        .collect();
    assert!(ours.is_empty(), "modules of the install compiled: {ours:?}");
    assert!(compiled.contains(&"/app/src/main.py"), "{compiled:?}");
    assert!(v["site_modules"].as_u64().unwrap() > 300, "{v}");
    assert_eq!(v["without_pyc"], serde_json::json!([]), "{v}");
    assert_eq!(before, after, "no pyc written");

    // Counter-check of the probe: without bytecode, the same import compiles the install.
    let p = job_agent(t.path(), "");
    build(&p, &a, &[]);
    let bundle = t.path().join("bundle-plain");
    let (v, _, _, _) = probe(&p, &bundle);
    let compiled = v["compiled"].as_array().unwrap();
    assert!(
        compiled
            .iter()
            .filter(|c| c.as_str().unwrap().starts_with(&format!("/{SITE}/")))
            .count()
            > 300,
        "{v}"
    );
}

/// The bytes of `layout`'s manifest of `tag`: (index, manifest index in it, manifest).
fn manifest(layout: &Path, tag: &str) -> (serde_json::Value, usize, serde_json::Value) {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let i = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .position(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let d = index["manifests"][i]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    (index, i, serde_json::from_slice(&blob(layout, &d)).unwrap())
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let d = digest_of(bytes);
    fs::write(
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:")),
        bytes,
    )
    .unwrap();
    d
}

#[test]
fn a_tampered_pyc_is_caught_by_verify() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    let p = job_agent(t.path(), ", bytecode = true");
    let store = shared_store();
    build(
        &p,
        &store,
        &["--compression", "none", "--output", "oci:out:api"],
    );
    let layout = p.join("out");
    ok(imgbuild(&p)
        .env("IMGBUILD_CACHE", &store)
        .args(["verify", "oci:out:api"]));

    // Someone rewrites one pyc in the python layer and every digest above it, consistently:
    // blobs, diff_ids and manifest all check; only the RECORD says otherwise.
    let victim = format!("{SITE}/celery/__pycache__/__init__.cpython-311.pyc");
    let (mut index, mi, mut m) = manifest(&layout, "api");
    let config_digest = m["config"]["digest"].as_str().unwrap().to_string();
    let mut config: serde_json::Value =
        serde_json::from_slice(&blob(&layout, &config_digest)).unwrap();
    let mut done = false;
    for (li, l) in m["layers"].clone().as_array().unwrap().iter().enumerate() {
        let d = l["digest"].as_str().unwrap();
        let mut bytes = blob(&layout, d);
        let mut at = None;
        for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let e = e.unwrap();
            if e.path().unwrap().to_string_lossy().trim_start_matches("./") == victim {
                at = Some(e.raw_file_position() + e.size() - 1);
            }
        }
        let Some(at) = at else { continue };
        bytes[at as usize] ^= 0xff;
        let nd = put_blob(&layout, &bytes);
        m["layers"][li]["digest"] = nd.clone().into();
        config["rootfs"]["diff_ids"][li] = nd.into();
        done = true;
    }
    assert!(done, "{victim} is in a layer");
    let cfg = serde_json::to_vec(&config).unwrap();
    m["config"]["digest"] = put_blob(&layout, &cfg).into();
    m["config"]["size"] = cfg.len().into();
    let mb = serde_json::to_vec(&m).unwrap();
    index["manifests"][mi]["digest"] = put_blob(&layout, &mb).into();
    index["manifests"][mi]["size"] = mb.len().into();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let (code, err) = fails(
        imgbuild(&p)
            .env("IMGBUILD_CACHE", &store)
            .args(["verify", "oci:out:api"]),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("/{victim}: sha256=")), "{err}");
    assert!(err.contains("does not match RECORD"), "{err}");
}

/// A one-wheel project on the Debian python3 base: `pkg` with two modules and one that
/// CPython 3.11 cannot compile; `bytecode` is the layer's setting.
fn small(dir: &Path, bytecode: &str) {
    let sha = py_wheel(
        &dir.join("wheels"),
        "pkg-1.0-py3-none-any.whl",
        &[
            ("pkg/__init__.py", b"from pkg import mod\n"),
            (
                "pkg/mod.py",
                b"'''doc'''\nassert True\nVALUE = {'b', 'a'}\n",
            ),
            ("pkg/py2only.py", b"print 'old'\n"),
        ],
        "",
    );
    write_text(
        &dir.join("pylock.toml"),
        &format!(
            "lock-version = \"1.0\"\ncreated-by = \"test\"\n\n[[packages]]\nname = \"pkg\"\nversion = \"1.0\"\nwheels = [{{ name = \"pkg-1.0-py3-none-any.whl\", path = \"wheels/pkg-1.0-py3-none-any.whl\", hashes = {{ sha256 = \"{sha}\" }} }}]\n"
        ),
    );
    python_app_spec(
        dir,
        &format!("lock = \"pylock.toml\", require = [\"pkg\"], bytecode = {bytecode}"),
        &["python3 -c 'import pkg; print(pkg.mod.VALUE)'"],
    );
}

/// The files of layer `n` of the last build of `app` in `dir` (uncompressed layout `out`):
/// path → bytes.
fn layer_files(dir: &Path, n: usize) -> std::collections::BTreeMap<String, Vec<u8>> {
    let layout = dir.join("out");
    let (_, _, m) = manifest(&layout, "app");
    let bytes = blob(&layout, m["layers"][n]["digest"].as_str().unwrap());
    let mut out = std::collections::BTreeMap::new();
    for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut b).unwrap();
        out.insert(p, b);
    }
    out
}

#[test]
fn without_runc_it_says_so_and_how_to_turn_bytecode_off() {
    let t = tempfile::tempdir().unwrap();
    small(t.path(), "true");
    let store = t.path().join("store");
    let (code, err) = fails(
        imgbuild(t.path())
            .env("IMGBUILD_CACHE", &store)
            .env("PATH", "/nonexistent")
            .args(["build", "app"]),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "cannot compile bytecode for CPython 3.11.2: no OCI runtime: runc is not on PATH"
        ),
        "{err}"
    );
    assert!(err.contains("install runc"), "{err}");
    assert!(err.contains("set `bytecode = false`"), "{err}");
    assert!(
        !t.path().join(".imgbuild/oci/index.json").exists(),
        "nothing written"
    );

    // With runc: both optimisation levels, unchecked-hash pycs (flags 0b01); the source 3.11
    // cannot compile is kept without a pyc and named, as pip does; the image runs.
    require_tool("runc");
    small(
        t.path(),
        "{ optimize = [0, 1], invalidation = \"unchecked-hash\" }",
    );
    let out = ok(imgbuild(t.path()).env("IMGBUILD_CACHE", &store).args([
        "build",
        "app",
        "--compression",
        "none",
        "--output",
        "oci:out:app",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("compiled 2 modules into 4 pycs"), "{err}");
    assert!(
        err.contains("1 source CPython 3.11.2 cannot compile kept without a pyc")
            && err.contains("pkg/py2only.py"),
        "{err}"
    );
    let files = layer_files(t.path(), 1);
    let cache = format!("{SITE}/pkg/__pycache__");
    let pycs: Vec<&String> = files.keys().filter(|k| k.ends_with(".pyc")).collect();
    assert_eq!(
        pycs,
        vec![
            &format!("{cache}/__init__.cpython-311.opt-1.pyc"),
            &format!("{cache}/__init__.cpython-311.pyc"),
            &format!("{cache}/mod.cpython-311.opt-1.pyc"),
            &format!("{cache}/mod.cpython-311.pyc"),
        ]
    );
    for p in &pycs {
        let b = &files[*p];
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 0b01, "{p}");
    }
    // Level 1 drops the assert; the docstring stays (level 2 would drop it).
    assert_ne!(
        files[&format!("{cache}/mod.cpython-311.pyc")],
        files[&format!("{cache}/mod.cpython-311.opt-1.pyc")]
    );
    let record =
        String::from_utf8(files[&format!("{SITE}/pkg-1.0.dist-info/RECORD")].clone()).unwrap();
    for p in &pycs {
        let rel = p.trim_start_matches(&format!("{SITE}/"));
        let row = record
            .lines()
            .find(|l| l.starts_with(&format!("{rel},sha256=")))
            .unwrap_or_else(|| panic!("no row for {rel}: {record}"));
        assert!(row.ends_with(&format!(",{}", files[*p].len())), "{row}");
    }
    assert!(
        record.trim_end().ends_with("pkg-1.0.dist-info/RECORD,,"),
        "{record}"
    );
    assert!(!record.contains("py2only.cpython"), "{record}");
    let out = ok(imgbuild(t.path())
        .env("IMGBUILD_CACHE", &store)
        .args(["verify", "oci:out:app"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("match their RECORD"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
