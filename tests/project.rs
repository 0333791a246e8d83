//! The project itself, workspace members and git sources built into wheels with PEP 517 inside
//! the target (real uv locks made here, the real Debian bookworm python3 base, real hatchling and
//! setuptools from the index, real runc, real git): installed with their console scripts, cached
//! by the tree's content or the commit, and a git commit that does not check out as locked is
//! refused.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// `index_url = …` for the build requirements (a lock without dependencies names no index).
fn index() -> String {
    format!("index_url = {:?}", package_index())
}

fn uv_lock(dir: &Path) {
    ok(Command::new(uv())
        .args(["lock", "--quiet"])
        .current_dir(dir)
        .env("UV_INDEX_URL", package_index()));
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const HATCH: &str =
    "[build-system]\nrequires = [\"hatchling\"]\nbuild-backend = \"hatchling.build\"\n";

#[test]
fn a_hatchling_project_is_built_from_its_source_with_its_console_script_and_cached_by_content() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    write_text(
        &p.join("pyproject.toml"),
        &format!("[project]\nname = \"hello-app\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = []\n\n[project.scripts]\nhello-app = \"hello_app:main\"\n\n{HATCH}"),
    );
    write_text(
        &p.join("hello_app/__init__.py"),
        "def main():\n    print('hello from the project')\n",
    );
    uv_lock(p);
    assert!(std::fs::read_to_string(p.join("uv.lock"))
        .unwrap()
        .contains("source = { editable = \".\" }"));
    python_app_spec(
        p,
        &format!("lock = \"uv.lock\", {}", index()),
        &["hello-app"],
    );
    let out = ok(imgbuild(p).args(["build", "app"]));
    let err = stderr(&out);
    assert!(
        err.contains("built hello_app-0.1.0-py3-none-any.whl from the source of hello-app 0.1.0"),
        "{err}"
    );
    let pins = std::fs::read_to_string(p.join("imgbuild.lock")).unwrap();
    assert!(
        pins.contains("[python-build.\"hello-app 0.1.0 for cp311 x86_64 glibc 2.36\"]")
            && pins.contains("name = \"hatchling\""),
        "{pins}"
    );
    ok(imgbuild(p).args(["verify", "app"]));
    let out = ok(imgbuild(p).args(["test", "app"]));
    assert!(stderr(&out).contains("ok "), "{}", stderr(&out));
    // Nothing changed: nothing built (the wheel by tree, target and pins; then the layer).
    for _ in 0..2 {
        let out = ok(imgbuild(p).args(["build", "app", "-v"]));
        assert!(
            !stderr(&out).contains("from the source of"),
            "{}",
            stderr(&out)
        );
    }
    // A changed source file: built again.
    write_text(
        &p.join("hello_app/__init__.py"),
        "def main():\n    print('hello again')\n",
    );
    let out = ok(imgbuild(p).args(["build", "app"]));
    assert!(
        stderr(&out).contains("from the source of hello-app"),
        "{}",
        stderr(&out)
    );
    // install_project = false: nothing left to install, said so.
    python_app_spec(p, "lock = \"uv.lock\", install_project = false", &[]);
    let (_, err) = fails(imgbuild(p).args(["build", "app"]));
    assert!(err.contains("install_project = false"), "{err}");
}

#[test]
fn a_setuptools_project_is_built_from_its_source() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    write_text(
        &p.join("pyproject.toml"),
        "[project]\nname = \"greet\"\nversion = \"2.0\"\nrequires-python = \">=3.11\"\ndependencies = []\n\n[project.scripts]\ngreet = \"greet:main\"\n\n[tool.setuptools]\npackages = [\"greet\"]\n\n[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n",
    );
    write_text(
        &p.join("greet/__init__.py"),
        "def main():\n    print('greetings')\n",
    );
    uv_lock(p);
    python_app_spec(
        p,
        &format!("lock = \"uv.lock\", {}", index()),
        &["greet", "python3 -c 'import greet'"],
    );
    let out = ok(imgbuild(p).args(["build", "app"]));
    assert!(
        stderr(&out).contains("built greet-2.0-py3-none-any.whl from the source of greet 2.0"),
        "{}",
        stderr(&out)
    );
    ok(imgbuild(p).args(["test", "app"]));
}

#[test]
fn a_workspace_with_a_virtual_root_installs_its_member_with_all_packages() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    write_text(
        &p.join("pyproject.toml"),
        "[project]\nname = \"ws\"\nversion = \"0\"\nrequires-python = \">=3.11\"\ndependencies = []\n\n[tool.uv]\npackage = false\n\n[tool.uv.workspace]\nmembers = [\"packages/*\"]\n",
    );
    write_text(
        &p.join("packages/wslib/pyproject.toml"),
        &format!("[project]\nname = \"wslib\"\nversion = \"1.2.3\"\nrequires-python = \">=3.11\"\ndependencies = []\n\n{HATCH}"),
    );
    write_text(&p.join("packages/wslib/wslib/__init__.py"), "VALUE = 42\n");
    uv_lock(p);
    let lock = std::fs::read_to_string(p.join("uv.lock")).unwrap();
    assert!(lock.contains("source = { virtual = \".\" }"), "{lock}");
    assert!(
        lock.contains("source = { editable = \"packages/wslib\" }"),
        "{lock}"
    );
    // The virtual root alone installs nothing: refused, pointing at all_packages.
    python_app_spec(p, "lock = \"uv.lock\"", &[]);
    let (_, err) = fails(imgbuild(p).args(["build", "app"]));
    assert!(err.contains("all_packages = true"), "{err}");
    python_app_spec(
        p,
        &format!("lock = \"uv.lock\", all_packages = true, {}", index()),
        &["python3 -c 'import wslib; assert wslib.VALUE == 42'"],
    );
    let out = ok(imgbuild(p).args(["build", "app"]));
    assert!(
        stderr(&out).contains("from the source of wslib 1.2.3"),
        "{}",
        stderr(&out)
    );
    ok(imgbuild(p).args(["test", "app"]));
}

/// A bare repository with one commit of a hatchling package `gitdep`; returns (url, commit).
/// `git ARGS` in `d` with a test identity; its stdout.
fn git(args: &[&str], d: &Path) -> String {
    stdout(&ok(Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(d)))
}

fn git_repo(dir: &Path) -> (String, String) {
    require_tool("git");
    let bare = dir.join("gitdep.git");
    let work = dir.join("gitdep-work");
    std::fs::create_dir_all(&bare).unwrap();
    git(&["init", "--quiet", "--bare", "-b", "main"], &bare);
    write_text(
        &work.join("pyproject.toml"),
        &format!("[project]\nname = \"gitdep\"\nversion = \"0.3.0\"\nrequires-python = \">=3.11\"\ndependencies = []\n\n{HATCH}"),
    );
    write_text(&work.join("gitdep/__init__.py"), "ORIGIN = 'git'\n");
    // A second project in a subdirectory of the same repository.
    write_text(
        &work.join("sub/pyproject.toml"),
        &format!("[project]\nname = \"gitsub\"\nversion = \"0.4.0\"\nrequires-python = \">=3.11\"\ndependencies = []\n\n{HATCH}"),
    );
    write_text(&work.join("sub/gitsub/__init__.py"), "SUB = True\n");
    git(&["init", "--quiet", "-b", "main"], &work);
    git(&["add", "."], &work);
    git(&["commit", "--quiet", "-m", "one"], &work);
    git(&["tag", "v1"], &work);
    git(
        &["push", "--quiet", bare.to_str().unwrap(), "main", "v1"],
        &work,
    );
    let commit = git(&["rev-parse", "HEAD"], &work);
    (format!("file://{}", bare.display()), commit)
}

fn git_project(p: &Path) -> String {
    let (url, commit) = git_repo(p);
    write_text(
        &p.join("app/pyproject.toml"),
        &format!("[project]\nname = \"app\"\nversion = \"0\"\nrequires-python = \">=3.11\"\ndependencies = [\"gitdep @ git+{url}\", \"gitsub @ git+{url}#subdirectory=sub\"]\n\n[tool.uv]\npackage = false\n"),
    );
    uv_lock(&p.join("app"));
    let lock = std::fs::read_to_string(p.join("app/uv.lock")).unwrap();
    assert!(lock.contains(&format!("#{commit}")), "{lock}");
    commit
}

#[test]
fn a_git_dependency_is_built_from_the_locked_commit_with_its_origin_recorded() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    let commit = git_project(t.path());
    let p = t.path().join("app");
    python_app_spec(
        &p,
        &format!("lock = \"uv.lock\", {}", index()),
        &[&format!("python3 -c 'import json, importlib.metadata as m, gitdep; assert gitdep.ORIGIN == \"git\"; d = json.loads(m.distribution(\"gitdep\").read_text(\"direct_url.json\")); assert d[\"vcs_info\"][\"commit_id\"] == \"{commit}\", d'"), "python3 -c 'import json, importlib.metadata as m, gitsub; assert gitsub.SUB; assert json.loads(m.distribution(\"gitsub\").read_text(\"direct_url.json\"))[\"subdirectory\"] == \"sub\"'"],
    );
    let out = ok(imgbuild(&p).args(["build", "app"]));
    assert!(
        stderr(&out)
            .contains("built gitdep-0.3.0-py3-none-any.whl from the git commit of gitdep 0.3.0"),
        "{}",
        stderr(&out)
    );
    ok(imgbuild(&p).args(["verify", "app"]));
    ok(imgbuild(&p).args(["test", "app"]));
    let out = ok(imgbuild(&p).args(["build", "app", "-v"]));
    assert!(
        !stderr(&out).contains("from the git commit"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_git_commit_that_does_not_exist_or_does_not_check_out_as_locked_is_refused() {
    require_tool("runc");
    let t = tempfile::tempdir().unwrap();
    let commit = git_project(t.path());
    let p = t.path().join("app");
    let lock = std::fs::read_to_string(p.join("uv.lock")).unwrap();
    python_app_spec(&p, &format!("lock = \"uv.lock\", {}", index()), &[]);
    let missing = "0123456789abcdef0123456789abcdef01234567";
    write_text(&p.join("uv.lock"), &lock.replace(&commit, missing));
    let (_, err) = fails(imgbuild(&p).args(["build", "app"]));
    assert!(
        err.contains(&format!("checking out git commit {missing} of")),
        "{err}"
    );
    assert!(err.contains("has no such commit"), "{err}");
    // A ref that checks out, but is not the locked commit id: refused.
    write_text(
        &p.join("uv.lock"),
        &lock.replace(&format!("#{commit}"), "#v1"),
    );
    let (_, err) = fails(imgbuild(&p).args(["build", "app"]));
    assert!(
        err.contains(&format!("gave commit {commit}, not the locked one")),
        "{err}"
    );
    assert!(!p.join(".imgbuild/oci").exists(), "no image");
}

#[test]
fn a_git_dependency_whose_version_comes_from_git_tags_is_built_at_the_locked_version() {
    // hatch-vcs (setuptools-scm underneath) reads the version from the repository's tags; the
    // build root has the tree without `.git`, so the locked version is what it is told.
    require_tool("runc");
    require_tool("git");
    let t = tempfile::tempdir().unwrap();
    let bare = t.path().join("scmdep.git");
    let work = t.path().join("scmdep-work");
    std::fs::create_dir_all(&bare).unwrap();
    git(&["init", "--quiet", "--bare", "-b", "main"], &bare);
    write_text(
        &work.join("pyproject.toml"),
        "[project]\nname = \"scmdep\"\ndynamic = [\"version\"]\nrequires-python = \">=3.11\"\ndependencies = []\n\n[tool.hatch.version]\nsource = \"vcs\"\n\n[build-system]\nrequires = [\"hatchling\", \"hatch-vcs\"]\nbuild-backend = \"hatchling.build\"\n",
    );
    write_text(&work.join("scmdep/__init__.py"), "OK = True\n");
    git(&["init", "--quiet", "-b", "main"], &work);
    git(&["add", "."], &work);
    git(&["commit", "--quiet", "-m", "one"], &work);
    git(&["tag", "v1.2.0"], &work);
    git(
        &["push", "--quiet", bare.to_str().unwrap(), "main", "v1.2.0"],
        &work,
    );
    let url = format!("file://{}", bare.display());
    let p = t.path().join("app");
    write_text(
        &p.join("pyproject.toml"),
        &format!("[project]\nname = \"app\"\nversion = \"0\"\nrequires-python = \">=3.11\"\ndependencies = [\"scmdep @ git+{url}@v1.2.0\"]\n\n[tool.uv]\npackage = false\n"),
    );
    uv_lock(&p);
    let lock = std::fs::read_to_string(p.join("uv.lock")).unwrap();
    assert!(
        lock.contains("name = \"scmdep\"\nversion = \"1.2.0\""),
        "{lock}"
    );
    python_app_spec(
        &p,
        &format!("lock = \"uv.lock\", {}", index()),
        &["python3 -c 'import importlib.metadata as m, scmdep; assert scmdep.OK; assert m.version(\"scmdep\") == \"1.2.0\", m.version(\"scmdep\")'"],
    );
    let out = ok(imgbuild(&p).args(["build", "app"]));
    assert!(
        stderr(&out)
            .contains("built scmdep-1.2.0-py3-none-any.whl from the git commit of scmdep 1.2.0"),
        "{}",
        stderr(&out)
    );
    ok(imgbuild(&p).args(["test", "app"]));
}

#[test]
fn a_project_whose_version_comes_from_git_says_how_to_give_it_one_and_then_builds() {
    // The project itself with hatch-vcs, in a git work tree: uv.lock records no version for it,
    // and its tree is built without `.git`.
    require_tool("runc");
    require_tool("git");
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    write_text(
        &p.join("pyproject.toml"),
        "[project]\nname = \"scm-app\"\ndynamic = [\"version\"]\nrequires-python = \">=3.11\"\ndependencies = []\n\n[tool.hatch.version]\nsource = \"vcs\"\n\n[tool.hatch.build.targets.wheel]\npackages = [\"scm_app\"]\n\n[build-system]\nrequires = [\"hatchling\", \"hatch-vcs\"]\nbuild-backend = \"hatchling.build\"\n",
    );
    write_text(&p.join("scm_app/__init__.py"), "OK = True\n");
    git(&["init", "--quiet", "-b", "main"], p);
    git(&["add", "."], p);
    git(&["commit", "--quiet", "-m", "one"], p);
    git(&["tag", "v3.1.0"], p);
    uv_lock(p);
    let spec = |extra: &str| {
        python_app_spec(
            p,
            &format!("lock = \"uv.lock\", {}{extra}", index()),
            &["python3 -c 'import importlib.metadata as m, scm_app; assert m.version(\"scm-app\") == \"3.1.0\"'"],
        )
    };
    spec("");
    let (code, err) = fails(imgbuild(p).args(["build", "app"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unable to detect version"), "{err}");
    assert!(
        err.contains("`build = { env = { SETUPTOOLS_SCM_PRETEND_VERSION = \"VERSION\" } }`"),
        "{err}"
    );
    spec(", build = { env = { SETUPTOOLS_SCM_PRETEND_VERSION = \"3.1.0\" } }");
    let out = ok(imgbuild(p).args(["build", "app"]));
    assert!(
        stderr(&out).contains("built scm_app-3.1.0-py3-none-any.whl from the source of scm-app"),
        "{}",
        stderr(&out)
    );
    ok(imgbuild(p).args(["verify", "app"]));
    ok(imgbuild(p).args(["test", "app"]));
}
