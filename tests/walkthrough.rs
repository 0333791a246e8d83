//! The whole job, as the README tells it, on a copy of fixtures/job-agent against a real
//! loopback docker-registry: push both images, pin docker-compose.prod.yml (only `image:`
//! lines change), verify the pinned reference as the server would, run the smoke commands in
//! the images, and `pin --check` before and after a change. Then the CI recipe
//! (docs/ci/github-actions.yml, quoted in the README) is run step by step, and each failure of
//! the incident is reproduced on the real api image with the error text the README quotes.
//!
//! The frontend's base here is Debian bookworm with Debian's nodejs (debootstrapped: the tests
//! reach no registry but the package index), so its `node` start command is checked at build
//! time and `node --check` runs in the smoke test.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The README's walkthrough, in order; `{REGISTRY}` is 127.0.0.1:5000 in the README.
/// The `verify` line is completed with the digest that `pin` wrote.
const WALKTHROUGH: &[&str] = &[
    "sed -i 's|registry.example.com|{REGISTRY}|' imgbuild.toml docker-compose.yml docker-compose.prod.yml",
    "imgbuild api --push",
    "imgbuild frontend --push",
    "imgbuild pin docker-compose.prod.yml",
    "imgbuild verify {REGISTRY}/acme/job-agent-api@sha256:",
    "imgbuild test api",
    "imgbuild test frontend",
    "imgbuild pin --check docker-compose.prod.yml",
];

/// The README's incident table quotes these; `incident_failures_are_caught_with_these_errors`
/// produces each of them (or the test named beside it does).
const INCIDENT: &[&str] = &[
    // `alembic` not found in $PATH
    "layer `python-deps`: script `alembic` is not in any PATH directory of the image (PATH=/usr/sbin:/usr/bin:/sbin:/bin); it is installed in /usr/local/bin, which is not on PATH",
    // …and the smoke command that runs it (tests/smoke.rs a_failing_smoke_command_fails_with_its_output)
    "FAIL  alembic --help (exit 127)",
    // No module named 'alembic.config': a file a later layer (or a partial copy) took away
    "alembic 1.20.1: /usr/local/lib/python3.11/dist-packages/alembic/config.py (in RECORD) was deleted by layer `cleanup`",
    "require `alembic.config`: not importable by /usr/bin/python3.11",
    "alembic 1.20.1: /usr/local/lib/python3.11/site-packages/alembic/config.py (in RECORD) is missing from the image",
    // packages for another Python minor version (tests/python.rs a_wheel_for_the_wrong_python_version)
    "fast 1.0 has no wheel for the target (CPython 3.11.2 at /usr/bin/python3.11 (glibc 2.36, x86_64), site directory /usr/local/lib/python3.11/dist-packages): pylock.toml has fast-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
    "/usr/local/lib/python3.12/dist-packages holds packages for Python 3.12, but no PATH directory of the image has python3.12",
    // a directory the runtime interpreter never reads
    "layer `python-deps`: site directory /usr/local/lib/python3.11/site-packages is not on the default sys.path of /usr/bin/python3.11",
    "/usr/local/lib/python3.11/site-packages holds packages that no interpreter of the image reads: there is no /usr/local/bin/python3.11 for it and PYTHONPATH does not name it; /usr/bin/python3.11 is Debian's python3, which reads /usr/local/lib/python3.11/dist-packages",
    // a console script whose shebang names the build machine's interpreter
    // (tests/python.rs a_script_whose_shebang_names_a_host_path)
    "script `tool` (/usr/local/bin/tool): its shebang names /tmp/build-venv/bin/python3, which does not exist in the image",
    "celery 5.7.0: script /usr/local/bin/celery: its shebang names /builder/venv/bin/python, which does not exist in the image",
    // a missing build output (tests/frontend.rs)
    "layer `frontend`: `from = \".next/standalone\"` does not exist",
    "hint: run `npm run build` with `output: \"standalone\"` in next.config.ts (or .js/.mjs); it writes .next/standalone and .next/static",
    // found only at deploy time: a compose file that does not pin what was just pushed
    "are not pinned to the current digests; run `imgbuild pin` without --check",
];

/// The CI recipe's steps the tests cannot run here: installing imgbuild (the test binary is
/// used) and `npm run build` (the fixture holds its output; no npm registry is reachable).
const CI_SKIPPED: &[&str] = &["Install imgbuild", "Build the frontend"];

/// uv.lock for the fixture, made once per test binary with make-lock.sh (uv and the index).
fn uv_lock() -> PathBuf {
    static LOCK: OnceLock<PathBuf> = OnceLock::new();
    LOCK.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("imgbuild-test-walk-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        copy_fixture("job-agent", &dir);
        make_uv_lock(&dir);
        dir.join("uv.lock")
    })
    .clone()
}

/// `t/job-agent`: a copy of the fixture with its uv.lock, and the bases its imgbuild.toml
/// names at `../.bases/`: the Debian python3 and nginx+nodejs imports.
fn project(t: &Path) -> PathBuf {
    let p = t.join("job-agent");
    copy_fixture("job-agent", &p);
    fs::copy(uv_lock(), p.join("uv.lock")).unwrap();
    fs::create_dir_all(t.join(".bases")).unwrap();
    std::os::unix::fs::symlink(debian_python_base(), t.join(".bases/debian-python3")).unwrap();
    std::os::unix::fs::symlink(
        debian_web_base(),
        t.join(".bases/debian-nginx-light-nodejs"),
    )
    .unwrap();
    p
}

/// PATH with the test binary first.
fn test_path() -> String {
    format!(
        "{}:{}",
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `program` in `dir` with the test binary first on PATH, the shared store, and no
/// credentials but what the caller adds (HOME is `home`).
fn in_project(program: &str, dir: &Path, home: &Path) -> Command {
    let mut c = Command::new(program);
    c.current_dir(dir)
        .env("PATH", test_path())
        .env("IMGBUILD_CACHE", shared_store())
        .env_remove("SOURCE_DATE_EPOCH");
    without_credentials(&mut c, home);
    c
}

/// `sh -c LINE`, as a reader types the README's command lines.
fn shell(dir: &Path, home: &Path, line: &str) -> Command {
    let mut c = in_project("sh", dir, home);
    c.arg("-c").arg(line);
    c
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `(before, after)` of every line that differs; the files have the same number of lines.
fn changed_lines(before: &str, after: &str) -> Vec<(String, String)> {
    let (b, a): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    assert_eq!(b.len(), a.len(), "no line added or removed");
    b.iter()
        .zip(&a)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| (x.to_string(), y.to_string()))
        .collect()
}

/// A pushed reference as `imgbuild … --push` prints it.
fn assert_reference(s: &str, repository: &str) {
    let digest = s
        .strip_prefix(&format!("{repository}@sha256:"))
        .unwrap_or_else(|| panic!("`{s}` is not {repository}@sha256:…"));
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{s}"
    );
}

#[test]
fn the_production_walkthrough_of_the_readme() {
    let reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let p = project(t.path());
    let home = t.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let line = |i: usize| WALKTHROUGH[i].replace("{REGISTRY}", &reg.host());
    let api = format!("{}/acme/job-agent-api", reg.host());
    let web = format!("{}/acme/job-agent-frontend", reg.host());

    // 0. Point the project at the registry.
    ok(&mut shell(&p, &home, &line(0)));
    let prod_before = fs::read_to_string(p.join("docker-compose.prod.yml")).unwrap();
    assert!(prod_before.contains(&format!("image: {api}:latest")));

    // 1. Build, verify and push each image; stdout is the pushed reference.
    let out = ok(&mut shell(&p, &home, &line(1)));
    let api_ref = stdout(&out);
    assert_reference(&api_ref, &api);
    assert!(
        err(&out).contains(&format!("pushed api → {api_ref}: ")),
        "{}",
        err(&out)
    );
    let out = ok(&mut shell(&p, &home, &line(2)));
    let web_ref = stdout(&out);
    assert_reference(&web_ref, &web);
    assert!(
        !skopeo_raw(&api_ref, None).is_empty(),
        "the registry serves the pushed manifest"
    );

    // 2. Pin: only the four `image:` lines of our images change; quotes and comments stay.
    ok(&mut shell(&p, &home, &line(3)));
    let prod = fs::read_to_string(p.join("docker-compose.prod.yml")).unwrap();
    let changed = changed_lines(&prod_before, &prod);
    let want: Vec<(String, String)> = [
        (
            format!("    image: {api}:latest"),
            format!("    image: {api_ref}"),
        ),
        (
            format!("    image: {api}:latest   # same image as api: alembic must be in it"),
            format!("    image: {api_ref}   # same image as api: alembic must be in it"),
        ),
        (
            format!("    image: \"{api}:latest\""),
            format!("    image: \"{api_ref}\""),
        ),
        (
            format!("    image: '{web}:latest'"),
            format!("    image: '{web_ref}'"),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(changed, want);
    assert!(
        prod.contains("    image: postgres:16\n"),
        "postgres is not ours"
    );

    // 3. The server verifies the pinned reference before pulling: a fresh store, no project.
    let server = t.path().join("server");
    fs::create_dir_all(&server).unwrap();
    let pinned = prod
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("image: ")
                .filter(|v| v.starts_with(&api))
        })
        .unwrap()
        .to_string();
    assert_eq!(pinned, api_ref);
    let verify = format!("{}{}", line(4), pinned.rsplit_once("@sha256:").unwrap().1);
    let out = ok(shell(&server, &home, &verify).env("IMGBUILD_CACHE", server.join("cache")));
    assert!(
        err(&out).contains(&format!("verified {api_ref}: 3 layers, "))
            && err(&out).contains("every digest and diff_id checks"),
        "{}",
        err(&out)
    );

    // 4. The api's smoke commands: the import checks and `alembic upgrade head` on SQLite.
    let toml = fs::read_to_string(p.join("imgbuild.toml")).unwrap();
    assert!(toml.contains("\"alembic upgrade head\""));
    require_tool("runc");
    let out = ok(&mut shell(&p, &home, &line(5)));
    let e = err(&out);
    for cmd in [
        "python3 -c 'from alembic.config import Config'",
        "python3 -c 'import src.main, src.worker, psycopg'",
        "alembic upgrade head",
    ] {
        assert!(e.contains(&format!("ok    {cmd}\n")), "{e}");
    }
    assert!(e.contains("api: 7 smoke command(s) passed"), "{e}");

    // 5. The frontend: public/ exists (the project has none), server.js is in place and the
    //    image's own node parses it.
    assert!(!p.join("frontend/public").exists());
    for check in ["\"test -d /app/public\"", "\"test -f /app/server.js\""] {
        assert!(toml.contains(check), "{check}");
    }
    let out = ok(&mut shell(&p, &home, &line(6)));
    let e = err(&out);
    assert!(
        e.contains("ok    test -d /app/public\n") && e.contains("ok    test -f /app/server.js\n"),
        "{e}"
    );
    assert!(e.contains("ok    node --check /app/server.js\n"), "{e}");
    assert!(e.contains("frontend: 4 smoke command(s) passed"), "{e}");

    // 6. `pin --check`: 0 now; 1 after a change is rebuilt and pushed, the file untouched.
    ok(&mut shell(&p, &home, &line(7)));
    let mut main = fs::read_to_string(p.join("src/main.py")).unwrap();
    main.push_str("\n# a change after the pin\n");
    fs::write(p.join("src/main.py"), main).unwrap();
    let new_ref = stdout(&ok(&mut shell(&p, &home, &line(1))));
    assert_reference(&new_ref, &api);
    assert_ne!(new_ref, api_ref);
    let out = shell(&p, &home, &line(7)).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let e = err(&out);
    assert!(
        e.contains(&format!(
            "not pinned: api (docker-compose.prod.yml:19) {api_ref} → {new_ref}"
        )),
        "{e}"
    );
    assert!(
        e.contains("3 service(s) in") && e.contains(INCIDENT.last().unwrap()),
        "{e}"
    );
    assert_eq!(
        fs::read_to_string(p.join("docker-compose.prod.yml")).unwrap(),
        prod
    );
    ok(&mut shell(
        &p,
        &home,
        "imgbuild pin docker-compose.prod.yml",
    ));
    ok(&mut shell(&p, &home, &line(7)));
}

/// A `run:` step of the workflow: its name and script (`uses:` steps have no script).
struct Step {
    name: String,
    run: Option<String>,
}

/// The steps of docs/ci/github-actions.yml, read line by line (the file keeps to one shape:
/// `- name:`/`- uses:` items with `run: CMD` or `run: |` blocks).
fn workflow_steps(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix("- ") {
            steps.push(Step {
                name: rest.strip_prefix("name: ").unwrap_or(rest).to_string(),
                run: None,
            });
        } else if let (Some(s), Some(run)) = (steps.last_mut(), t.strip_prefix("run: ")) {
            if run == "|" {
                let indent = l.len() - t.len();
                let mut body = String::new();
                while i + 1 < lines.len() {
                    let n = lines[i + 1];
                    if !n.trim().is_empty() && n.len() - n.trim_start().len() <= indent {
                        break;
                    }
                    body.push_str(n.trim_start());
                    body.push('\n');
                    i += 1;
                }
                s.run = Some(body);
            } else {
                s.run = Some(format!("{run}\n"));
            }
        }
        i += 1;
    }
    steps
}

/// The CI recipe on a git checkout of the project whose `origin` is a local bare repository:
/// every `run:` step but installing imgbuild and `npm run build`, with the registry's
/// credentials in IMGBUILD_REGISTRY_USER/IMGBUILD_REGISTRY_PASSWORD as the secrets give them.
/// Then the server logs in and verifies the reference that CI committed.
#[test]
fn the_ci_recipe_builds_pushes_pins_and_commits() {
    let reg = Registry::start(Some(("ci", "s3cret-pw")));
    let t = tempfile::tempdir().unwrap();
    let p = project(t.path());
    let home = t.path().join("home");
    fs::create_dir_all(&home).unwrap();
    for f in [
        "imgbuild.toml",
        "docker-compose.yml",
        "docker-compose.prod.yml",
    ] {
        let s = fs::read_to_string(p.join(f)).unwrap();
        fs::write(p.join(f), s.replace("registry.example.com", &reg.host())).unwrap();
    }
    let git = |dir: &Path, args: &[&str]| {
        ok(Command::new("git")
            .args([
                "-c",
                "user.name=dev",
                "-c",
                "user.email=dev@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .env("HOME", &home))
    };
    let origin = t.path().join("origin.git");
    git(
        t.path(),
        &["init", "-q", "--bare", origin.to_str().unwrap()],
    );
    git(&p, &["init", "-q"]);
    git(&p, &["add", "."]);
    git(&p, &["commit", "-q", "-m", "job-agent"]);
    git(&p, &["remote", "add", "origin", origin.to_str().unwrap()]);
    git(&p, &["push", "-q", "-u", "origin", "main"]);
    assert!(
        !String::from_utf8_lossy(&git(&p, &["ls-files"]).stdout).contains("uv.lock"),
        "uv.lock is not committed"
    );

    // GitHub's runners need sudo for runc; this test runs as root, so sudo only runs its command.
    let shims = t.path().join("shims");
    fs::create_dir_all(&shims).unwrap();
    fs::write(shims.join("sudo"), "#!/bin/sh\nexec \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(shims.join("sudo"), fs::Permissions::from_mode(0o755)).unwrap();

    let text = fs::read_to_string(repo().join("docs/ci/github-actions.yml")).unwrap();
    let steps = workflow_steps(&text);
    for s in CI_SKIPPED {
        assert!(steps.iter().any(|x| x.name == *s), "no step `{s}`");
    }
    require_tool("runc");
    let mut ran = Vec::new();
    for s in &steps {
        let Some(run) = &s.run else { continue };
        if CI_SKIPPED.contains(&s.name.as_str()) {
            continue;
        }
        // As GitHub runs a `run:` script with `shell: bash`.
        let mut c = in_project("bash", &p, &home);
        c.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", run])
            .env("PATH", format!("{}:{}", shims.display(), test_path()))
            .env("IMGBUILD_REGISTRY_USER", "ci")
            .env("IMGBUILD_REGISTRY_PASSWORD", "s3cret-pw");
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "step `{}` failed:\n{run}\nstdout: {}\nstderr: {}",
            s.name,
            String::from_utf8_lossy(&out.stdout),
            err(&out)
        );
        ran.push(s.name.clone());
    }
    assert_eq!(
        ran,
        [
            "Build, verify and push both images",
            "Run the smoke commands inside the images",
            "Pin docker-compose.prod.yml to the pushed digests",
            "Commit the pinned compose file",
        ]
    );

    // The summary that the artifact step uploads: one JSON object per image.
    let summary = fs::read_to_string(p.join("imgbuild-summary.json")).unwrap();
    let refs: Vec<(String, String)> = summary
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(
                v["reference"].as_str().unwrap(),
                format!(
                    "{}@{}",
                    v["repository"].as_str().unwrap(),
                    v["digest"].as_str().unwrap()
                )
            );
            assert!(v["uploaded_bytes"].as_u64().unwrap() > 0, "{v}");
            (
                v["image"].as_str().unwrap().to_string(),
                v["reference"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        refs.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        ["api", "frontend"]
    );

    // origin has the pinned compose file, committed on top of the project's commit.
    let committed =
        String::from_utf8_lossy(&git(&origin, &["show", "main:docker-compose.prod.yml"]).stdout)
            .into_owned();
    for (_, r) in &refs {
        assert!(committed.contains(r.as_str()), "{r} in {committed}");
    }
    let log =
        String::from_utf8_lossy(&git(&origin, &["log", "--format=%s", "main"]).stdout).into_owned();
    assert!(
        log.starts_with("Pin images to the digests built from "),
        "{log}"
    );
    assert!(
        !String::from_utf8_lossy(&git(&origin, &["show", "--stat", "--format=", "main"]).stdout)
            .contains("imgbuild-summary.json"),
        "only the compose file is committed"
    );

    // The server: without credentials the registry refuses; after `imgbuild login` the
    // committed reference verifies.
    let server = t.path().join("server");
    let server_home = server.join("home");
    fs::create_dir_all(&server_home).unwrap();
    let api_ref = &refs[0].1;
    let out = shell(&server, &server_home, &format!("imgbuild verify {api_ref}"))
        .env("IMGBUILD_CACHE", server.join("cache"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "verified without credentials?");
    ok(shell(
        &server,
        &server_home,
        &format!(
            "echo s3cret-pw | imgbuild login {} --username ci --password-stdin",
            reg.host()
        ),
    )
    .env("IMGBUILD_CACHE", server.join("cache")));
    let out = ok(
        shell(&server, &server_home, &format!("imgbuild verify {api_ref}"))
            .env("IMGBUILD_CACHE", server.join("cache")),
    );
    assert!(
        err(&out).contains(&format!("verified {api_ref}: 3 layers")),
        "{}",
        err(&out)
    );
}

/// Each failure of the incident, made on the real api image (Debian bookworm, the fixture's
/// uv.lock), and the error that stops it. An "image built elsewhere" is the api image unpacked,
/// damaged the way the incident's Dockerfiles damaged theirs, and imported as a base layout.
#[test]
fn incident_failures_are_caught_with_these_errors() {
    let t = tempfile::tempdir().unwrap();
    let p = project(t.path());
    let home = t.path().join("home");
    fs::create_dir_all(&home).unwrap();
    ok(&mut shell(&p, &home, "imgbuild build api"));
    let good = fs::read_to_string(p.join("imgbuild.toml")).unwrap();
    let build_fails = |toml: &str| -> String {
        fs::write(p.join("imgbuild.toml"), toml).unwrap();
        let out = shell(&p, &home, "imgbuild build api").output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", err(&out));
        err(&out)
    };
    let has = |e: &str, i: usize| {
        assert!(
            e.contains(INCIDENT[i]),
            "expected `{}` in: {e}",
            INCIDENT[i]
        )
    };

    // `alembic` not found in $PATH: the image's PATH does not have the scripts directory.
    let e = build_fails(&good.replace(
        "env = { PYTHONUNBUFFERED = \"1\" }",
        "env = { PYTHONUNBUFFERED = \"1\", PATH = \"/usr/sbin:/usr/bin:/sbin:/bin\" }",
    ));
    has(&e, 0);

    // No module named 'alembic.config': a later layer deletes a file the wheel installed.
    fs::create_dir_all(p.join("cleanup")).unwrap();
    fs::write(p.join("cleanup/.wh.config.py"), "").unwrap();
    let e = build_fails(&format!("{good}\n[[images.api.layers]]\nname = \"cleanup\"\nfiles = [{{ from = \"cleanup\", to = \"/usr/local/lib/python3.11/dist-packages/alembic\" }}]\n"));
    has(&e, 2);
    has(&e, 3);

    // A directory the interpreter never reads: site-packages on Debian's python3.
    let e = build_fails(&good.replace(
        "scripts = [\"alembic\", \"celery\", \"uvicorn\"] }",
        "scripts = [\"alembic\", \"celery\", \"uvicorn\"], site_dir = \"/usr/local/lib/python3.11/site-packages\" }",
    ));
    has(&e, 7);
    fs::write(p.join("imgbuild.toml"), &good).unwrap();

    // An image built elsewhere: packages copied to site-packages (which Debian's python3 does
    // not read) with alembic/config.py left behind, a copy for Python 3.12, and a console script
    // whose shebang is the builder's venv.
    let bundle = t.path().join("bundle");
    umoci_unpack(&p.join(".imgbuild/oci"), "api", &bundle);
    let root = bundle.join("rootfs");
    let lib = root.join("usr/local/lib");
    fs::rename(
        lib.join("python3.11/dist-packages"),
        lib.join("python3.11/site-packages"),
    )
    .unwrap();
    fs::remove_file(lib.join("python3.11/site-packages/alembic/config.py")).unwrap();
    fs::create_dir_all(lib.join("python3.12/dist-packages")).unwrap();
    ok(Command::new("cp")
        .arg("-a")
        .arg(lib.join("python3.11/site-packages/six.py"))
        .arg(lib.join("python3.11/site-packages/six-1.17.0.dist-info"))
        .arg(lib.join("python3.12/dist-packages")));
    let celery = root.join("usr/local/bin/celery");
    let script = fs::read_to_string(&celery).unwrap();
    let (_, rest) = script.split_once('\n').unwrap();
    fs::write(&celery, format!("#!/builder/venv/bin/python\n{rest}")).unwrap();
    ok(&mut shell(
        t.path(),
        &home,
        &format!(
            "imgbuild base import {} --output oci:elsewhere:api --compression none",
            root.display()
        ),
    ));
    let out = shell(t.path(), &home, "imgbuild verify oci:elsewhere:api")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let e = err(&out);
    assert!(
        e.contains("error: oci:elsewhere:api failed verification ("),
        "{e}"
    );
    for i in [4, 6, 8, 10] {
        has(&e, i);
    }
}

/// The README quotes the CI recipe verbatim, runs the walkthrough's command lines, and its
/// incident table quotes the errors above.
#[test]
fn the_readme_quotes_what_the_tests_run() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let workflow = fs::read_to_string(repo().join("docs/ci/github-actions.yml")).unwrap();
    assert!(
        readme.contains(&format!("```yaml\n{workflow}```\n")),
        "README.md must quote docs/ci/github-actions.yml verbatim in a ```yaml block"
    );
    for l in WALKTHROUGH {
        let l = format!("$ {}", l.replace("{REGISTRY}", "127.0.0.1:5000"));
        assert!(readme.contains(&l), "README.md lacks `{l}`");
    }
    for e in INCIDENT {
        assert!(readme.contains(e), "README.md's incident table lacks `{e}`");
    }
    // The two commands at the top.
    assert!(readme.contains("cargo run --release -- sample /tmp/imgbuild-sample"));
    assert!(readme.contains(".ci/install-deps && cargo test --locked"));
}
