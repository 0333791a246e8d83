//! `imgbuild test`: smoke commands run inside the built image with runc.

mod common;
use common::*;
use std::fs;

fn project(dir: &std::path::Path, smoke: &str) {
    write_project(
        dir,
        &[("app/hello.txt", b"hi\n")],
        &format!(
            "[images.demo]\nbase = \"{}\"\nworkdir = \"/app\"\nuser = \"1000:1000\"\nenv = {{ MODE = \"smoke\" }}\nsmoke = {smoke}\n[[images.demo.layers]]\nname = \"app\"\nfiles = [{{ from = \"app\", to = \"/app\" }}]\nensure_dirs = [\"/app/public\"]\n",
            busybox_ref()
        ),
    );
}

#[test]
fn smoke_commands_run_in_the_image_with_its_env_workdir_and_user() {
    let t = tempfile::tempdir().unwrap();
    let checks = r#"["test \"$(id -u):$(id -g)\" = 1000:1000", "test \"$(pwd)\" = /app", "test \"$MODE\" = smoke", "cat hello.txt", "test -d /app/public", "! ping -c1 -W1 127.0.0.2 2>/dev/null || ! ip route 2>/dev/null | grep -q default"]"#;
    project(t.path(), checks);
    ok(imgbuild(t.path()).arg("demo"));
    require_tool("runc");
    let out = ok(imgbuild(t.path()).args(["test", "demo"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("6 smoke command(s) passed"), "{err}");
}

#[test]
fn a_failing_smoke_command_fails_with_its_output() {
    let t = tempfile::tempdir().unwrap();
    project(t.path(), r#"["true", "alembic --help"]"#);
    ok(imgbuild(t.path()).arg("demo"));
    require_tool("runc");
    let (code, err) = fails(imgbuild(t.path()).args(["test", "demo"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("FAIL  alembic --help (exit 127)") && err.contains("alembic: not found"),
        "{err}"
    );
    assert!(
        err.contains("1 of 2 smoke command(s) failed: alembic --help"),
        "{err}"
    );
}

#[test]
fn without_a_runtime_it_says_so_and_exits_2() {
    let t = tempfile::tempdir().unwrap();
    project(t.path(), r#"["true"]"#);
    ok(imgbuild(t.path()).arg("demo"));
    let (code, err) = fails(
        imgbuild(t.path())
            .args(["test", "demo"])
            .env("PATH", "/nonexistent"),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("no OCI runtime can run the image here: runc is not on PATH"),
        "{err}"
    );
}

/// `dir/imgbuild.toml`: an image `tiny` with no shell, only /bin/busybox, and these smoke lines.
fn shell_less(dir: &std::path::Path, smoke: &str) {
    write_project(
        dir,
        &[],
        &format!("[images.tiny]\nbase = \"scratch\"\nsmoke = {smoke}\n[[images.tiny.layers]]\nname = \"bin\"\nfiles = [{{ from = \"bin\", to = \"/bin\" }}]\n"),
    );
}

#[test]
fn images_without_a_shell_get_their_commands_split() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("bin")).unwrap();
    require_tool("busybox");
    fs::copy("/bin/busybox", t.path().join("bin/busybox")).unwrap();
    // `test A = B` passes only when each quoted word arrives as one argument, quotes removed:
    // split at the spaces inside the quotes, or with the quotes kept, it is a syntax error or
    // a mismatch (exit 1 or 2).
    shell_less(
        t.path(),
        r#"["/bin/busybox echo 'two words'", "/bin/busybox test 'two words' = \"two words\"", "/bin/busybox test a\\ b = 'a b'"]"#,
    );
    ok(imgbuild(t.path()).arg("tiny"));
    require_tool("runc");
    let out = ok(imgbuild(t.path()).args(["test", "tiny"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 smoke command(s) passed"), "{err}");

    // Counter-check, and the argument seen from inside: a failing command's output is shown,
    // so `ls` names the one path it was given, spaces and all; and a comparison that differs
    // only inside the quotes fails (the quoted text is compared, not dropped).
    shell_less(
        t.path(),
        r#"["/bin/busybox ls '/no such dir'", "/bin/busybox test 'two words' = 'two  words'"]"#,
    );
    ok(imgbuild(t.path()).arg("tiny"));
    let (code, err) = fails(imgbuild(t.path()).args(["test", "tiny"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("ls: /no such dir: No such file or directory"),
        "{err}"
    );
    assert!(
        !err.contains("ls: '/no"),
        "quotes reached the command: {err}"
    );
    assert!(!err.contains("ls: /no: "), "the path was split: {err}");
    assert!(err.contains("2 of 2 smoke command(s) failed"), "{err}");
}
