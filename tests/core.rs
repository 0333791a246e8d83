//! The core pipeline, as the README walks through it: a project with an imgbuild.toml is built
//! into an OCI layout (or a docker-archive) that independent readers accept and runc can run.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// A small project on the busybox base: an app directory, a script, and a guaranteed public/.
fn sample_project(dir: &Path) {
    write_project(
        dir,
        &[
            (
                "app/run.sh",
                b"echo hello from imgbuild; ls -d /app/public\n",
            ),
            ("app/static/site.css", b"body{}\n"),
            ("app/__pycache__/x.pyc", b"junk"),
        ],
        &format!(
            r#"
[images.demo]
base = "{}"
workdir = "/app"
cmd = ["/bin/sh", "/app/run.sh"]
env = {{ GREETING = "hi" }}
labels = {{ "org.opencontainers.image.title" = "demo" }}
ports = ["8080"]

[[images.demo.layers]]
name = "app"
files = [{{ from = "app", to = "/app" }}]
exclude = ["**/__pycache__"]
ensure_dirs = ["/app/public"]
expect = ["/app/public", "/app/run.sh"]  # what this layer provides (the base cannot satisfy it)
"#,
            busybox_ref()
        ),
    );
    fs::set_permissions(dir.join("app/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
}

fn layout_index(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(".imgbuild/oci/index.json")).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(
        &fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn built_image_is_accepted_by_umoci_oci_image_tool_and_skopeo_and_runs_in_runc() {
    let t = tempfile::tempdir().unwrap();
    sample_project(t.path());
    let out = ok(imgbuild(t.path()).arg("demo"));
    let digest = stdout(&out);
    assert!(
        digest.starts_with("sha256:"),
        "prints the manifest digest: {digest}"
    );
    let layout = t.path().join(".imgbuild/oci");
    assert_eq!(
        layout_index(t.path())["manifests"][0]["digest"],
        digest.as_str()
    );

    // oci-image-tool validates the layout's manifest and config against the spec schemas.
    require_tool("oci-image-tool");
    ok(Command::new("oci-image-tool")
        .args(["validate", "--type", "image"])
        .arg(&layout)
        .args(["--ref", "name=demo"]));
    // skopeo copies it to a fresh layout with the manifest digest unchanged.
    require_tool("skopeo");
    let copy = t.path().join("copy");
    ok(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:demo", layout.display()))
        .arg(format!("oci:{}:demo", copy.display())));
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(copy.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], digest.as_str());
    // umoci checks every diff_id while unpacking; runc runs the image's command.
    let bundle = t.path().join("bundle");
    umoci_unpack(&layout, "demo", &bundle);
    assert!(
        bundle.join("rootfs/app/public").is_dir(),
        "ensure_dirs made /app/public"
    );
    assert!(
        !bundle.join("rootfs/app/__pycache__").exists(),
        "excluded directory is absent"
    );
    let run = runc_run(&bundle, &[]);
    assert!(
        run.status.success(),
        "runc: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "hello from imgbuild\n/app/public\n"
    );

    // The config inherits the base's PATH and adds the image section.
    let manifest = blob(&layout, &digest);
    let config = blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"GREETING=hi") && env.iter().any(|e| e.starts_with("PATH=")),
        "{env:?}"
    );
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert_eq!(
        config["config"]["ExposedPorts"]["8080/tcp"],
        serde_json::json!({})
    );
    assert_eq!(
        config["history"].as_array().unwrap().len(),
        2,
        "one history entry per layer, base included"
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
}

#[test]
fn docker_archive_output_keeps_the_image_id_through_skopeo() {
    let t = tempfile::tempdir().unwrap();
    sample_project(t.path());
    ok(imgbuild(t.path()).args(["build", "demo"]));
    ok(imgbuild(t.path()).args(["build", "demo", "--output", "docker-archive:out/demo.tar"]));
    let config_digest = blob(
        &t.path().join(".imgbuild/oci"),
        layout_index(t.path())["manifests"][0]["digest"]
            .as_str()
            .unwrap(),
    )["config"]["digest"]
        .clone();
    require_tool("skopeo");
    let copy = t.path().join("from-archive");
    ok(Command::new("skopeo")
        .arg("copy")
        .arg(format!(
            "docker-archive:{}",
            t.path().join("out/demo.tar").display()
        ))
        .arg(format!("oci:{}:demo", copy.display())));
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(copy.join("index.json")).unwrap()).unwrap();
    let m = blob(&copy, idx["manifests"][0]["digest"].as_str().unwrap());
    // docker's image ID is the config digest; skopeo may recompress layers but not change it.
    assert_eq!(m["config"]["digest"], config_digest);
    ok(imgbuild(t.path()).args(["verify", "docker-archive:out/demo.tar"]));
}

#[test]
fn same_inputs_give_the_same_digest_in_two_directories_at_different_times() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    sample_project(a.path());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    sample_project(b.path());
    // Different mtimes, different absolute paths, different stores.
    ok(Command::new("touch")
        .args(["-d", "2001-01-01"])
        .arg(b.path().join("app/run.sh")));
    let da = stdout(&ok(imgbuild(a.path()).arg("demo")));
    let db = stdout(&ok(imgbuild(b.path()).arg("demo")));
    assert_eq!(da, db);
    // SOURCE_DATE_EPOCH changes the timestamps, so the digest.
    let dc = stdout(&ok(imgbuild(b.path())
        .arg("demo")
        .env("SOURCE_DATE_EPOCH", "1700000000")));
    assert_ne!(da, dc);
}

/// A project whose every byte is spelled out here, on `scratch`: its digests are pinned.
/// If this fails after a dependency update, the gzip backend or tar writer changed the bytes:
/// that breaks reproducibility for every user and must be a deliberate, versioned change.
#[test]
fn golden_digests() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("site/assets")).unwrap();
    fs::write(d.join("site/index.html"), "<h1>golden</h1>\n".repeat(1000)).unwrap();
    fs::write(
        d.join("site/assets/app.js"),
        (0..200_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    fs::set_permissions(d.join("site/index.html"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(
        d.join("site/assets/app.js"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::set_permissions(d.join("site/assets"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(d.join("site"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("index.html", d.join("site/home.html")).unwrap();
    fs::write(
        d.join("imgbuild.toml"),
        "[defaults]\nplatform = \"linux/amd64\"\n[images.web]\nbase = \"scratch\"\ncmd = [\"/serve\"]\nstart_check = false  # scratch: the digests are the point, not the command\n[[images.web.layers]]\nname = \"site\"\nfiles = [{ from = \"site\", to = \"/srv\" }]\n",
    )
    .unwrap();
    let build = |args: &[&str]| {
        stdout(&ok(imgbuild(d)
            .args(["build", "web"])
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000")))
    };
    let got = [
        build(&["--compression", "gzip"]),
        build(&["--compression", "gzip", "--gzip-level", "6"]),
        build(&["--compression", "zstd"]),
        build(&["--compression", "none"]),
    ];
    let want = [GOLDEN_GZIP, GOLDEN_GZIP_6, GOLDEN_ZSTD, GOLDEN_NONE];
    assert_eq!(
        got, want,
        "golden digests changed (gzip, gzip level 6, zstd, none)"
    );
}

const GOLDEN_GZIP: &str = "sha256:462cc317af4eb67b3aabab5c94b877dfb0b0f6605c674ff27ccf1d8d3e4ff2c6";
const GOLDEN_GZIP_6: &str =
    "sha256:175bb79d05da8add8bfbc58c3a0f33ebde9ecc4e77235eb14b522538af663b41";
const GOLDEN_ZSTD: &str = "sha256:1020409fd846e516753c6e73383fac11dbf7b2baf9373d8e2649a791dadea2c0";
const GOLDEN_NONE: &str = "sha256:6511c0b5b9d5ec6eb198f290589877edc793200057583be39aea964fcfce12a3";

#[test]
fn tar_edge_cases_round_trip_through_umoci() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let src = d.join("tree");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("dir/file"), "content").unwrap();
    symlink("dir", src.join("to-dir")).unwrap();
    symlink("does/not/exist", src.join("dangling")).unwrap();
    fs::hard_link(src.join("dir/file"), src.join("hardlink")).unwrap();
    fs::write(src.join("setuid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    let long = (0..6)
        .map(|i| format!("{i}{}", "x".repeat(48)))
        .collect::<Vec<_>>()
        .join("/");
    fs::create_dir_all(src.join(&long)).unwrap();
    fs::write(src.join(&long).join("deep.txt"), "deep").unwrap();
    let weird = std::ffi::OsStr::from_encoded_bytes_unchecked_safe(b"caf\xe9.txt");
    let non_utf8 = fs::write(src.join(weird), "latin-1 name").is_ok();
    fs::write(d.join("imgbuild.toml"), "[images.edge]\nbase = \"scratch\"\n[[images.edge.layers]]\nname = \"tree\"\nfiles = [{ from = \"tree\", to = \"/t\" }]\n").unwrap();
    ok(imgbuild(d).arg("edge"));
    let bundle = d.join("bundle");
    umoci_unpack(&d.join(".imgbuild/oci"), "edge", &bundle);
    let r = bundle.join("rootfs/t");
    assert_eq!(
        fs::read_link(r.join("to-dir")).unwrap(),
        Path::new("dir"),
        "symlink to a directory stays a link"
    );
    assert_eq!(
        fs::read_link(r.join("dangling")).unwrap(),
        Path::new("does/not/exist")
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(r.join("hardlink")).unwrap().ino(),
        fs::metadata(r.join("dir/file")).unwrap().ino(),
        "hard link kept"
    );
    assert_eq!(
        fs::metadata(r.join("setuid")).unwrap().mode() & 0o7777,
        0o4755,
        "setuid bit kept"
    );
    assert!(r.join("empty").is_dir(), "empty directory kept");
    assert!(src.join(&long).join("deep.txt").to_string_lossy().len() > 300);
    assert_eq!(
        fs::read_to_string(r.join(&long).join("deep.txt")).unwrap(),
        "deep",
        "300+ character path"
    );
    if non_utf8 {
        assert_eq!(
            fs::read_to_string(r.join(weird)).unwrap(),
            "latin-1 name",
            "non-UTF-8 file name"
        );
    }
    let md = fs::symlink_metadata(r.join("dir/file")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mtime()),
        (0, 0, 0),
        "owner root, mtime = source date"
    );
}

trait FromBytes {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytes for std::ffi::OsStr {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

#[test]
fn unchanged_rebuild_is_cached_and_one_changed_file_rebuilds_only_its_layer() {
    let t = tempfile::tempdir().unwrap();
    sample_project(t.path());
    let toml = fs::read_to_string(t.path().join("imgbuild.toml")).unwrap();
    fs::create_dir_all(t.path().join("conf")).unwrap();
    fs::write(t.path().join("conf/app.ini"), "a=1\n").unwrap();
    fs::write(t.path().join("imgbuild.toml"), format!("{toml}\n[[images.demo.layers]]\nname = \"conf\"\nfiles = [{{ from = \"conf\", to = \"/etc/app\" }}]\n")).unwrap();
    let summary = |args: &[&str]| -> serde_json::Value {
        serde_json::from_slice(&ok(imgbuild(t.path()).args(args)).stdout).unwrap()
    };
    let first = summary(&["build", "demo", "--json"]);
    let cached = |s: &serde_json::Value| {
        s["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["cached"].as_bool().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(cached(&first), [false, false]);
    let second = summary(&["build", "demo", "--json"]);
    assert_eq!(cached(&second), [true, true]);
    assert_eq!(first["digest"], second["digest"]);

    fs::write(t.path().join("conf/app.ini"), "a=2\n").unwrap();
    let out = ok(imgbuild(t.path()).args(["build", "demo", "--json", "-v"]));
    let third: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        cached(&third),
        [true, false],
        "only the conf layer is rebuilt"
    );
    assert_eq!(third["layers"][0]["digest"], first["layers"][0]["digest"]);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("layer conf: rebuilding: changed /etc/app/app.ini"),
        "-v explains the miss: {why}"
    );
}

#[test]
fn config_errors_name_file_line_and_fix_and_exit_2() {
    let t = tempfile::tempdir().unwrap();
    fs::write(
        t.path().join("imgbuild.toml"),
        "[images.api]\nbase = \"scratch\"\nworkdri = \"/app\"\n",
    )
    .unwrap();
    let (code, err) = fails(imgbuild(t.path()).arg("api"));
    assert_eq!(code, 2);
    assert!(
        err.contains("imgbuild.toml:3:1: unknown key `workdri`"),
        "{err}"
    );
    assert!(err.contains("did you mean `workdir`?"), "{err}");

    fs::write(
        t.path().join("imgbuild.toml"),
        "[images.api]\nbase = \"scratch\"\n[images.frontend]\n",
    )
    .unwrap();
    let (code, err) = fails(imgbuild(t.path()).arg("apj"));
    assert_eq!(code, 2);
    assert!(
        err.contains("no image `apj`")
            && err.contains("api, frontend")
            && err.contains("did you mean `api`?"),
        "{err}"
    );
}

#[test]
fn bad_paths_are_refused_and_leave_nothing_half_written() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("proj");
    sample_project(&d);
    ok(imgbuild(&d).arg("demo"));
    let index_before = fs::read(d.join(".imgbuild/oci/index.json")).unwrap();
    let good = fs::read_to_string(d.join("imgbuild.toml")).unwrap();
    fs::write(t.path().join("secret.txt"), "outside").unwrap();
    symlink("../secret.txt", d.join("app/leak")).unwrap_or(());
    symlink(t.path().join("secret.txt"), d.join("outside-link")).unwrap();
    let cases: &[(&str, &str, i32)] = &[
        (
            r#"{ from = "missing", to = "/app" }"#,
            "`from = \"missing\"` does not exist",
            2,
        ),
        (
            r#"{ from = "../secret.txt", to = "/app/s" }"#,
            "outside the project",
            2,
        ),
        (
            r#"{ from = "outside-link", to = "/app/s" }"#,
            "outside the project",
            2,
        ),
        (
            r#"{ from = "app", to = "/app/../etc" }"#,
            "contains `..`",
            2,
        ),
    ];
    for (files, want, code) in cases {
        let toml = good.replace(
            r#"files = [{ from = "app", to = "/app" }]"#,
            &format!("files = [{files}]"),
        );
        assert_ne!(toml, good);
        fs::write(d.join("imgbuild.toml"), toml).unwrap();
        let (c, err) = fails(imgbuild(&d).arg("demo"));
        assert_eq!(c, *code, "{files}: {err}");
        assert!(err.contains(want), "{files}: expected `{want}` in: {err}");
        assert_eq!(
            fs::read(d.join(".imgbuild/oci/index.json")).unwrap(),
            index_before,
            "layout index untouched"
        );
    }
    // A missing expected path fails the build (exit 1), names the path, and writes no image.
    fs::write(
        d.join("imgbuild.toml"),
        good.replace(r#""/app/run.sh"]"#, r#""/app/run.sh", "/app/server.js"]"#),
    )
    .unwrap();
    let (c, err) = fails(imgbuild(&d).arg("demo"));
    assert_eq!(c, 1);
    assert!(
        err.contains("expected path /app/server.js is missing from the image"),
        "{err}"
    );
    assert_eq!(
        fs::read(d.join(".imgbuild/oci/index.json")).unwrap(),
        index_before
    );
    let leftovers: Vec<_> = fs::read_dir(d.join(".store/tmp")).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "no temporary blobs left: {leftovers:?}"
    );
}

#[test]
fn large_new_inputs_are_hashed_in_the_writing_pass_and_cached_for_the_next_build() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("data")).unwrap();
    // More new bytes than imgbuild pre-hashes (32 MiB): the layer is hashed while it is written.
    fs::write(
        d.join("data/big.bin"),
        (0..40u32 << 20)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    // A hard link the walk meets first in `data/a/` but that a tar has first as `data/a-link`,
    // and paths whose parents no mapping provides: the written layer's inputs must be the ones
    // the next build computes from the stat cache.
    fs::create_dir_all(d.join("data/a")).unwrap();
    fs::write(d.join("data/a/x.txt"), "x").unwrap();
    fs::hard_link(d.join("data/a/x.txt"), d.join("data/a-link")).unwrap();
    fs::write(d.join("app.ini"), "[app]\n").unwrap();
    ok(Command::new("touch")
        .args(["-d", "2001-01-01"])
        .arg(d.join("data/big.bin"))
        .arg(d.join("data/a/x.txt"))
        .arg(d.join("app.ini")));
    fs::write(d.join("imgbuild.toml"), "[images.d]\nbase = \"scratch\"\n[[images.d.layers]]\nname = \"data\"\nfiles = [{ from = \"data\", to = \"/srv/app/data\" }, { from = \"app.ini\", to = \"/etc/app/app.ini\" }]\nensure_dirs = [\"/var/lib/app/cache\"]\n").unwrap();
    let out = ok(imgbuild(d).args(["build", "d", "--json", "-v"]));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("building and hashing in one pass"),
        "the big new file is read once, not hashed first: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second: serde_json::Value =
        serde_json::from_slice(&ok(imgbuild(d).args(["build", "d", "--json"])).stdout).unwrap();
    assert_eq!(first["layers"][0]["cached"], false);
    assert_eq!(
        second["layers"][0]["cached"], true,
        "the one-pass build recorded its content key"
    );
    assert_eq!(first["digest"], second["digest"]);
    // `-v` counts the streamed rows with the layer's settings: 14 paths (srv, srv/app, the data
    // directory and its 4 members; etc, etc/app, app.ini; var, var/lib, var/lib/app, its cache).
    let third = ok(imgbuild(d).args(["build", "d", "-v"]));
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(
        err.contains("layer data: local cache (15 inputs unchanged)"),
        "{err}"
    );
}

#[test]
fn verify_by_name_runs_the_layer_checks_of_the_current_config_on_the_last_build() {
    let t = tempfile::tempdir().unwrap();
    sample_project(t.path());
    ok(imgbuild(t.path()).arg("demo"));
    ok(imgbuild(t.path()).args(["verify", "demo"]));
    // The config now expects a file the last build does not have: verify says so.
    let toml = fs::read_to_string(t.path().join("imgbuild.toml")).unwrap();
    fs::write(
        t.path().join("imgbuild.toml"),
        toml.replace(r#""/app/run.sh"]"#, r#""/app/run.sh", "/app/server.js"]"#),
    )
    .unwrap();
    let (code, err) = fails(imgbuild(t.path()).args(["verify", "demo"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("failed verification (1 problem)")
            && err.contains("expected path /app/server.js is missing"),
        "{err}"
    );
}
