use super::*;
use std::path::PathBuf;

const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn env(v: &str) -> Env {
    Env::linux_cpython(v, "x86_64")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn names(l: &Locked) -> Vec<String> {
    l.packages
        .iter()
        .map(|p| format!("{}=={}", p.name, p.version))
        .collect()
}

const UV: &str = r#"
version = 1
requires-python = ">=3.11"

[[package]]
name = "app"
version = "0.1.0"
source = { virtual = "." }
dependencies = [
    { name = "psycopg", extra = ["binary"] },
    { name = "win-only", marker = "sys_platform == 'win32'" },
    { name = "old-py", marker = "python_full_version < '3.12'" },
]

[package.optional-dependencies]
fast = [{ name = "speedups" }]

[package.dev-dependencies]
dev = [{ name = "pytest" }]

[[package]]
name = "psycopg"
version = "3.3.9"
source = { registry = "https://index.example.invalid/simple" }
sdist = { url = "https://files.example.invalid/psycopg-3.3.9.tar.gz", hash = "sha256:1111111111111111111111111111111111111111111111111111111111111111", size = 10 }
wheels = [{ url = "https://files.example.invalid/psycopg-3.3.9-py3-none-any.whl", hash = "sha256:2222222222222222222222222222222222222222222222222222222222222222", size = 20 }]

[package.optional-dependencies]
binary = [{ name = "psycopg-binary", marker = "implementation_name != 'pypy'" }]
pool = [{ name = "psycopg-pool" }]

[[package]]
name = "psycopg-binary"
version = "3.3.9"
source = { registry = "https://index.example.invalid/simple" }
wheels = [{ url = "https://files.example.invalid/psycopg_binary-3.3.9-cp311-cp311-manylinux_2_17_x86_64.whl", hash = "sha256:2222222222222222222222222222222222222222222222222222222222222222" }]

[[package]]
name = "psycopg-pool"
version = "1.0"
source = { registry = "https://index.example.invalid/simple" }

[[package]]
name = "win-only"
version = "1.0"
source = { registry = "https://index.example.invalid/simple" }

[[package]]
name = "old-py"
version = "1.0"
source = { registry = "https://index.example.invalid/simple" }
sdist = { url = "https://files.example.invalid/old_py-1.0.tar.gz", hash = "sha256:1111111111111111111111111111111111111111111111111111111111111111" }

[[package]]
name = "speedups"
version = "2.0"
source = { registry = "https://index.example.invalid/simple" }

[[package]]
name = "pytest"
version = "8.0"
source = { registry = "https://index.example.invalid/simple" }
"#;

#[test]
fn uv_lock_follows_markers_extras_and_groups_for_the_target() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "uv.lock", UV);
    let l = load(&p, &env("3.11.2"), &Choice::default()).unwrap();
    assert_eq!(
        names(&l),
        ["old-py==1.0", "psycopg==3.3.9", "psycopg-binary==3.3.9"]
    );
    assert!(l
        .registries
        .contains("https://index.example.invalid/simple"));
    let psycopg = &l.packages[1];
    let Artifacts::Files { wheels, sdist, .. } = &psycopg.artifacts else {
        panic!()
    };
    assert_eq!(wheels[0].filename, "psycopg-3.3.9-py3-none-any.whl");
    assert_eq!(wheels[0].sha256.as_deref(), Some(H2));
    assert_eq!(wheels[0].size, Some(20));
    let sdist = sdist.as_ref().unwrap();
    assert_eq!(sdist.filename, "psycopg-3.3.9.tar.gz");
    assert_eq!(sdist.sha256.as_deref(), Some(&"1".repeat(64)[..]));

    // A 3.13 target drops the `python_full_version < '3.12'` dependency.
    let l = load(&p, &env("3.13.0"), &Choice::default()).unwrap();
    assert_eq!(names(&l), ["psycopg==3.3.9", "psycopg-binary==3.3.9"]);

    let choice = Choice {
        groups: vec!["dev".into()],
        extras: vec!["fast".into()],
        exclude: vec!["psycopg-binary".into()],
        ..Default::default()
    };
    let l = load(&p, &env("3.13.0"), &choice).unwrap();
    assert_eq!(
        names(&l),
        ["psycopg==3.3.9", "pytest==8.0", "speedups==2.0"]
    );
}

#[test]
fn uv_lock_unknown_extra_group_or_exclude_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "uv.lock", UV);
    let e = |c: Choice| load(&p, &env("3.11.2"), &c).unwrap_err().to_string();
    let msg = e(Choice {
        extras: vec!["nope".into()],
        ..Default::default()
    });
    assert!(
        msg.contains("extra `nope` is not defined by app") && msg.contains("fast"),
        "{msg}"
    );
    let msg = e(Choice {
        groups: vec!["docs".into()],
        ..Default::default()
    });
    assert!(msg.contains("group `docs`") && msg.contains("dev"), "{msg}");
    let msg = e(Choice {
        exclude: vec!["win-only".into()],
        ..Default::default()
    });
    assert!(msg.contains("exclude `win-only`"), "{msg}");
}

#[test]
fn pylock_markers_extras_groups_and_paths() {
    let d = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
lock-version = "1.0"
created-by = "test"
extras = ["crypto"]
dependency-groups = ["dev"]
default-groups = []

[[packages]]
name = "attrs"
version = "25.1.0"
wheels = [{{ url = "https://files.example.invalid/attrs-25.1.0-py3-none-any.whl", hashes = {{ sha256 = "{H1}" }} }}]

[[packages]]
name = "cryptography"
version = "44.0"
marker = "'crypto' in extras"
wheels = [{{ name = "cryptography-44.0-cp39-abi3-manylinux_2_28_x86_64.whl", path = "wheels/c.whl", hashes = {{ sha256 = "{H2}" }} }}]

[[packages]]
name = "pytest"
version = "8.0"
marker = "'dev' in dependency_groups"
sdist = {{ url = "https://files.example.invalid/pytest-8.0.tar.gz", hashes = {{ sha256 = "{H1}" }} }}
"#
    );
    let p = write(d.path(), "pylock.toml", &text);
    let l = load(&p, &env("3.11.2"), &Choice::default()).unwrap();
    assert_eq!(names(&l), ["attrs==25.1.0"]);
    let c = Choice {
        extras: vec!["crypto".into()],
        groups: vec!["dev".into()],
        ..Default::default()
    };
    let l = load(&p, &env("3.11.2"), &c).unwrap();
    assert_eq!(
        names(&l),
        ["attrs==25.1.0", "cryptography==44.0", "pytest==8.0"]
    );
    let Artifacts::Files { wheels, .. } = &l.packages[1].artifacts else {
        panic!()
    };
    assert_eq!(
        wheels[0].path.as_deref(),
        Some(d.path().join("wheels/c.whl").as_path())
    );
    assert_eq!(
        wheels[0].filename,
        "cryptography-44.0-cp39-abi3-manylinux_2_28_x86_64.whl"
    );
    let Artifacts::Files { wheels, sdist, .. } = &l.packages[2].artifacts else {
        panic!()
    };
    assert!(wheels.is_empty());
    assert_eq!(sdist.as_ref().unwrap().filename, "pytest-8.0.tar.gz");
}

#[test]
fn requirements_with_hashes_markers_and_options() {
    let d = tempfile::tempdir().unwrap();
    let text = format!(
        "# generated\n--index-url https://mirror.example.invalid/simple\n\
         alembic==1.20.1 \\\n    --hash=sha256:{H1} \\\n    --hash=sha256:{H2}\n    # via app\n\
         psycopg[binary]==3.3.9 ; python_version >= \"3.8\" \\\n    --hash=sha256:{H1}\n\
         pywin32==306 ; sys_platform == 'win32' --hash=sha256:{H1}\n"
    );
    let p = write(d.path(), "requirements.txt", &text);
    let l = load(&p, &env("3.11.2"), &Choice::default()).unwrap();
    assert_eq!(names(&l), ["alembic==1.20.1", "psycopg==3.3.9"]);
    assert_eq!(l.indexes, ["https://mirror.example.invalid/simple"]);
    assert_eq!(
        l.packages[0].artifacts,
        Artifacts::Hashes(vec![H1.to_string(), H2.to_string()])
    );
}

#[test]
fn requirements_must_be_pinned_and_hashed() {
    let d = tempfile::tempdir().unwrap();
    let e = |text: &str| {
        let p = write(d.path(), "requirements.txt", text);
        load(&p, &env("3.11.2"), &Choice::default())
            .unwrap_err()
            .to_string()
    };
    assert!(e("alembic>=1.0 --hash=sha256:00\n").contains("is not pinned with `==`"));
    assert!(e("alembic==1.0\n").contains("requirements.txt:1: `alembic==1.0` has no --hash"));
    assert!(e("-r other.txt\n").contains("nested files"));
    assert!(e("-e .\n").contains("editable"));
}

#[test]
fn uv_lock_git_and_local_sources_are_kept_with_their_commit() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "uv.lock",
        r#"
version = 1
requires-python = ">=3.11"

[[package]]
name = "app"
version = "0.1.0"
source = { editable = "." }
dependencies = [{ name = "client" }, { name = "member" }]

[[package]]
name = "client"
version = "0.0.12"
source = { git = "https://git.example.invalid/client.git?rev=main#3831881abc" }

[[package]]
name = "member"
version = "0.2.0"
source = { editable = "packages/member" }
"#,
    );
    let l = load(&p, &env("3.11.2"), &Choice::default()).unwrap();
    let other = |i: usize| match &l.packages[i].artifacts {
        Artifacts::Files { other, .. } => other.clone().unwrap(),
        a => panic!("{a:?}"),
    };
    assert_eq!(other(0).to_string(), "an editable source (\".\")");
    assert_eq!(
        other(1),
        Other::Git {
            url: "https://git.example.invalid/client.git".into(),
            commit: "3831881abc".into(),
            subdirectory: None,
        }
    );
    assert_eq!(
        other(2).to_string(),
        "an editable source (\"packages/member\")"
    );
}

#[test]
fn requires_python_is_checked_against_the_exact_target_version() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "uv.lock",
        "version = 1\nrequires-python = \">=3.12\"\n",
    );
    let e = check_requires_python(&p, "3.11.2", "/usr/bin/python3").unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("The lock requires Python >=3.12, but the image's interpreter /usr/bin/python3 is 3.11.2"), "{e}");
    check_requires_python(&p, "3.12.0", "/usr/bin/python3").unwrap();
    let p = write(
        d.path(),
        "uv.lock",
        "version = 1\nrequires-python = \">=3.11.3\"\n",
    );
    assert!(check_requires_python(&p, "3.11.2", "/usr/bin/python3").is_err());
    let p = write(
        d.path(),
        "pylock.toml",
        "lock-version = \"1.0\"\nrequires-python = \"<3.11\"\n",
    );
    assert!(check_requires_python(&p, "3.11.2", "/usr/bin/python3").is_err());
    let p = write(d.path(), "requirements.txt", "x==1\n");
    check_requires_python(&p, "3.11.2", "/usr/bin/python3").unwrap();
}

/// A uv workspace: an editable root `app` that depends on member `core`, and member `tool`
/// that nothing depends on (postmodern-mono / fullstack-fastapi shape).
const WORKSPACE: &str = r#"
version = 1
requires-python = ">=3.11"

[manifest]
members = ["app", "core", "tool"]

[[package]]
name = "app"
version = "0.1.0"
source = { editable = "." }
dependencies = [{ name = "core" }]

[[package]]
name = "core"
version = "0.2.0"
source = { editable = "packages/core" }
dependencies = [{ name = "six" }]

[[package]]
name = "tool"
version = "0.3.0"
source = { editable = "packages/tool" }
dependencies = [{ name = "click" }]

[[package]]
name = "six"
version = "1.0"
source = { registry = "https://pypi.example.invalid/simple" }

[[package]]
name = "click"
version = "8.0"
source = { registry = "https://pypi.example.invalid/simple" }
"#;

#[test]
fn the_project_and_workspace_members_are_chosen_like_uv_sync() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "uv.lock", WORKSPACE);
    let pick = |c: Choice| {
        let l = load(&p, &env("3.11.2"), &c).unwrap();
        (names(&l), l.notes)
    };
    // uv sync: the root, the member it needs, their dependencies.
    let (n, _) = pick(Choice::default());
    assert_eq!(n, ["app==0.1.0", "core==0.2.0", "six==1.0"]);
    // --no-install-project: the member and the dependencies stay.
    let (n, notes) = pick(Choice {
        install_project: false,
        ..Default::default()
    });
    assert_eq!(n, ["core==0.2.0", "six==1.0"]);
    assert!(
        notes[0].contains(
            "app 0.1.0 (editable source \".\") is not installed: install_project = false"
        ),
        "{notes:?}"
    );
    // --no-install-workspace: only third-party packages.
    let (n, _) = pick(Choice {
        install_workspace: false,
        ..Default::default()
    });
    assert_eq!(n, ["six==1.0"]);
    // --all-packages and --package.
    let (n, _) = pick(Choice {
        all_packages: true,
        ..Default::default()
    });
    assert_eq!(
        n,
        [
            "app==0.1.0",
            "click==8.0",
            "core==0.2.0",
            "six==1.0",
            "tool==0.3.0"
        ]
    );
    let (n, _) = pick(Choice {
        packages: vec!["tool".into()],
        install_workspace: false,
        ..Default::default()
    });
    assert_eq!(n, ["click==8.0"]);
    let e = load(
        &p,
        &env("3.11.2"),
        &Choice {
            packages: vec!["six".into()],
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("packages: `six` is not a member of the workspace"),
        "{e}"
    );
    // A virtual root is never installed, and says so.
    let p = write(
        d.path(),
        "uv.lock",
        &WORKSPACE.replace(
            "source = { editable = \".\" }",
            "source = { virtual = \".\" }",
        ),
    );
    let l = load(&p, &env("3.11.2"), &Choice::default()).unwrap();
    assert_eq!(names(&l), ["core==0.2.0", "six==1.0"]);
    assert!(l.notes[0].contains("app 0.1.0 is virtual"), "{:?}", l.notes);
}

#[test]
fn a_local_registry_resolves_wheel_paths_against_its_directory() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "uv.lock",
        r#"
version = 1
requires-python = ">=3.11"

[[package]]
name = "app"
version = "0.1.0"
source = { virtual = "." }
dependencies = [{ name = "demo" }]

[[package]]
name = "demo"
version = "1.0"
source = { registry = "wheels" }
wheels = [{ path = "demo-1.0-py3-none-any.whl" }]
"#,
    );
    let l = load(&p, &env("3.11.2"), &Choice::default()).unwrap();
    let Artifacts::Files { wheels, .. } = &l.packages[0].artifacts else {
        panic!()
    };
    assert_eq!(
        wheels[0].path,
        Some(d.path().join("wheels/demo-1.0-py3-none-any.whl"))
    );
    assert_eq!(wheels[0].sha256, None);
    assert!(l.registries.is_empty());
}
