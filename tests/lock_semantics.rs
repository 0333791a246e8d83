//! What a lock means, beyond its wheels (issue 11): `requires-python`, a local find-links
//! registry without hashes (pinned in imgbuild.lock), the project and workspace members, on a
//! stand-in for Debian bookworm's python3 (3.11.2).

mod common;

use common::*;
use std::path::Path;

fn store() -> std::path::PathBuf {
    std::env::temp_dir().join("imgbuild-test-lock-semantics-store")
}

fn build(dir: &Path) -> std::process::Command {
    let mut c = imgbuild(dir);
    c.env("IMGBUILD_CACHE", store()).args(["build", "t"]);
    c
}

/// imgbuild.toml: image `t` on the fake base with one python layer (`python`: the table's inside).
fn project(dir: &Path, python: &str) {
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "[images.t]\nbase = \"oci:{}:py\"\n\n[[images.t.layers]]\nname = \"deps\"\npython = {{ {python} }}\n",
            dir.join("base").display()
        ),
    )
    .unwrap();
}

const DEMO: &[(&str, &[u8])] = &[("demo/__init__.py", b"X = 1\n")];

/// uv.lock: a root (`root_source`) depending on `demo` 1.0 from the find-links registry
/// `wheels` (no hash, as uv writes it), plus `more` TOML.
fn uv_lock(dir: &Path, requires: &str, root_source: &str, more: &str) {
    std::fs::write(
        dir.join("uv.lock"),
        format!(
            r#"version = 1
requires-python = "{requires}"

[[package]]
name = "app"
version = "0.1.0"
source = {root_source}
dependencies = [{{ name = "demo" }}]

[[package]]
name = "demo"
version = "1.0"
source = {{ registry = "wheels" }}
wheels = [{{ path = "demo-1.0-py3-none-any.whl" }}]
{more}"#
        ),
    )
    .unwrap();
}

fn setup(requires: &str, root_source: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fake_bookworm_python(t.path(), &store());
    py_wheel(
        &t.path().join("wheels"),
        "demo-1.0-py3-none-any.whl",
        DEMO,
        "",
    );
    uv_lock(t.path(), requires, root_source, "");
    project(t.path(), "lock = \"uv.lock\", require = [\"demo\"]");
    t
}

#[test]
fn a_lock_for_python_312_on_a_311_base_is_refused_before_anything_else() {
    let t = setup(">=3.12", "{ virtual = \".\" }");
    let (code, err) = fails(&mut build(t.path()));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("The lock requires Python >=3.12, but the image's interpreter /usr/bin/python3.11 is 3.11.2"),
        "{err}"
    );
    assert!(!err.contains("without a usable wheel"), "{err}");
    // A wheel whose own Requires-Python excludes the target is refused too.
    let t = setup(">=3.11", "{ virtual = \".\" }");
    py_wheel(
        &t.path().join("wheels"),
        "demo-1.0-py3-none-any.whl",
        DEMO,
        "Requires-Python: >=3.12\n",
    );
    let (_, err) = fails(&mut build(t.path()));
    assert!(
        err.contains("wheel demo-1.0-py3-none-any.whl requires Python >=3.12 (Requires-Python in demo-1.0.dist-info/METADATA), but the image's interpreter is 3.11.2"),
        "{err}"
    );
}

#[test]
fn a_local_registry_without_hashes_is_pinned_at_first_use_and_a_change_is_refused() {
    let t = setup(">=3.11", "{ virtual = \".\" }");
    let out = ok(&mut build(t.path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app 0.1.0 is virtual"), "{err}");
    let lock = std::fs::read_to_string(t.path().join("imgbuild.lock")).unwrap();
    assert!(
        lock.contains("[files]")
            && lock.contains("\"wheels/demo-1.0-py3-none-any.whl\" = \"sha256:"),
        "{lock}"
    );
    ok(&mut build(t.path()));
    // The file changes under the same name: refused, naming it.
    py_wheel(
        &t.path().join("wheels"),
        "demo-1.0-py3-none-any.whl",
        &[("demo/__init__.py", b"X = 2\n")],
        "",
    );
    let (code, err) = fails(&mut build(t.path()));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("wheels/demo-1.0-py3-none-any.whl changed since imgbuild.lock pinned it"),
        "{err}"
    );
    assert!(err.contains("imgbuild lock --update"), "{err}");
    // Accepted with `imgbuild lock --update`.
    ok(imgbuild(t.path())
        .env("IMGBUILD_CACHE", store())
        .args(["lock", "--update"]));
    ok(&mut build(t.path()));
    let lock2 = std::fs::read_to_string(t.path().join("imgbuild.lock")).unwrap();
    assert_ne!(lock, lock2);
}

#[test]
fn the_project_itself_is_built_from_source_and_install_project_false_leaves_it_out() {
    let t = setup(">=3.11", "{ editable = \".\" }");
    // The project is built from its source (tests/project.rs builds real ones): here no index
    // for its build requirements is configured, and the error says so.
    let (_, err) = fails(&mut build(t.path()));
    assert!(
        err.contains(
            "building app 0.1.0 from its source needs a package index for the build requirements"
        ),
        "{err}"
    );
    project(
        t.path(),
        "lock = \"uv.lock\", require = [\"demo\"], install_project = false",
    );
    let out = ok(&mut build(t.path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not installed: install_project = false"),
        "{err}"
    );
}

#[test]
fn a_layer_that_would_install_nothing_says_why() {
    let t = setup(">=3.11", "{ virtual = \".\" }");
    // A virtual workspace root whose members nothing depends on (postmodern-mono's shape).
    std::fs::write(
        t.path().join("uv.lock"),
        r#"version = 1
requires-python = ">=3.11"

[manifest]
members = ["root", "lib"]

[[package]]
name = "root"
version = "0.1.0"
source = { virtual = "." }

[[package]]
name = "lib"
version = "0.1.0"
source = { editable = "packages/lib" }
dependencies = [{ name = "demo" }]

[[package]]
name = "demo"
version = "1.0"
source = { registry = "wheels" }
wheels = [{ path = "demo-1.0-py3-none-any.whl" }]
"#,
    )
    .unwrap();
    project(t.path(), "lock = \"uv.lock\"");
    let (code, err) = fails(&mut build(t.path()));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("layer `deps`: uv.lock installs nothing for CPython 3.11.2"),
        "{err}"
    );
    assert!(err.contains("root 0.1.0 is virtual"), "{err}");
    assert!(err.contains("all_packages = true"), "{err}");
    // --all-packages without the members: the member's own package is named, demo installs.
    project(
        t.path(),
        "lock = \"uv.lock\", all_packages = true, install_workspace = false, require = [\"demo\"]",
    );
    ok(&mut build(t.path()));
}

#[test]
fn path_sources_a_wheel_file_is_installed_from_the_locked_path_and_checked_against_its_hash() {
    // uv.lock of `demo = { path = "dist/demo-1.0-py3-none-any.whl" }` (as uv 0.13 writes it: the
    // path only in `source`, the wheel by filename and hash).
    let t = setup(">=3.11", "{ virtual = \".\" }");
    let sha = py_wheel(
        &t.path().join("dist"),
        "demo-1.0-py3-none-any.whl",
        DEMO,
        "",
    );
    let lock = format!(
        r#"version = 1
requires-python = ">=3.11"

[[package]]
name = "app"
version = "0.1.0"
source = {{ virtual = "." }}
dependencies = [{{ name = "demo" }}]

[[package]]
name = "demo"
version = "1.0"
source = {{ path = "dist/demo-1.0-py3-none-any.whl" }}
wheels = [
    {{ filename = "demo-1.0-py3-none-any.whl", hash = "sha256:{sha}" }},
]
"#
    );
    std::fs::write(t.path().join("uv.lock"), &lock).unwrap();
    std::fs::remove_dir_all(t.path().join("wheels")).unwrap();
    let out = ok(build(t.path()).arg("--json"));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layer = summary["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "deps")
        .unwrap();
    let digest = layer["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let blob = t.path().join(".imgbuild/oci/blobs/sha256").join(digest);
    let list = ok(std::process::Command::new("tar").arg("-tzf").arg(&blob));
    assert!(
        stdout(&list).contains("dist-packages/demo/__init__.py"),
        "{}",
        stdout(&list)
    );
    ok(imgbuild(t.path())
        .env("IMGBUILD_CACHE", store())
        .args(["verify", "t"]));
    // The file at the path is not the one locked: refused, naming it (a store that already
    // holds the locked bytes builds exactly the lock and never reads the path again).
    py_wheel(
        &t.path().join("dist"),
        "demo-1.0-py3-none-any.whl",
        &[("demo/__init__.py", b"X = 3\n")],
        "",
    );
    let fresh = tempfile::tempdir().unwrap();
    let (_, err) = fails(build(t.path()).env("IMGBUILD_CACHE", fresh.path()));
    assert!(err.contains("demo-1.0-py3-none-any.whl"), "{err}");
    assert!(err.contains("sha256"), "{err}");
}
