//! `imgbuild pin`: compose files get `repository@sha256:…` images and no other change.

mod common;
use common::*;
use std::fs;
use std::path::Path;

const API: &str = "registry.example.com/acme/job-agent-api";
const WEB: &str = "registry.example.com/acme/job-agent-frontend";

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// A build summary as `imgbuild build --json` prints it.
fn summaries(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("builds.json");
    let line = |image: &str, repo: &str, d: String| {
        serde_json::json!({"image": image, "repository": repo, "digest": d, "reference": format!("{repo}@{d}"), "layers": [], "uploaded_bytes": 0, "skipped_blobs": 0, "timings": {}}).to_string()
    };
    fs::write(
        &p,
        format!(
            "{}\n{}\n",
            line("api", API, digest('a')),
            line("frontend", WEB, digest('b'))
        ),
    )
    .unwrap();
    p
}

fn compose_copy(dir: &Path) -> (std::path::PathBuf, String) {
    let src =
        fs::read_to_string(repo().join("fixtures/job-agent/docker-compose.prod.yml")).unwrap();
    let p = dir.join("docker-compose.prod.yml");
    fs::write(&p, &src).unwrap();
    (p, src)
}

#[test]
fn pin_changes_only_image_lines_and_check_reports_staleness() {
    let t = tempfile::tempdir().unwrap();
    let json = summaries(t.path());
    let (file, before) = compose_copy(t.path());
    let pin = |extra: &[&str]| {
        let mut c = imgbuild(t.path());
        c.args(["pin", "docker-compose.prod.yml", "--from-json"])
            .arg(&json)
            .args(extra);
        c
    };
    let (code, err) = fails(&mut pin(&["--check"]));
    assert_eq!(code, 1, "--check fails before pinning: {err}");
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        before,
        "--check writes nothing"
    );

    let out = ok(&mut pin(&[]));
    let after = fs::read_to_string(&file).unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("skipped: postgres"), "{report}");
    let (b, a): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    assert_eq!(b.len(), a.len(), "no line added or removed");
    let changed: Vec<(&str, &str)> = b
        .iter()
        .zip(&a)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| (*x, *y))
        .collect();
    assert_eq!(
        changed.len(),
        4,
        "api, migrate, worker and frontend images: {changed:#?}"
    );
    for (old, new) in &changed {
        assert!(
            old.trim_start().starts_with("image:") && new.trim_start().starts_with("image:"),
            "{old} → {new}"
        );
    }
    // Quoting style and trailing comments are kept.
    assert!(after.contains(&format!("image: \"{API}@{}\"", digest('a'))));
    assert!(after.contains(&format!("image: '{WEB}@{}'", digest('b'))));
    assert!(after.contains(&format!(
        "image: {API}@{}   # same image as api: alembic must be in it",
        digest('a')
    )));
    ok(&mut pin(&["--check"]));
    // Pinning again is a no-op.
    ok(&mut pin(&[]));
    assert_eq!(fs::read_to_string(&file).unwrap(), after);
}

#[test]
fn variables_go_to_the_env_file() {
    let t = tempfile::tempdir().unwrap();
    let json = summaries(t.path());
    fs::write(
        t.path().join("c.yml"),
        format!("services:\n  api:\n    image: ${{API_IMAGE:-{API}:latest}}\n"),
    )
    .unwrap();
    fs::write(
        t.path().join(".env.images"),
        "# images\nOTHER=1\nAPI_IMAGE=old\n",
    )
    .unwrap();
    ok(imgbuild(t.path())
        .args(["pin", "c.yml", "--env-file", ".env.images", "--from-json"])
        .arg(&json));
    assert_eq!(
        fs::read_to_string(t.path().join(".env.images")).unwrap(),
        format!("# images\nOTHER=1\nAPI_IMAGE={API}@{}\n", digest('a'))
    );
    assert!(
        fs::read_to_string(t.path().join("c.yml"))
            .unwrap()
            .contains("${API_IMAGE:-"),
        "the compose file keeps its variable"
    );
}

#[test]
fn bad_compose_input_is_a_clear_error_and_the_file_is_untouched() {
    let t = tempfile::tempdir().unwrap();
    let json = summaries(t.path());
    let cases = [
        (
            "services:\n  api:\n    image: [unclosed\n",
            "c.yml:4:1: malformed YAML: while parsing a flow sequence",
        ),
        (
            "services:\n  api:\n    image: x\n   bad: y\n  web:\n    image: z\n",
            "c.yml:4:4: malformed YAML: while parsing a block mapping, did not find expected key",
        ),
        (
            "services:\n  api:\n    image: a\n    image: b\n",
            "c.yml:4: malformed YAML: key `image` is given twice in one mapping (first at line 3)",
        ),
        ("", "c.yml is empty"),
        (
            "services:\n  db:\n    image: postgres:16\n  tool:\n    build: .\n",
            "no service in",
        ),
        (
            "services:\n  tool:\n    build: .\n",
            "(services: tool (`build:` only); pushed repositories: registry.example.com/acme/job-agent-api, registry.example.com/acme/job-agent-frontend)",
        ),
        (
            "services:\n  api:\n    image: other.example.com/acme/job-agent-api:latest\n",
            "no service in",
        ),
        (
            "services:\n  api:\n    image: other.example.com/acme/job-agent-api:latest\n",
            "hint: service `api` names other.example.com/acme/job-agent-api, but imgbuild pushed registry.example.com/acme/job-agent-api: the same repository on another registry host",
        ),
    ];
    for (text, want) in cases {
        fs::write(t.path().join("c.yml"), text).unwrap();
        for check in [false, true] {
            let mut cmd = imgbuild(t.path());
            cmd.args(["pin", "c.yml", "--from-json"]).arg(&json);
            if check {
                cmd.arg("--check");
            }
            let (c, err) = fails(&mut cmd);
            assert_eq!(c, 2, "{err}");
            assert!(err.contains(want), "expected `{want}` in: {err}");
            assert_eq!(fs::read_to_string(t.path().join("c.yml")).unwrap(), text);
        }
    }
}

#[test]
fn a_build_only_service_beside_a_pinned_one_is_reported_and_left_alone() {
    let t = tempfile::tempdir().unwrap();
    let json = summaries(t.path());
    let text = format!("services:\n  api:\n    image: {API}:latest\n  tool:\n    build: ./tool\n");
    fs::write(t.path().join("c.yml"), &text).unwrap();
    let out = ok(imgbuild(t.path())
        .args(["pin", "c.yml", "--from-json"])
        .arg(&json));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped: tool has only `build:`, no image to pin"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(t.path().join("c.yml")).unwrap(),
        text.replace(":latest", &format!("@{}", digest('a')))
    );
}

#[test]
fn a_summary_of_a_build_that_was_not_pushed_is_not_pinned() {
    let t = tempfile::tempdir().unwrap();
    let json = t.path().join("build.json");
    fs::write(
        &json,
        serde_json::json!({"image": "api", "repository": API, "digest": digest('a'), "reference": "oci:/p/.imgbuild/oci:api", "layers": [], "uploaded_bytes": 0, "skipped_blobs": 0, "timings": {}}).to_string() + "\n",
    )
    .unwrap();
    let (file, before) = compose_copy(t.path());
    let (code, err) = fails(
        imgbuild(t.path())
            .args(["pin", "docker-compose.prod.yml", "--from-json"])
            .arg(&json),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("build.json:1: image `api` was built ({}) but not pushed (its reference is `oci:/p/.imgbuild/oci:api`)", digest('a'))), "{err}");
    assert!(
        err.contains("hint: pin from the output of `imgbuild build api --push --json`"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), before);
    // `--check` may compare the file against what the source builds, pushed or not.
    let (code, err) = fails(
        imgbuild(t.path())
            .args(["pin", "docker-compose.prod.yml", "--check", "--from-json"])
            .arg(&json),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("3 service(s) in") && err.contains("are not pinned to the current digests"),
        "{err}"
    );
}

#[test]
fn pin_before_any_push_says_what_to_do() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("imgbuild.toml"), format!("[images.api]\nrepository = \"{API}\"\nbase = \"scratch\"\n[[images.api.layers]]\nname = \"d\"\nensure_dirs = [\"/app\"]\n")).unwrap();
    let text = format!("services:\n  api:\n    image: {API}:latest\n");
    fs::write(t.path().join("c.yml"), &text).unwrap();
    let (code, err) = fails(imgbuild(t.path()).args(["pin", "c.yml"]));
    assert_eq!(code, 2);
    assert!(err.contains("no image has been pushed yet"), "{err}");
    ok(imgbuild(t.path()).arg("api"));
    let (code, err) = fails(imgbuild(t.path()).args(["pin", "c.yml"]));
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("has not been pushed, and api uses {API}"))
            && err.contains("hint: run `imgbuild push api`"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(t.path().join("c.yml")).unwrap(), text);
    // A compose file that does not use it: nothing was pushed, and the hint says what was built.
    fs::write(
        t.path().join("d.yml"),
        "services:\n  db:\n    image: postgres:16\n",
    )
    .unwrap();
    let (_, err) = fails(imgbuild(t.path()).args(["pin", "d.yml"]));
    assert!(
        err.contains("no image has been pushed yet") && err.contains("built but not pushed: api"),
        "{err}"
    );
}

/// A push, then a rebuild that was not pushed: pinning would pin the older push (or nothing),
/// so it is refused, naming the services; the record is read without the image's store.
#[test]
fn pin_after_a_rebuild_that_was_not_pushed_is_refused() {
    let reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let repo = format!("{}/acme/api", reg.host());
    fs::create_dir_all(t.path().join("app")).unwrap();
    fs::write(t.path().join("app/v"), "1\n").unwrap();
    fs::write(t.path().join("imgbuild.toml"), format!("[images.api]\nrepository = \"{repo}\"\nbase = \"scratch\"\n[[images.api.layers]]\nname = \"app\"\nfiles = [{{ from = \"app\", to = \"/app\" }}]\n")).unwrap();
    let text = format!(
        "services:\n  api:\n    image: {repo}:latest\n  migrate:\n    image: {repo}:latest\n"
    );
    fs::write(t.path().join("c.yml"), &text).unwrap();
    let pushed = stdout(&ok(imgbuild(t.path()).args(["api", "--push"])));
    ok(imgbuild(t.path())
        .args(["pin", "c.yml"])
        .env("IMGBUILD_CACHE", t.path().join("elsewhere")));
    let pinned = fs::read_to_string(t.path().join("c.yml")).unwrap();
    assert_eq!(pinned, text.replace(&format!("{repo}:latest"), &pushed));

    fs::write(t.path().join("app/v"), "2\n").unwrap();
    let rebuilt = stdout(&ok(imgbuild(t.path()).arg("api")));
    for check in [false, true] {
        let mut cmd = imgbuild(t.path());
        cmd.args(["pin", "c.yml"]);
        if check {
            cmd.arg("--check");
        }
        let (code, err) = fails(&mut cmd);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&format!("the last build of `api` ({rebuilt}) has not been pushed, and api, migrate use {repo}; pinning now would not pin that build")), "{err}");
        assert!(err.contains("hint: run `imgbuild push api`"), "{err}");
        assert_eq!(fs::read_to_string(t.path().join("c.yml")).unwrap(), pinned);
    }
    ok(imgbuild(t.path()).args(["push", "api"]));
    let (code, _) = fails(imgbuild(t.path()).args(["pin", "c.yml", "--check"]));
    assert_eq!(code, 1);
    ok(imgbuild(t.path()).args(["pin", "c.yml"]));
    assert!(fs::read_to_string(t.path().join("c.yml"))
        .unwrap()
        .contains(&rebuilt));
}
