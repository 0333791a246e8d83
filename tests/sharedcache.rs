//! The shared layer cache (`cache = "REPO"`): two "runners" with separate empty stores and one
//! real docker-registry with a password. Runner A builds and pushes; runner B, whose package
//! index is a closed loopback port, takes every layer from the cache repository and pushes the
//! same digest without moving a layer byte. Read mode writes nothing; poisoned records, deleted
//! blobs, an unreachable cache and a fault proxy never fail a build.

mod common;
use common::faultproxy::{FaultProxy, ALL};
use common::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const USER: &str = "ci";
const PASS: &str = "s3cret-pw";

/// A closed loopback port: the package index of runner B.
fn closed_index() -> String {
    format!("http://127.0.0.1:{}/simple", free_port())
}

/// imgbuild in `dir` as one runner: its own store `store`, credentials for the test registry
/// only from the environment, the package index given.
fn runner(dir: &Path, store: &Path, index: Option<&str>) -> Command {
    let mut c = imgbuild(dir);
    without_credentials(&mut c, &dir.join(".home"))
        .env("IMGBUILD_CACHE", store)
        .env("IMGBUILD_REGISTRY_USER", USER)
        .env("IMGBUILD_REGISTRY_PASSWORD", PASS)
        .env_remove("IMGBUILD_CACHE_REPO")
        .env_remove("IMGBUILD_CACHE_MODE");
    if let Some(i) = index {
        c.env("UV_INDEX_URL", i)
            .env("PIP_INDEX_URL", i)
            .env("UV_DEFAULT_INDEX", i);
    }
    c
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn err(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Each layer's `source` in a summary.
fn sources(s: &Value) -> Vec<String> {
    s["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["source"].as_str().unwrap().to_string())
        .collect()
}

/// `curl` against the test registry with its password; returns (status, body).
fn curl(reg: &Registry, args: &[&str], path: &str) -> (u16, Vec<u8>) {
    let out = ok(Command::new("curl")
        .args([
            "-s",
            "-u",
            &format!("{USER}:{PASS}"),
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .arg(format!("http://{}{path}", reg.host())));
    let mut body = out.stdout;
    let at = body.iter().rposition(|&b| b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&body[at + 1..]).parse().unwrap();
    body.truncate(at);
    (status, body)
}

/// The cache repository's tags that start with `prefix` (`layer-`, `base-`, …).
fn tags_with(reg: &Registry, repo: &str, prefix: &str) -> Vec<String> {
    tags(reg, repo)
        .into_iter()
        .filter(|t| t.starts_with(prefix))
        .collect()
}

/// The cache repository's tags (sorted; empty when it does not exist).
fn tags(reg: &Registry, repo: &str) -> Vec<String> {
    let (status, body) = curl(reg, &[], &format!("/v2/{repo}/tags/list"));
    if status == 404 {
        return vec![];
    }
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    t.sort();
    t
}

fn manifest(reg: &Registry, repo: &str, tag: &str) -> Value {
    let (status, body) = curl(
        reg,
        &["-H", "Accept: application/vnd.oci.image.manifest.v1+json"],
        &format!("/v2/{repo}/manifests/{tag}"),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Uploads `bytes` as a blob of `repo` (POST, then one PUT); returns its digest.
fn put_blob(reg: &Registry, repo: &str, bytes: &[u8]) -> String {
    let d = digest_of(bytes);
    let out = ok(Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "-X", "POST", "-u"])
        .arg(format!("{USER}:{PASS}"))
        .arg(format!("http://{}/v2/{repo}/blobs/uploads/", reg.host())));
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let loc = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or(l.strip_prefix("location: "))
        })
        .unwrap()
        .trim()
        .to_string();
    let url = if loc.starts_with("http") {
        loc
    } else {
        format!("http://{}{loc}", reg.host())
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), bytes).unwrap();
    let out = ok(Command::new("curl")
        .args([
            "-s",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            "-X",
            "PUT",
            "-u",
        ])
        .arg(format!("{USER}:{PASS}"))
        .args([
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", tmp.path().display()))
        .arg(format!("{url}{sep}digest={d}")));
    assert_eq!(stdout(&out), "201");
    d
}

fn put_manifest(reg: &Registry, repo: &str, tag: &str, m: &Value) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), serde_json::to_vec(m).unwrap()).unwrap();
    let (status, body) = curl(
        reg,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", tmp.path().display()),
        ],
        &format!("/v2/{repo}/manifests/{tag}"),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
}

/// The record tag (in `tags`) whose manifest names layer blob `digest`.
fn tag_of(reg: &Registry, repo: &str, tags: &[String], digest: &str) -> String {
    tags.iter()
        .find(|t| manifest(reg, repo, t)["layers"][1]["digest"] == digest)
        .unwrap_or_else(|| panic!("no record names {digest}"))
        .clone()
}

/// A small project on busybox: image `api` with layers `data` (256 KiB that do not compress)
/// and `app`, pushed to `repository`, sharing through `cache` (with `extra` lines in
/// [defaults]).
fn small_project(dir: &Path, repository: &str, cache: &str, extra: &str) {
    let toml = format!(
        "[defaults]\nplatform = \"linux/amd64\"\ncache = \"{cache}\"\n{extra}\n[images.api]\nrepository = \"{repository}\"\nbase = \"{}\"\ncmd = [\"/bin/sh\", \"/app/main.sh\"]\n[[images.api.layers]]\nname = \"data\"\nfiles = [{{ from = \"data\", to = \"/data\" }}]\n[[images.api.layers]]\nname = \"app\"\nfiles = [{{ from = \"app\", to = \"/app\" }}]\n",
        busybox_ref()
    );
    write_project(
        dir,
        &[
            ("data/blob.bin", &noise(7, 256 * 1024)),
            ("app/main.sh", b"echo hello\n"),
        ],
        &toml,
    );
}

/// The layers (digest, size) of the OCI layout `dir`'s one image.
fn base_layer_digests(dir: &Path) -> Vec<(String, u64)> {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let d = index["manifests"][0]["digest"].as_str().unwrap();
    let m: Value = serde_json::from_slice(
        &fs::read(
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The layer blobs (compressed digests) of a summary that are in `store`.
fn local_layer_blobs(s: &Value, store: &Path) -> Vec<String> {
    s["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .filter(|d| {
            store
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
                .is_file()
        })
        .collect()
}

/// A copy of the job-agent fixture in `t/NAME/job-agent` with its uv.lock and the bases at
/// `t/NAME/.bases`, pushing api to `repository` and sharing through `cache`.
fn job_agent(t: &Path, name: &str, lock: &Path, repository: &str, cache: &str) -> PathBuf {
    let root = t.join(name);
    fs::create_dir_all(root.join(".bases")).unwrap();
    let p = root.join("job-agent");
    copy_fixture("job-agent", &p);
    fs::copy(lock, p.join("uv.lock")).unwrap();
    std::os::unix::fs::symlink(debian_python_base(), root.join(".bases/debian-python3")).unwrap();
    let toml = fs::read_to_string(p.join("imgbuild.toml")).unwrap();
    let toml = toml
        .replace(
            "repository = \"registry.example.com/acme/job-agent-api\"",
            &format!("repository = \"{repository}\""),
        )
        .replace(
            "platform = \"linux/amd64\"\n",
            &format!("platform = \"linux/amd64\"\ncache = \"{cache}\"\n"),
        );
    fs::write(p.join("imgbuild.toml"), toml).unwrap();
    p
}

#[test]
fn a_fresh_runner_takes_every_layer_from_the_shared_cache_and_moves_no_layer_bytes() {
    let reg = Registry::start(Some((USER, PASS)));
    let t = tempfile::tempdir().unwrap();
    let lockdir = t.path().join("lock");
    copy_fixture("job-agent", &lockdir);
    make_uv_lock(&lockdir);
    let repository = format!("{}/acme/job-agent-api", reg.host());
    let cache_repo = "acme/imgbuild-cache";
    let cache = format!("{}/{cache_repo}", reg.host());
    let a = job_agent(t.path(), "a", &lockdir.join("uv.lock"), &repository, &cache);
    let b = job_agent(t.path(), "b", &lockdir.join("uv.lock"), &repository, &cache);
    let (store_a, store_b) = (t.path().join("store-a"), t.path().join("store-b"));

    // Runner A: a cold build and push; every layer is built and its record written.
    let out =
        ok(runner(&a, &store_a, Some(&package_index())).args(["build", "api", "--push", "--json"]));
    let sa = json(&out);
    assert_eq!(sources(&sa), ["built", "built"], "{sa}");
    // Two layer records, one record per base layer (its listing and SBOM facts) and the
    // python target detected in the base.
    let written = tags(&reg, cache_repo);
    let base_layers = base_layer_digests(&a.join("../.bases/debian-python3"));
    assert_eq!(
        tags_with(&reg, cache_repo, "layer-").len(),
        2,
        "{written:?}"
    );
    assert_eq!(
        tags_with(&reg, cache_repo, "base-").len(),
        base_layers.len(),
        "{written:?}"
    );
    assert_eq!(
        tags_with(&reg, cache_repo, "python-target-").len(),
        1,
        "{written:?}"
    );
    assert_eq!(written.len(), 3 + base_layers.len(), "{written:?}");
    assert_eq!(sa["shared_cache"]["records_written"], written.len(), "{sa}");

    // Runner B must not read its base's bytes: its store gets the base layer blobs as files
    // of the right size whose bytes are zeros, which any read would reject (digest, gzip).
    for (d, size) in &base_layers {
        let p = store_b
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, vec![0u8; *size as usize]).unwrap();
    }

    // Runner B: an empty store and no package index; the same commit built, verified and
    // pushed without building a layer or moving a layer byte.
    let out = ok(runner(&b, &store_b, Some(&closed_index()))
        .args(["-v", "build", "api", "--push", "--json"]));
    let sb = json(&out);
    let e = err(&out);
    assert_eq!(sb["digest"], sa["digest"], "{e}");
    assert_eq!(sources(&sb), ["shared cache", "shared cache"], "{e}");
    assert_eq!(sb["uploaded_bytes"], 0, "{sb}");
    assert_eq!(sb["shared_cache"]["hits"], 2, "{sb}");
    assert_eq!(sb["shared_cache"]["downloaded_bytes"], 0, "{sb}");
    assert_eq!(sb["shared_cache"]["uploaded_bytes"], 0, "{sb}");
    assert_eq!(sb["shared_cache"]["warnings"], 0, "{sb}");
    assert_eq!(sb["shared_cache"]["base_hits"], base_layers.len(), "{sb}");
    assert_eq!(sb["shared_cache"]["record_hits"], 1, "{sb}");
    assert!(
        local_layer_blobs(&sb, &store_b).is_empty(),
        "runner B downloaded layer blobs: {:?}",
        local_layer_blobs(&sb, &store_b)
    );
    assert!(
        e.contains("layer python-deps: shared cache") && e.contains("not downloaded"),
        "{e}"
    );
    assert_eq!(tags(&reg, cache_repo), written);

    // A one-file app change: runner B builds only the app layer (and writes its record).
    fs::write(b.join("src/version.py"), "VERSION = '2'\n").unwrap();
    let out =
        ok(runner(&b, &store_b, Some(&closed_index())).args(["build", "api", "--push", "--json"]));
    let sb2 = json(&out);
    assert_eq!(sources(&sb2), ["shared cache", "built"], "{}", err(&out));
    assert_eq!(sb2["shared_cache"]["records_written"], 1, "{sb2}");
    assert_eq!(tags(&reg, cache_repo).len(), written.len() + 1);

    // `cache_mode = "read"`: looks up, never writes (the tag list is unchanged).
    fs::write(b.join("src/version.py"), "VERSION = '3'\n").unwrap();
    let before = tags(&reg, cache_repo);
    let out = ok(runner(&b, &store_b, Some(&closed_index())).args([
        "build",
        "api",
        "--push",
        "--json",
        "--cache-mode",
        "read",
    ]));
    let sb3 = json(&out);
    assert_eq!(sources(&sb3), ["shared cache", "built"], "{}", err(&out));
    assert_eq!(sb3["shared_cache"]["records_written"], 0, "{sb3}");
    assert_eq!(sb3["shared_cache"]["mode"], "read", "{sb3}");
    assert_eq!(tags(&reg, cache_repo), before);

    // Runner B without --push writes the default layout: then the bytes are needed, downloaded
    // and checked; umoci reads the layout.
    fs::write(b.join("src/version.py"), "VERSION = '2'\n").unwrap();
    let store_c = t.path().join("store-c");
    let out = ok(runner(&b, &store_c, Some(&closed_index())).args(["build", "api", "--json"]));
    let sc = json(&out);
    assert_eq!(sc["digest"], sb2["digest"], "{}", err(&out));
    assert_eq!(sources(&sc), ["shared cache", "shared cache"]);
    // The base's bytes are at hand (and read): its shared listings were checked against them.
    assert_eq!(sc["shared_cache"]["base_hits"], base_layers.len(), "{sc}");
    assert_eq!(sc["shared_cache"]["warnings"], 0, "{sc}");
    let downloaded = sc["shared_cache"]["downloaded_bytes"].as_u64().unwrap();
    let sizes: u64 = sc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert_eq!(downloaded, sizes, "{sc}");
    umoci_unpack(&b.join(".imgbuild/oci"), "api", &t.path().join("bundle"));
}

#[test]
fn poisoned_records_and_deleted_blobs_are_ignored_with_one_warning() {
    let reg = Registry::start(Some((USER, PASS)));
    let t = tempfile::tempdir().unwrap();
    let repository = format!("{}/acme/api", reg.host());
    let cache_repo = "acme/cache";
    let cache = format!("{}/{cache_repo}", reg.host());
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    small_project(&a, &repository, &cache, "");
    small_project(&b, &repository, &cache, "");
    let sa = json(&ok(
        runner(&a, &t.path().join("sa"), None).args(["build", "api", "--push", "--json"])
    ));
    let data = sa["layers"][0].clone();
    let app = sa["layers"][1].clone();
    let all = tags_with(&reg, cache_repo, "layer-");
    assert_eq!(all.len(), 2);

    // Poison the record of `app`: it now points at the blob of `data` (size and media type
    // consistent, so only the bytes can tell).
    let app_tag = tag_of(&reg, cache_repo, &all, app["digest"].as_str().unwrap());
    let mut m = manifest(&reg, cache_repo, &app_tag);
    let (_, rec) = curl(
        &reg,
        &[],
        &format!(
            "/v2/{cache_repo}/blobs/{}",
            m["config"]["digest"].as_str().unwrap()
        ),
    );
    let mut rec: Value = serde_json::from_slice(&rec).unwrap();
    rec["digest"] = data["digest"].clone();
    rec["size"] = data["size"].clone();
    let rec_bytes = serde_json::to_vec(&rec).unwrap();
    m["config"]["digest"] = put_blob(&reg, cache_repo, &rec_bytes).into();
    m["config"]["size"] = rec_bytes.len().into();
    m["layers"][1]["digest"] = data["digest"].clone();
    m["layers"][1]["size"] = data["size"].clone();
    put_manifest(&reg, cache_repo, &app_tag, &m);

    // Runner B writes the default layout (the bytes are downloaded and checked): the poisoned
    // record is ignored with one warning, `app` is built, the image is the same.
    let out = ok(runner(&b, &t.path().join("sb"), None).args(["build", "api", "--json"]));
    let sb = json(&out);
    let e = err(&out);
    assert_eq!(sb["digest"], sa["digest"], "{e}");
    assert_eq!(sources(&sb), ["shared cache", "built"], "{e}");
    assert_eq!(e.matches("warning: shared cache").count(), 1, "{e}");
    assert!(
        e.contains("layer `app` from the shared cache is ignored"),
        "{e}"
    );
    assert_eq!(sb["shared_cache"]["warnings"], 1);
    // The build rewrote the record: the next fresh runner takes `app` from the cache again.
    assert_eq!(
        manifest(&reg, cache_repo, &app_tag)["layers"][1]["digest"],
        app["digest"]
    );
    let out = ok(runner(&b, &t.path().join("sb2"), None).args(["build", "api", "--json"]));
    assert_eq!(sources(&json(&out)), ["shared cache", "shared cache"]);

    // The cache repository loses the blob of `data`: a pushing runner is told once and builds.
    let (status, _) = curl(
        &reg,
        &["-X", "DELETE"],
        &format!(
            "/v2/{cache_repo}/blobs/{}",
            data["digest"].as_str().unwrap()
        ),
    );
    assert_eq!(status, 202);
    let out = ok(runner(&b, &t.path().join("sc"), None).args(["build", "api", "--push", "--json"]));
    let sc = json(&out);
    let e = err(&out);
    assert_eq!(sc["digest"], sa["digest"], "{e}");
    assert_eq!(sources(&sc), ["built", "shared cache"], "{e}");
    assert_eq!(e.matches("warning: shared cache").count(), 1, "{e}");
    assert!(e.contains("no longer has its layer blob"), "{e}");
}

#[test]
fn read_mode_from_imgbuild_toml_writes_nothing() {
    let reg = Registry::start(Some((USER, PASS)));
    let t = tempfile::tempdir().unwrap();
    let repository = format!("{}/acme/api", reg.host());
    let cache = format!("{}/acme/cache", reg.host());
    let a = t.path().join("a");
    small_project(&a, &repository, &cache, "cache_mode = \"read\"");
    let s = json(&ok(
        runner(&a, &t.path().join("sa"), None).args(["build", "api", "--push", "--json"])
    ));
    assert_eq!(sources(&s), ["built", "built"]);
    assert_eq!(s["shared_cache"]["records_written"], 0);
    assert!(tags(&reg, "acme/cache").is_empty());
    // The same project in read-write mode (IMGBUILD_CACHE_MODE over the file) writes both.
    let s = json(&ok(runner(&a, &t.path().join("sa"), None)
        .env("IMGBUILD_CACHE_MODE", "read-write")
        .args(["build", "api", "--push", "--json"])));
    assert_eq!(sources(&s), ["local cache", "local cache"]);
    // The two layers' records and the busybox base layer's.
    assert_eq!(s["shared_cache"]["records_written"], 3);
    assert_eq!(tags_with(&reg, "acme/cache", "layer-").len(), 2);
    assert_eq!(tags_with(&reg, "acme/cache", "base-").len(), 1);
}

#[test]
fn an_unreachable_cache_costs_one_warning_and_never_fails_the_build() {
    let reg = Registry::start(Some((USER, PASS)));
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let repository = format!("{}/acme/api", reg.host());
    small_project(
        &a,
        &repository,
        &format!("127.0.0.1:{}/acme/cache", free_port()),
        "",
    );
    let out = ok(runner(&a, &t.path().join("sa"), None).args(["build", "api", "--push", "--json"]));
    let s = json(&out);
    let e = err(&out);
    assert_eq!(sources(&s), ["built", "built"]);
    assert_eq!(s["shared_cache"]["reachable"], false, "{s}");
    assert_eq!(e.matches("warning: shared cache").count(), 1, "{e}");
    assert!(e.contains("cannot be reached"), "{e}");
    assert!(!e.contains(PASS), "{e}");

    // A cache naming a tag is a usage error that names the line of imgbuild.toml.
    let bad = t.path().join("bad");
    small_project(
        &bad,
        &repository,
        &format!("{}/acme/cache:v1", reg.host()),
        "",
    );
    let (code, e) = fails(runner(&bad, &t.path().join("sb"), None).args(["build", "api"]));
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("imgbuild.toml:3:9: `cache`"), "{e}");
    assert!(e.contains("names a tag or digest"), "{e}");
}

#[test]
fn a_fault_proxy_between_runner_and_cache_never_fails_a_build() {
    let reg = Registry::start(Some((USER, PASS)));
    let proxy = FaultProxy::start(
        reg.port,
        0.10,
        ALL,
        Duration::from_secs(3),
        0x5eed_cafe ^ std::process::id() as u64,
    );
    let t = tempfile::tempdir().unwrap();
    let repository = format!("{}/acme/api", reg.host());
    // The cache is reached through the proxy; the image is pushed to the registry directly, so
    // runner B downloads what it takes from the cache (through the faults) and checks it.
    let cache = format!("127.0.0.1:{}/acme/cache", proxy.port);
    let a = t.path().join("a");
    small_project(&a, &repository, &cache, "");
    let mut digest = None;
    let mut hits = 0;
    let runs = 6;
    for i in 0..runs {
        let out = ok(runner(&a, &t.path().join(format!("s{i}")), None)
            .env("IMGBUILD_HTTP_TIMEOUT", "2")
            .env("IMGBUILD_CACHE_TIMEOUT", "2")
            .env("IMGBUILD_REGISTRY_ATTEMPTS", "4")
            .args(["build", "api", "--push", "--json"]));
        let s = json(&out);
        let d = s["digest"].as_str().unwrap().to_string();
        assert_eq!(
            digest.get_or_insert(d.clone()),
            &d,
            "run {i}: {}",
            err(&out)
        );
        hits += s["shared_cache"]["hits"].as_u64().unwrap();
    }
    assert!(
        proxy.stats.faults.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no fault was injected"
    );
    // Faults may cost a hit now and then, not all of them.
    assert!(hits > 0, "no run took a layer from the cache");
}

/// The config (record) of the manifest tagged `tag`, as JSON.
fn record_of(reg: &Registry, repo: &str, tag: &str) -> (Value, Value) {
    let m = manifest(reg, repo, tag);
    let (status, body) = curl(
        reg,
        &[],
        &format!(
            "/v2/{repo}/blobs/{}",
            m["config"]["digest"].as_str().unwrap()
        ),
    );
    assert_eq!(status, 200);
    (m, serde_json::from_slice(&body).unwrap())
}

/// Replaces blob `at` (a JSON pointer into the manifest: `/config` or `/layers/0`) of the
/// record tagged `tag` by `bytes`, updating what names it (the record's `field`, if given).
fn replace_blob(
    reg: &Registry,
    repo: &str,
    tag: &str,
    at: &str,
    bytes: &[u8],
    field: Option<&str>,
) {
    let (mut m, mut rec) = record_of(reg, repo, tag);
    let d = put_blob(reg, repo, bytes);
    *m.pointer_mut(&format!("{at}/digest")).unwrap() = d.clone().into();
    *m.pointer_mut(&format!("{at}/size")).unwrap() = bytes.len().into();
    if let Some(f) = field {
        rec[f] = d.into();
        let rb = serde_json::to_vec(&rec).unwrap();
        m["config"]["digest"] = put_blob(reg, repo, &rb).into();
        m["config"]["size"] = rb.len().into();
    }
    put_manifest(reg, repo, tag, &m);
}

#[test]
fn a_poisoned_or_missing_base_record_falls_back_to_reading_the_base() {
    let reg = Registry::start(Some((USER, PASS)));
    let t = tempfile::tempdir().unwrap();
    let repository = format!("{}/acme/api", reg.host());
    let cache_repo = "acme/cache";
    let cache = format!("{}/{cache_repo}", reg.host());
    let a = t.path().join("a");
    small_project(&a, &repository, &cache, "");
    let sa = json(&ok(
        runner(&a, &t.path().join("sa"), None).args(["build", "api", "--push", "--json"])
    ));
    let base = tags_with(&reg, cache_repo, "base-");
    assert_eq!(base.len(), 1, "{sa}");
    let tag = &base[0];
    let (m, _) = record_of(&reg, cache_repo, tag);
    let good_listing = m["layers"][0]["digest"].clone();
    let (_, body) = curl(
        &reg,
        &[],
        &format!("/v2/{cache_repo}/blobs/{}", good_listing.as_str().unwrap()),
    );
    let mut listing: Value = serde_json::from_slice(&body).unwrap();

    // A push to the cache's registry takes the base's listing as it is (its bytes are not
    // read): a fresh runner, one base hit, no warning.
    let s = json(&ok(
        runner(&a, &t.path().join("sb"), None).args(["build", "api", "--push", "--json"])
    ));
    assert_eq!(s["digest"], sa["digest"]);
    assert_eq!(s["shared_cache"]["base_hits"], 1, "{s}");
    assert_eq!(s["shared_cache"]["warnings"], 0, "{s}");

    // The listing poisoned (a path left out): a build that writes the layout reads the base's
    // bytes anyway, finds that they differ, warns once and rewrites the record.
    listing["nodes"].as_array_mut().unwrap().pop();
    replace_blob(
        &reg,
        cache_repo,
        tag,
        "/layers/0",
        &serde_json::to_vec(&listing).unwrap(),
        Some("listing"),
    );
    let out = ok(runner(&a, &t.path().join("sc"), None).args(["build", "api", "--json"]));
    let s = json(&out);
    let e = err(&out);
    assert_eq!(s["digest"], sa["digest"], "{e}");
    assert_eq!(e.matches("warning: shared cache").count(), 1, "{e}");
    assert!(
        e.contains("the record of base layer")
            && e.contains("its listing does not match the layer blob"),
        "{e}"
    );
    assert_eq!(s["shared_cache"]["base_hits"], 0, "{s}");
    assert_eq!(
        record_of(&reg, cache_repo, tag).0["layers"][0]["digest"],
        good_listing,
        "the record was written again"
    );

    // A record that names another layer is ignored by a pushing runner, which reads the base.
    let (_, mut rec) = record_of(&reg, cache_repo, tag);
    rec["diff_id"] = format!("sha256:{}", "0".repeat(64)).into();
    replace_blob(
        &reg,
        cache_repo,
        tag,
        "/config",
        &serde_json::to_vec(&rec).unwrap(),
        None,
    );
    let out = ok(runner(&a, &t.path().join("sd"), None).args(["build", "api", "--push", "--json"]));
    let s = json(&out);
    let e = err(&out);
    assert_eq!(s["digest"], sa["digest"], "{e}");
    assert_eq!(e.matches("warning: shared cache").count(), 1, "{e}");
    assert!(e.contains("it is the record of another layer"), "{e}");

    // The record deleted: the next runner reads the base, without a warning, and writes it.
    let (_, digest) = {
        let (status, body) = curl(
            &reg,
            &[
                "-I",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
            ],
            &format!("/v2/{cache_repo}/manifests/{tag}"),
        );
        assert_eq!(status, 200);
        let head = String::from_utf8_lossy(&body).into_owned();
        let d = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("docker-content-digest: ")
                    .map(|d| d.trim().to_string())
            })
            .unwrap();
        (status, d)
    };
    let (status, _) = curl(
        &reg,
        &["-X", "DELETE"],
        &format!("/v2/{cache_repo}/manifests/{digest}"),
    );
    assert_eq!(status, 202);
    assert!(tags_with(&reg, cache_repo, "base-").is_empty());
    let out = ok(runner(&a, &t.path().join("se"), None).args(["build", "api", "--push", "--json"]));
    let s = json(&out);
    assert_eq!(s["digest"], sa["digest"]);
    assert_eq!(s["shared_cache"]["warnings"], 0, "{}", err(&out));
    assert_eq!(s["shared_cache"]["base_hits"], 0, "{s}");
    assert_eq!(tags_with(&reg, cache_repo, "base-"), base);
}

/// A PEP 517 backend in the sdist itself that writes a valid pure-Python wheel of `tiny` 1.0.
const TINY_BACKEND: &str = r#"import base64, hashlib, os, zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = 'tiny-1.0-py3-none-any.whl'
    files = {
        'tiny.py': b'VALUE = 42\n',
        'tiny-1.0.dist-info/METADATA': b'Metadata-Version: 2.1\nName: tiny\nVersion: 1.0\n',
        'tiny-1.0.dist-info/WHEEL': b'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
    }
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), 'w') as z:
        for path, data in files.items():
            z.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), data)
            h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
            record.append(f'{path},sha256={h},{len(data)}')
        record.append('tiny-1.0.dist-info/RECORD,,')
        z.writestr(zipfile.ZipInfo('tiny-1.0.dist-info/RECORD', (1980, 1, 1, 0, 0, 0)), '\n'.join(record) + '\n')
    return name
"#;

#[test]
fn built_wheels_and_the_python_target_are_shared_and_a_bad_target_record_is_ignored() {
    require_tool("runc");
    let reg = Registry::start(Some((USER, PASS)));
    let t = tempfile::tempdir().unwrap();
    let repository = format!("{}/acme/app", reg.host());
    let cache_repo = "acme/cache";
    let cache = format!("{}/{cache_repo}", reg.host());
    // A local sdist `tiny` 1.0 locked in pylock.toml, built by its own backend (no build
    // requirements: no index), on the real Debian python3 base.
    let a = t.path().join("a");
    let src = t.path().join("src/tiny-1.0");
    write_text(
        &src.join("pyproject.toml"),
        "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n",
    );
    write_text(&src.join("backend.py"), TINY_BACKEND);
    fs::create_dir_all(&a).unwrap();
    ok(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "-czf",
        ])
        .arg(a.join("tiny-1.0.tar.gz"))
        .arg("-C")
        .arg(t.path().join("src"))
        .arg("tiny-1.0"));
    let sha = sha256_hex(fs::read(a.join("tiny-1.0.tar.gz")).unwrap());
    write_text(
        &a.join("pylock.toml"),
        &format!("lock-version = \"1.0\"\ncreated-by = \"test\"\n\n[[packages]]\nname = \"tiny\"\nversion = \"1.0\"\nsdist = {{ name = \"tiny-1.0.tar.gz\", path = \"tiny-1.0.tar.gz\", hashes = {{ sha256 = \"{sha}\" }} }}\n"),
    );
    // No build requirement is fetched: the index is a closed port.
    python_app_spec(
        &a,
        &format!(
            "lock = \"pylock.toml\", require = [\"tiny\"], index_url = \"{}\"",
            closed_index()
        ),
        &[],
    );
    let toml = fs::read_to_string(a.join("imgbuild.toml"))
        .unwrap()
        .replace(
            "[images.app]\n",
            &format!("[images.app]\nrepository = \"{repository}\"\n"),
        );
    fs::write(
        a.join("imgbuild.toml"),
        format!("[defaults]\ncache = \"{cache}\"\n\n{toml}"),
    )
    .unwrap();

    // Runner A builds the wheel (runc) and shares it, with the python target it detected.
    let out = ok(runner(&a, &t.path().join("sa"), None).args(["build", "app", "--push", "--json"]));
    let e = err(&out);
    assert!(
        e.contains("built tiny-1.0-py3-none-any.whl from the sdist of tiny 1.0"),
        "{e}"
    );
    let wheels = tags_with(&reg, cache_repo, "python-sdist-wheel-");
    assert_eq!(wheels.len(), 1, "{:?}", tags(&reg, cache_repo));
    let targets = tags_with(&reg, cache_repo, "python-target-");
    assert_eq!(targets.len(), 1);

    // Runner B, another store, the same commit (imgbuild.lock holds the build pins) compressed
    // with zstd: the layer is new, its wheel is not — downloaded, checked, installed, not built.
    let b = t.path().join("b");
    ok(Command::new("cp").arg("-a").arg(&a).arg(&b));
    let out = ok(runner(&b, &t.path().join("sb"), None).args([
        "build",
        "app",
        "--push",
        "--json",
        "--compression",
        "zstd",
    ]));
    let s = json(&out);
    let e = err(&out);
    assert_eq!(sources(&s), ["built"], "{e}");
    assert!(
        !e.contains("from the sdist of"),
        "B built the wheel again: {e}"
    );
    // The python target and the wheel.
    assert_eq!(s["shared_cache"]["record_hits"], 2, "{s}\n{e}");
    assert_eq!(s["shared_cache"]["warnings"], 0, "{e}");
    assert!(
        s["shared_cache"]["downloaded_bytes"].as_u64().unwrap() > 0,
        "{s}"
    );
    ok(runner(&b, &t.path().join("sb"), None).args(["verify", "app"]));

    // A python target record whose interpreter is not in the base is ignored with one warning:
    // the target is detected from the base and the record written again.
    let (_, mut rec) = record_of(&reg, cache_repo, &targets[0]);
    let good = rec["record"]["interpreter"].clone();
    rec["record"]["interpreter"] = "/usr/bin/python9".into();
    replace_blob(
        &reg,
        cache_repo,
        &targets[0],
        "/config",
        &serde_json::to_vec(&rec).unwrap(),
        None,
    );
    let out = ok(runner(&b, &t.path().join("sc"), None).args(["build", "app", "--push", "--json"]));
    let s = json(&out);
    let e = err(&out);
    assert_eq!(e.matches("warning: shared cache").count(), 1, "{e}");
    assert!(
        e.contains("is ignored: its interpreter /usr/bin/python9 is not in the base image"),
        "{e}"
    );
    assert_eq!(sources(&s), ["shared cache"], "{e}");
    assert_eq!(
        record_of(&reg, cache_repo, &targets[0]).1["record"]["interpreter"],
        good
    );
}

#[test]
fn a_two_platform_image_takes_each_platforms_base_facts_and_layers_from_the_shared_cache() {
    let reg = Registry::start(Some((USER, PASS)));
    let t = tempfile::tempdir().unwrap();
    let cache_repo = "acme/cache";
    let cache = format!("{}/{cache_repo}", reg.host());
    // A base of two platforms: two imports of a one-file root filesystem into one index.
    let bases = t.path().join("bases");
    for arch in ["amd64", "arm64"] {
        import_tiny_base(
            &mut runner(t.path(), &t.path().join("import"), None),
            t.path(),
            arch,
            &bases,
        );
    }
    let p = t.path().join("proj");
    write_text(&p.join("app/hello.txt"), "hi\n");
    write_text(
        &p.join("imgbuild.toml"),
        &format!(
            "[defaults]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\ncache = \"{cache}\"\n[images.t]\nrepository = \"{}/acme/t\"\nbase = \"oci:{}:tiny\"\ncmd = [\"/app/hello.txt\"]\nstart_check = false\n[[images.t.layers]]\nname = \"app\"\nfiles = [{{ from = \"app\", to = \"/app\" }}]\n",
            reg.host(),
            bases.display()
        ),
    );
    let sources_of = |s: &Value| -> Vec<String> {
        s["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["layers"].as_array().unwrap().clone())
            .map(|l| l["source"].as_str().unwrap().to_string())
            .collect()
    };
    let sa = json(&ok(
        runner(&p, &t.path().join("sa"), None).args(["build", "t", "--push", "--json"])
    ));
    // The platforms build side by side: whichever reaches the shared files layer first
    // writes it, the other takes it from the local cache.
    let mut first = sources_of(&sa);
    first.sort();
    assert_eq!(first, ["built", "local cache"], "{sa}");
    // One record for the files layer (keyed without the platform), one per platform's base layer.
    assert_eq!(tags_with(&reg, cache_repo, "layer-").len(), 1);
    assert_eq!(tags_with(&reg, cache_repo, "base-").len(), 2);

    let out = ok(runner(&p, &t.path().join("sb"), None).args(["build", "t", "--push", "--json"]));
    let sb = json(&out);
    assert_eq!(sb["digest"], sa["digest"], "{}", err(&out));
    assert_eq!(sources_of(&sb), ["shared cache", "shared cache"], "{sb}");
    assert_eq!(sb["shared_cache"]["base_hits"], 2, "{sb}");
    assert_eq!(sb["shared_cache"]["warnings"], 0, "{}", err(&out));
    assert_eq!(sb["uploaded_bytes"], 0, "{sb}");
}
