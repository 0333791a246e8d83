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
    assert_eq!(sa["shared_cache"]["records_written"], 2, "{sa}");
    let written = tags(&reg, cache_repo);
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(
        written.iter().all(|t| t.starts_with("layer-")),
        "{written:?}"
    );

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
    assert_eq!(tags(&reg, cache_repo).len(), 3);

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
    let all = tags(&reg, cache_repo);
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
    assert_eq!(s["shared_cache"]["records_written"], 2);
    assert_eq!(tags(&reg, "acme/cache").len(), 2);
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
