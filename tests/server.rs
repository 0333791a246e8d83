//! The image runs on the server as it ran in `imgbuild test` (issue 12): the start command is
//! verified at build time, and smoke lines run the way docker runs them (capabilities, open
//! files, HOME, ENTRYPOINT, read-only root, the healthcheck), on a real Debian base with real
//! nginx and node.

mod common;
use common::*;
use std::fs;
use std::path::Path;

fn project(dir: &Path, image: &str) {
    write_project(
        dir,
        &[("app/run.sh", b"#!/bin/sh\necho run\n")],
        &format!("{image}\n[[images.web.layers]]\nname = \"app\"\nfiles = [{{ from = \"app\", to = \"/app\" }}]\n"),
    );
}

fn web_base() -> String {
    format!("oci:{}:bookworm", debian_web_base().display())
}

fn test_out(dir: &Path) -> (i32, String) {
    let out = imgbuild(dir).args(["test", "web"]).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_start_command_the_image_cannot_run_fails_the_build() {
    let t = tempfile::tempdir().unwrap();
    // The incident's class: `node` on a base without node.
    project(
        t.path(),
        &format!(
            "[images.web]\nbase = \"{}\"\ncmd = [\"node\", \"server.js\"]",
            busybox_ref()
        ),
    );
    let (code, err) = fails(imgbuild(t.path()).arg("web"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("image config: cmd `node` is not in any PATH directory of the image (PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)"),
        "{err}"
    );
    assert!(
        !t.path().join(".imgbuild/oci/index.json").exists(),
        "nothing written"
    );

    // `sh -c` strings are checked through the shell.
    project(
        t.path(),
        &format!(
            "[images.web]\nbase = \"{}\"\ncmd = [\"/bin/sh\", \"-c\", \"alembic upgrade head && exec uvicorn app\"]",
            busybox_ref()
        ),
    );
    let (code, err) = fails(imgbuild(t.path()).arg("web"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "cmd runs `alembic` through /bin/sh -c, and `alembic` is not in any PATH directory"
        ),
        "{err}"
    );

    // Opted out: the command is given at run time.
    project(
        t.path(),
        &format!(
            "[images.web]\nbase = \"{}\"\ncmd = [\"node\", \"server.js\"]\nstart_check = false",
            busybox_ref()
        ),
    );
    ok(imgbuild(t.path()).arg("web"));
    ok(imgbuild(t.path()).args(["verify", "web"]));
    // …but `verify` of the same image as a layout (no project to say so) reports it.
    let (code, err) = fails(imgbuild(t.path()).args(["verify", "oci:.imgbuild/oci:web"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cmd `node` is not in any PATH directory"),
        "{err}"
    );

    // On a base with a real node, the same command passes, and node runs.
    project(
        t.path(),
        &format!(
            "[images.web]\nbase = \"{}\"\ncmd = [\"node\", \"server.js\"]\nsmoke = [\"node -e 'process.exit(0)'\"]",
            web_base()
        ),
    );
    ok(imgbuild(t.path()).arg("web"));
    ok(imgbuild(t.path()).args(["verify", "web"]));
    require_tool("runc");
    ok(imgbuild(t.path()).args(["test", "web"]));
}

/// What passed only because `imgbuild test` was stricter (or looser) than docker now behaves as
/// under docker: root has docker's capabilities (nginx -t chowns, chown, setpriv), open files
/// are docker's soft 1024, HOME comes from passwd (else `/`), the entrypoint wraps smoke lines.
#[test]
fn smoke_lines_run_as_docker_runs_them() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    project(
        t.path(),
        &format!(
            "[images.web]\nbase = \"{}\"\nsmoke = [\"nginx -t\", \"touch /tmp/f && chown 33:33 /tmp/f && test $(stat -c %u:%g /tmp/f) = 33:33\", \"test $(setpriv --reuid=33 --regid=33 --clear-groups id -u) = 33\", \"test $(ulimit -n) = 1024\", \"test $HOME = /root\"]",
            web_base()
        ),
    );
    ok(imgbuild(t.path()).arg("web"));
    let (code, err) = test_out(t.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("web: 5 smoke command(s) passed"), "{err}");

    // A user with no passwd entry has HOME=/ and cannot write there (podman and docker agree);
    // www-data (33) gets its passwd home.
    project(
        t.path(),
        &format!(
            "[images.web]\nbase = \"{}\"\nuser = \"1000:1000\"\nsmoke = [\"test $HOME = /\", \"touch $HOME/x\"]",
            web_base()
        ),
    );
    ok(imgbuild(t.path()).arg("web"));
    let (code, err) = test_out(t.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ok    test $HOME = /"), "{err}");
    assert!(err.contains("FAIL  touch $HOME/x"), "{err}");
    project(
        t.path(),
        &format!(
            "[images.web]\nbase = \"{}\"\nuser = \"www-data\"\nsmoke = [\"test $HOME = /var/www\"]",
            web_base()
        ),
    );
    ok(imgbuild(t.path()).arg("web"));
    assert_eq!(test_out(t.path()).0, 0);

    // The entrypoint wraps each line as `docker run IMAGE sh -c LINE` does, unless the line
    // opts out. (The root is shared by the lines: the opted-out one runs first.)
    project(
        t.path(),
        &format!(
            "[images.web]\nbase = \"{}\"\nentrypoint = [\"/bin/sh\", \"-c\", \"touch /tmp/marker && exec \\\"$@\\\"\", \"entry\"]\nsmoke = [{{ run = \"test ! -e /tmp/marker\", entrypoint = false }}, \"test -e /tmp/marker\"]",
            busybox_ref()
        ),
    );
    ok(imgbuild(t.path()).arg("web"));
    let (code, err) = test_out(t.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 smoke command(s) passed"), "{err}");
}

#[test]
fn read_only_root_and_the_healthcheck() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    project(
        t.path(),
        &format!(
            "[images.web]\nbase = \"{}\"\nread_only = true\nsmoke = [\"! touch /x\", \"test -f /app/run.sh\"]\nstop_signal = \"SIGQUIT\"\nvolumes = [\"/data\"]\nhealthcheck = {{ test = \"test -f /app/run.sh\", interval = \"1m30s\", timeout = \"5s\", retries = 3 }}",
            busybox_ref()
        ),
    );
    let out = ok(imgbuild(t.path()).args(["web", "--json"]));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = summary["digest"].as_str().unwrap().to_string();
    let layout = t.path().join(".imgbuild/oci");
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let cfg = manifest["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &fs::read(
            layout
                .join("blobs/sha256")
                .join(cfg.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let c = &config["config"];
    assert_eq!(
        c["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "test -f /app/run.sh"], "Interval": 90_000_000_000u64, "Timeout": 5_000_000_000u64, "Retries": 3})
    );
    assert_eq!(c["StopSignal"], "SIGQUIT");
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    let (code, err) = test_out(t.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("ok    healthcheck: test -f /app/run.sh"),
        "{err}"
    );
    assert!(err.contains("3 smoke command(s) passed"), "{err}");

    // A writable root (the default) lets the same `touch` succeed, so that line now fails; a
    // failing healthcheck fails the test.
    project(
        t.path(),
        &format!(
            "[images.web]\nbase = \"{}\"\nsmoke = [\"! touch /x\"]\nhealthcheck = {{ test = [\"/bin/false\"] }}",
            busybox_ref()
        ),
    );
    ok(imgbuild(t.path()).arg("web"));
    let (code, err) = test_out(t.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("FAIL  ! touch /x"), "{err}");
    assert!(err.contains("FAIL  healthcheck: /bin/false"), "{err}");

    // A bad duration is a config error before anything is built.
    project(
        t.path(),
        &format!(
            "[images.web]\nbase = \"{}\"\nhealthcheck = {{ test = \"true\", interval = \"soon\" }}",
            busybox_ref()
        ),
    );
    let (code, err) = fails(imgbuild(t.path()).arg("web"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("healthcheck interval: `soon` is not a duration"),
        "{err}"
    );
}

/// podman, the server's engine, and `imgbuild test` agree on what passes: the same lines run in
/// the same image under both, as root and as users with and without a passwd entry. (Lines that
/// docker and podman themselves disagree on — CAP_MKNOD, CAP_NET_RAW and CAP_AUDIT_WRITE are
/// docker's but not podman's, and podman's open-file limit is its containers.conf's — are left
/// out.)
#[test]
fn podman_and_imgbuild_test_agree() {
    require_tool("runc");
    require_tool("podman");
    let lines = [
        "touch /tmp/f && chown 33:33 /tmp/f && test $(stat -c %u /tmp/f) = 33",
        "test \"$HOME\" = /root || test \"$(id -u)\" != 0",
        "touch $HOME/x",
        "test \"$HOME\" = / || test \"$(id -u)\" != 4242",
        "chown 0:0 /tmp",
        "cat /etc/hostname >/dev/null; wget -q -T 2 -O /dev/null http://127.0.0.1:9/ || true",
        "test -w /",
    ];
    // podman names an `oci:` image after its (resolved) path, which must be lower-case.
    let dir = std::env::temp_dir().join(format!("imgbuild-podman-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let t = dir.as_path();
    // podman as the server runs it: runc, cgroupfs, vfs storage in a temp dir, no network,
    // open files and processes within the host's hard limits (podman refuses limits above them).
    let pm = t.join("podman");
    fs::create_dir_all(&pm).unwrap();
    let hard = |flag: &str| {
        let sh = format!("ulimit -H{flag}");
        let out = ok(std::process::Command::new("sh").args(["-c", &sh]));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    // nproc as ENGINEERING.md measured (the host's own hard limit is refused by runc here).
    let nproc = hard("p").parse::<u64>().unwrap_or(32768).min(32768);
    let nofile = hard("n");
    fs::write(
        pm.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = [\"nofile={0}:{0}\", \"nproc={1}:{1}\"]\nnetns = \"none\"\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
            nofile, nproc
        ),
    )
    .unwrap();
    fs::write(
        pm.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/graph\"\n",
            pm.display()
        ),
    )
    .unwrap();
    // (`.imgbuild` is not a valid name component for podman: the image also goes to `layout`.)
    let layout = t.join("layout");
    let podman = |user: &str, line: &str| -> bool {
        let out = std::process::Command::new("podman")
            .env("CONTAINERS_CONF", pm.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", pm.join("storage.conf"))
            .args(["run", "--rm", "--user", user])
            .arg(format!("oci:{}:web", layout.display()))
            .args(["/bin/sh", "-c", line])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("OCI runtime error") && !err.contains("Error: "),
            "podman could not run the container: {err}"
        );
        out.status.success()
    };
    let smoke: Vec<String> = lines.iter().map(|l| format!("{l:?}")).collect();
    for user in ["0:0", "1000:1000", "4242:4242"] {
        project(
            t,
            &format!(
                "[images.web]\nbase = \"{}\"\nuser = \"{user}\"\nsmoke = [{}]",
                busybox_ref(),
                smoke.join(", ")
            ),
        );
        ok(imgbuild(t).args(["web", "--output", "oci:layout:web"]));
        let (_, err) = test_out(t);
        for line in lines {
            let ours = err.contains(&format!("ok    {line}\n"));
            assert!(
                ours || err.contains(&format!("FAIL  {line} ")),
                "{line} not reported: {err}"
            );
            assert_eq!(
                ours,
                podman(user, line),
                "user {user}: `{line}` passes {} in imgbuild test but {} under podman run\n{err}",
                if ours { "" } else { "not" },
                if ours { "not" } else { "" }
            );
        }
    }
    let _ = fs::remove_dir_all(&dir);
}
