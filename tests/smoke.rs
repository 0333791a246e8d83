//! `imgbuild test`: smoke commands run inside the built image with runc.

mod common;
use common::*;
use std::fs;

fn project(dir: &std::path::Path, smoke: &str) {
    fs::create_dir_all(dir.join("app")).unwrap();
    fs::write(dir.join("app/hello.txt"), "hi\n").unwrap();
    fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "[images.demo]\nbase = \"oci:{}:bb\"\nworkdir = \"/app\"\nuser = \"1000:1000\"\nenv = {{ MODE = \"smoke\" }}\nsmoke = {smoke}\n[[images.demo.layers]]\nname = \"app\"\nfiles = [{{ from = \"app\", to = \"/app\" }}]\nensure_dirs = [\"/app/public\"]\n",
            busybox_base().display()
        ),
    )
    .unwrap();
}

#[test]
fn smoke_commands_run_in_the_image_with_its_env_workdir_and_user() {
    let t = tempfile::tempdir().unwrap();
    let checks = r#"["test \"$(id -u):$(id -g)\" = 1000:1000", "test \"$(pwd)\" = /app", "test \"$MODE\" = smoke", "cat hello.txt", "test -d /app/public", "! ping -c1 -W1 127.0.0.2 2>/dev/null || ! ip route 2>/dev/null | grep -q default"]"#;
    project(t.path(), checks);
    ok(imgbuild(t.path()).arg("demo"));
    need("runc");
    let out = ok(imgbuild(t.path()).args(["test", "demo"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("6 smoke command(s) passed"), "{err}");
}

#[test]
fn a_failing_smoke_command_fails_with_its_output() {
    let t = tempfile::tempdir().unwrap();
    project(t.path(), r#"["true", "alembic --help"]"#);
    ok(imgbuild(t.path()).arg("demo"));
    need("runc");
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

#[test]
fn images_without_a_shell_get_their_commands_split() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("bin")).unwrap();
    fs::copy("/bin/busybox", t.path().join("bin/busybox")).unwrap();
    fs::write(
        t.path().join("imgbuild.toml"),
        "[images.tiny]\nbase = \"scratch\"\nsmoke = [\"/bin/busybox echo 'two words'\"]\n[[images.tiny.layers]]\nname = \"bin\"\nfiles = [{ from = \"bin\", to = \"/bin\" }]\n",
    )
    .unwrap();
    ok(imgbuild(t.path()).arg("tiny"));
    need("runc");
    ok(imgbuild(t.path()).args(["test", "tiny"]));
}
