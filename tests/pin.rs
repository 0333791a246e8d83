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
        serde_json::json!({"image": image, "repository": repo, "digest": d, "reference": "", "layers": [], "uploaded_bytes": 0, "skipped_blobs": 0, "timings": {}}).to_string()
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
            "malformed YAML",
            2,
        ),
        (
            "services:\n  db:\n    image: postgres:16\n  tool:\n    build: .\n",
            "no service in",
            2,
        ),
        (
            "services:\n  api:\n    image: other.example.com/acme/job-agent-api:latest\n",
            "no service in",
            2,
        ),
    ];
    for (text, want, code) in cases {
        fs::write(t.path().join("c.yml"), text).unwrap();
        let (c, err) = fails(
            imgbuild(t.path())
                .args(["pin", "c.yml", "--from-json"])
                .arg(&json),
        );
        assert_eq!(c, code, "{err}");
        assert!(err.contains(want), "expected `{want}` in: {err}");
        assert_eq!(fs::read_to_string(t.path().join("c.yml")).unwrap(), text);
    }
    // Malformed YAML names the file and line.
    fs::write(
        t.path().join("c.yml"),
        "services:\n  api:\n    image: [unclosed\n",
    )
    .unwrap();
    let err = fails(
        imgbuild(t.path())
            .args(["pin", "c.yml", "--from-json"])
            .arg(&json),
    )
    .1;
    assert!(
        err.contains("c.yml:4:") || err.contains("c.yml:3:"),
        "{err}"
    );
}

#[test]
fn pin_before_any_push_says_what_to_do() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("imgbuild.toml"), format!("[images.api]\nrepository = \"{API}\"\nbase = \"scratch\"\n[[images.api.layers]]\nname = \"d\"\nensure_dirs = [\"/app\"]\n")).unwrap();
    fs::write(
        t.path().join("c.yml"),
        format!("services:\n  api:\n    image: {API}:latest\n"),
    )
    .unwrap();
    let (code, err) = fails(imgbuild(t.path()).args(["pin", "c.yml"]));
    assert_eq!(code, 2);
    assert!(err.contains("no image has been pushed yet"), "{err}");
    ok(imgbuild(t.path()).arg("api"));
    let (_, err) = fails(imgbuild(t.path()).args(["pin", "c.yml"]));
    assert!(err.contains("built but not pushed: api"), "{err}");
}
