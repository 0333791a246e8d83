//! Faults and secrets: pushes and pulls through a proxy that injects errors, resets, stalls,
//! truncation and corrupt blobs; credentials that never leak; bases that cannot write outside.
//!
//! `IMGBUILD_FAULT_RUNS` sets the number of push+pull rounds (CI: a few; `just soak`: 500, that
//! is 1000 pushes and pulls), `IMGBUILD_FAULT_SECONDS` bounds the run.

mod common;
use common::faultproxy::{FaultProxy, ALL};
use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn project(dir: &Path, repository: &str) {
    write_project(
        dir,
        &[("app/main.sh", b"echo hello\n")],
        &api_toml(repository, &busybox_ref()),
    );
}

/// A plain HTTP/1.1 request to the registry itself (no proxy); returns (status, body).
fn direct(port: u16, method: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let status = String::from_utf8_lossy(&resp[9..12]).parse().unwrap_or(0);
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(resp.len());
    (status, resp[at..].to_vec())
}

/// Every blob a pushed manifest names is in the registry.
fn complete(port: u16, repo: &str, manifest_digest: &str) -> Result<(), String> {
    let (status, body) = direct(
        port,
        "GET",
        &format!("/v2/{repo}/manifests/{manifest_digest}"),
    );
    if status != 200 {
        return Err(format!("manifest {manifest_digest}: {status}"));
    }
    if digest_of(&body) != manifest_digest {
        return Err(format!("manifest {manifest_digest} has other bytes"));
    }
    let m: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    // An index (the referrers tag schema's list of an image's SBOM and provenance): every
    // manifest it lists is there.
    if let Some(listed) = m["manifests"].as_array() {
        for d in listed {
            let d = d["digest"].as_str().unwrap();
            let (status, _) = direct(port, "HEAD", &format!("/v2/{repo}/manifests/{d}"));
            if status != 200 {
                return Err(format!(
                    "index {manifest_digest} lists manifest {d}, which the registry does not have ({status})"
                ));
            }
        }
        return Ok(());
    }
    let blobs = std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap().iter());
    for b in blobs {
        let d = b["digest"].as_str().unwrap();
        let (status, _) = direct(port, "HEAD", &format!("/v2/{repo}/blobs/{d}"));
        if status != 200 {
            return Err(format!("manifest {manifest_digest} names blob {d}, which the registry does not have ({status})"));
        }
    }
    Ok(())
}

fn clean_failure(out: &std::process::Output) -> Result<(), String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap_or(-1);
    if (code == 1 || code == 2) && err.starts_with("error: ") && !err.contains("panicked") {
        Ok(())
    } else {
        Err(format!("unclean failure (exit {code}): {err}"))
    }
}

#[test]
fn pushes_and_pulls_through_injected_faults_never_publish_or_accept_a_broken_image() {
    let runs: usize = std::env::var("IMGBUILD_FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let budget = Duration::from_secs(
        std::env::var("IMGBUILD_FAULT_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(900),
    );
    let reg = Registry::start(None);
    let proxy = FaultProxy::start(
        reg.port,
        0.10,
        ALL,
        Duration::from_secs(3),
        0x1234_5678 ^ std::process::id() as u64,
    );
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let repo = "soak/api";
    project(d, &format!("127.0.0.1:{}/{repo}", proxy.port));
    let env = |c: &mut Command| {
        c.env("IMGBUILD_HTTP_TIMEOUT", "2")
            .env("IMGBUILD_REGISTRY_ATTEMPTS", "4")
            .env("HOME", d.join(".home"));
    };
    let (mut pushed, mut push_failed, mut pulled, mut pull_failed, mut corrupt) =
        (0, 0, 0, 0, Vec::new());
    let start = Instant::now();
    let mut last_good: Option<String> = None;
    for i in 0..runs {
        if start.elapsed() > budget {
            eprintln!("time budget reached after {i} rounds");
            break;
        }
        fs::write(d.join("app/round.txt"), format!("round {i}\n")).unwrap();
        let mut c = imgbuild(d);
        env(&mut c);
        let out = c
            .args(["build", "api", "--push", "--json"])
            .output()
            .unwrap();
        if out.status.success() {
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let digest = s["digest"].as_str().unwrap().to_string();
            match complete(reg.port, repo, &digest) {
                Ok(()) => pushed += 1,
                Err(e) => corrupt.push(format!("round {i}: push reported success but {e}")),
            }
            last_good = Some(digest);
        } else {
            clean_failure(&out).unwrap_or_else(|e| panic!("round {i} push: {e}"));
            eprintln!(
                "round {i}: push failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            push_failed += 1;
        }
        let Some(digest) = &last_good else { continue };
        // A pull into an empty store, through the proxy: every blob is fetched and checked.
        let mut c = imgbuild(d);
        env(&mut c);
        let out = c
            .env("IMGBUILD_CACHE", d.join(format!("pull-store-{i}")))
            .args([
                "verify",
                &format!("127.0.0.1:{}/{repo}@{digest}", proxy.port),
            ])
            .output()
            .unwrap();
        let _ = fs::remove_dir_all(d.join(format!("pull-store-{i}")));
        if out.status.success() {
            pulled += 1;
        } else {
            clean_failure(&out).unwrap_or_else(|e| panic!("round {i} pull: {e}"));
            eprintln!(
                "round {i}: pull failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            pull_failed += 1;
        }
    }
    // No manifest in the registry names a blob it lacks.
    let revisions = reg.dir.path().join(format!(
        "data/docker/registry/v2/repositories/{repo}/_manifests/revisions/sha256"
    ));
    for e in fs::read_dir(&revisions)
        .map(|r| r.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let digest = format!("sha256:{}", e.file_name().to_string_lossy());
        if let Err(e) = complete(reg.port, repo, &digest) {
            corrupt.push(e);
        }
    }
    let faults = proxy.stats.faults.load(std::sync::atomic::Ordering::SeqCst);
    let requests = proxy
        .stats
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "fault soak: {} rounds, {requests} requests, {faults} faults injected {:?}; pushes: {pushed} succeeded, {push_failed} failed cleanly; pulls: {pulled} verified, {pull_failed} failed cleanly; corrupt: {}",
        pushed + push_failed,
        proxy.stats.by_kind.lock().unwrap(),
        corrupt.len()
    );
    assert!(corrupt.is_empty(), "{corrupt:#?}");
    assert!(faults > 0, "the proxy injected faults");
    assert!(
        pushed > 0 && pulled > 0,
        "most rounds get through a 10% fault rate with retries"
    );
}

/// Walks every regular file under `dir`.
#[test]
fn the_registry_password_appears_nowhere_imgbuild_writes() {
    let password = "s3cret-Pa55word-77";
    let reg = Registry::start(Some(("ci", password)));
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    project(d, &format!("{}/acme/api", reg.host()));
    let run = |args: &[&str]| {
        let mut c = imgbuild(d);
        c.env("HOME", d.join(".home"))
            .env("IMGBUILD_REGISTRY_USER", "ci")
            .env("IMGBUILD_REGISTRY_PASSWORD", password);
        c.args(args).output().unwrap()
    };
    let mut transcript = Vec::new();
    for args in [
        &["build", "api", "--push", "--json", "-v"][..],
        &["push", "api", "--json"],
        &["verify", "api"],
    ] {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        transcript.extend(out.stdout);
        transcript.extend(out.stderr);
    }
    // A wrong password must not echo either.
    let mut c = imgbuild(d);
    let out = c
        .env("HOME", d.join(".home"))
        .env("IMGBUILD_REGISTRY_USER", "ci")
        .env("IMGBUILD_REGISTRY_PASSWORD", "wrong-Pa55-99")
        .args(["push", "api"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") || err.contains("unauthorized") || err.contains("denied"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-Pa55-99"),
        "a rejected password is not printed: {err}"
    );
    let needle = password.as_bytes();
    let b64 = {
        // Basic credentials travel base64-encoded: that form must not leak either.
        use std::process::Stdio;
        let mut p = Command::new("base64")
            .arg("-w0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        p.stdin
            .take()
            .unwrap()
            .write_all(format!("ci:{password}").as_bytes())
            .unwrap();
        p.wait_with_output().unwrap().stdout
    };
    let leaks = |bytes: &[u8]| bytes_contain(bytes, needle) || bytes_contain(bytes, &b64);
    assert!(
        !leaks(&transcript),
        "stdout/stderr/--json carry the password"
    );
    // The store (blobs: configs, history, layers; records; logs) and the project's state.
    for f in files_under(d) {
        let bytes = fs::read(&f).unwrap();
        let text = if f.extension().is_some_and(|e| e == "gz") || bytes.starts_with(&[0x1f, 0x8b]) {
            let mut v = Vec::new();
            let _ = flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut v);
            v
        } else {
            bytes
        };
        assert!(!leaks(&text), "{} contains the password", f.display());
    }
}

#[test]
fn an_untrusted_base_cannot_make_imgbuild_write_outside_its_directories() {
    // A base whose layer holds a symlink to a host directory, then a file "through" it.
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let outside = d.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let mut raw = Vec::new();
    {
        let mut b = tar::Builder::new(&mut raw);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "escape", &outside).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "escape/pwned", &b"owned"[..])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, "bin", std::io::empty()).unwrap();
        b.finish().unwrap();
    }
    fs::write(d.join("evil.tar"), &raw).unwrap();
    // Importing it as a base keeps entries as entries: nothing is written through the link.
    ok(imgbuild(d).args(["base", "import", "evil.tar", "--output", "oci:evil:1"]));
    fs::create_dir_all(d.join("p/app")).unwrap();
    fs::write(d.join("p/app/x"), "x").unwrap();
    fs::write(d.join("p/imgbuild.toml"), "[images.a]\nbase = \"oci:../evil:1\"\nsmoke = [\"true\"]\n[[images.a.layers]]\nname = \"app\"\nfiles = [{ from = \"app\", to = \"/app\" }]\n").unwrap();
    ok(imgbuild(&d.join("p")).arg("a"));
    ok(imgbuild(&d.join("p")).args(["verify", "a"]));
    // `imgbuild test` unpacks the image to run it: it must not follow the link out.
    let _ = imgbuild(&d.join("p")).args(["test", "a"]).output().unwrap();
    assert!(
        !outside.join("pwned").exists(),
        "a layer wrote through a symlink to the host"
    );
}

/// Registries that always fail one way: each gives its clear error, nothing is half-written.
/// (Rows of tests/BAD_INPUT.md.)
#[test]
fn registries_that_always_fail_give_clear_errors() {
    use common::faultproxy::Fault;
    let reg = Registry::start(None);
    let cases: &[(&str, Fault, &str, &str)] = &[
        ("registry-5xx-forever", Fault::Status(500), "push", "500"),
        ("registry-403", Fault::Status(403), "push", "403"),
        (
            "registry-lying-content-length",
            Fault::Truncate,
            "pull",
            "error",
        ),
    ];
    // An image in the registry to pull.
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    project(d, &format!("{}/bad/api", reg.host()));
    let s: serde_json::Value = serde_json::from_slice(
        &ok(imgbuild(d)
            .args(["build", "api", "--push", "--json"])
            .env("HOME", d.join(".home")))
        .stdout,
    )
    .unwrap();
    let digest = s["digest"].as_str().unwrap().to_string();
    let mut failures = Vec::new();
    for (id, fault, op, want) in cases {
        let proxy = FaultProxy::start(reg.port, 1.0, &[*fault], Duration::from_secs(1), 7);
        let p = tempfile::tempdir().unwrap();
        project(p.path(), &format!("127.0.0.1:{}/bad/api", proxy.port));
        let mut c = imgbuild(p.path());
        c.env("HOME", p.path().join(".home"))
            .env("IMGBUILD_REGISTRY_ATTEMPTS", "2")
            .env("IMGBUILD_HTTP_TIMEOUT", "5");
        let out = match *op {
            "push" => c.args(["build", "api", "--push"]).output().unwrap(),
            _ => c
                .args([
                    "verify",
                    &format!("127.0.0.1:{}/bad/api@{digest}", proxy.port),
                ])
                .output()
                .unwrap(),
        };
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || clean_failure(&out).is_err() || !err.contains(want) {
            failures.push(format!(
                "{id}: exit {:?}, want `{want}` in: {err}",
                out.status.code()
            ));
        }
        let temps: Vec<_> = fs::read_dir(p.path().join(".store/tmp"))
            .map(|r| r.flatten().collect())
            .unwrap_or_default();
        if !temps.is_empty() {
            failures.push(format!("{id}: temp files left"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
