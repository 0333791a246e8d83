//! The real-world corpus (issue 11): public projects' uv.lock files, each built onto a Debian
//! python3 base, verified, and its main modules imported in runc.
//!
//! `tests/corpus/<name>/SOURCE` names each project (repository, commit, lock path, sha256 of the
//! lock, kind, base, extras, the modules to import). The locks themselves are third-party data and
//! are not committed: `tests/corpus/fetch-data.py` writes them, index placeholders in, to the
//! corpus data directory (`IMGBUILD_CORPUS_DATA`, default `~/.cache/imgbuild-corpus`). These tests
//! fill the placeholders in at run time: `@INDEX@` with the index pip uses, `@FILES@` with the
//! host the index's own simple pages link files on.
//!
//! One `#[ignore]`d test per project (`just corpus` runs them); a project that does not work
//! yet fails its test, naming the stage and imgbuild's first lines. `corpus_is_well_formed`
//! always runs and needs no network.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn corpus_dir() -> PathBuf {
    repo().join("tests/corpus")
}

fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IMGBUILD_CORPUS_DATA") {
        return PathBuf::from(d);
    }
    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/imgbuild-corpus")
}

/// Every project directory with a SOURCE file, sorted.
fn project_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("SOURCE").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

struct Source {
    repository: String,
    commit: String,
    lock: String,
    lock_sha256: String,
    packages: i64,
    kind: String,
    files: Vec<String>,
    base: String,
    extras: Vec<String>,
    imports: Vec<String>,
    project_modules: Vec<String>,
    layer_options: String,
    image_options: String,
    layers_before: String,
}

fn strings(t: &toml::Table, key: &str) -> Vec<String> {
    t.get(key)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn source(name: &str) -> Source {
    let path = corpus_dir().join(name).join("SOURCE");
    let text = std::fs::read_to_string(&path).unwrap();
    let t: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let s = |k: &str| {
        t.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("{}: no string `{k}`", path.display()))
            .to_string()
    };
    Source {
        repository: s("repository"),
        commit: s("commit"),
        lock: s("lock"),
        lock_sha256: s("lock_sha256"),
        packages: t.get("packages").and_then(|v| v.as_integer()).unwrap_or(-1),
        kind: s("kind"),
        files: strings(&t, "files"),
        base: s("base"),
        extras: strings(&t, "extras"),
        imports: strings(&t, "imports"),
        project_modules: strings(&t, "project_modules"),
        layer_options: t
            .get("layer_options")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        image_options: t
            .get("image_options")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        layers_before: t
            .get("layers_before")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// URLs `https://HOST/…` (HOST a real host name, not a placeholder) containing `suffix`.
fn real_urls_matching<'a>(text: &'a str, suffix: &str) -> Vec<&'a str> {
    text.match_indices("https://")
        .filter_map(|(i, _)| {
            let rest = &text[i..];
            let end = rest.find('"').unwrap_or(rest.len());
            let url = &rest[..end];
            let host = url[8..].split('/').next().unwrap_or_default();
            let real_host = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
            (real_host && url.contains(suffix)).then_some(url)
        })
        .collect()
}

#[test]
fn corpus_is_well_formed() {
    let names = project_names();
    assert!(names.len() >= 12, "the corpus has {} projects", names.len());
    assert_eq!(
        names,
        {
            let mut v: Vec<String> = PROJECTS.iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        },
        "every tests/corpus/*/SOURCE has its test in PROJECTS (and no test lacks a SOURCE)"
    );
    for name in &names {
        let s = source(name);
        assert!(
            s.repository.starts_with("https://github.com/")
                && s.repository.matches('/').count() == 4,
            "{name}: repository {}",
            s.repository
        );
        assert!(is_hex(&s.commit, 40), "{name}: commit {}", s.commit);
        assert!(is_hex(&s.lock_sha256, 64), "{name}: lock_sha256");
        assert!(s.lock.ends_with("uv.lock"), "{name}: lock {}", s.lock);
        assert!(s.packages > 0, "{name}: packages");
        assert!(!s.kind.is_empty(), "{name}: kind");
        assert!(
            ["bookworm", "trixie"].contains(&s.base.as_str()),
            "{name}: base {}",
            s.base
        );
        assert!(
            !s.imports.is_empty(),
            "{name}: nothing to import would prove nothing"
        );
    }
    // No committed corpus file names an index or a files host.
    let index = package_index();
    let index_host = index.split('/').nth(2).unwrap_or_default().to_string();
    for e in walk(&corpus_dir()) {
        let text = std::fs::read_to_string(&e).unwrap_or_default();
        assert!(
            index_host.is_empty() || !text.contains(&index_host),
            "{} names the index host",
            e.display()
        );
        let urls = [
            real_urls_matching(&text, "/simple"),
            real_urls_matching(&text, "/packages/"),
        ]
        .concat();
        assert!(
            urls.is_empty(),
            "{} names index URLs: {urls:?}",
            e.display()
        );
    }
    // The data, where it has been fetched: placeholders in, no real index URLs left.
    for name in &names {
        let lock = data_dir().join(name).join("uv.lock");
        let Ok(text) = std::fs::read_to_string(&lock) else {
            eprintln!(
                "{name}: no data at {} (tests/corpus/fetch-data.py)",
                lock.display()
            );
            continue;
        };
        assert!(
            text.contains("registry = \"@INDEX@\""),
            "{}",
            lock.display()
        );
        assert!(
            text.contains("url = \"@FILES@/packages/"),
            "{}",
            lock.display()
        );
        assert!(
            !text.contains(&format!("registry = \"{index}\"")),
            "{}: index URL left in",
            lock.display()
        );
        assert!(
            real_urls_matching(&text, "/packages/").is_empty(),
            "{}: a files-host URL was left in",
            lock.display()
        );
        let s = source(name);
        for f in &s.files {
            assert!(
                data_dir().join(name).join(f).is_file(),
                "{name}: {f} missing from the data"
            );
        }
        let n = text.matches("\n[[package]]\n").count() as i64;
        assert_eq!(n, s.packages, "{name}: packages in the lock");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The host (scheme://host) the index links its files on, read from one simple page.
fn files_host(index: &str) -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let out = ok(Command::new("curl")
            .args(["-fsSL", "-H", "Accept: text/html"])
            .arg(format!("{}/idna/", index.trim_end_matches('/'))));
        let page = String::from_utf8_lossy(&out.stdout).into_owned();
        for (i, _) in page.match_indices("href=\"") {
            let url = &page[i + 6..];
            let url = &url[..url.find('"').unwrap_or(url.len())];
            if let Some(p) = url.find("/packages/") {
                if url.starts_with("https://") || url.starts_with("http://") {
                    return url[..p].to_string();
                }
            }
        }
        panic!("no absolute /packages/ link on the index's simple page for idna");
    })
    .clone()
}

/// Debian trixie + python3, made like the bookworm fixture (tarball cached per machine) and
/// imported once per machine. Layout tag `trixie`.
fn trixie_base() -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| debian_base("trixie", "python3"))
        .clone()
}

fn base_layout(suite: &str) -> PathBuf {
    match suite {
        "bookworm" => debian_python_base(),
        "trixie" => trixie_base(),
        other => panic!("unknown base {other}"),
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// One store for the whole corpus run: wheels are downloaded once.
fn corpus_store() -> PathBuf {
    std::env::temp_dir().join("imgbuild-corpus-store")
}

fn toml_list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The first `n` lines of `s` from its first `FAIL` line (`imgbuild test`) or `error` line on.
fn first_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let from = lines
        .iter()
        .position(|l| l.starts_with("FAIL") || l.starts_with("error"))
        .unwrap_or(0);
    lines[from..]
        .iter()
        .take(n)
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Builds, verifies and smoke-tests one project; panics naming the first stage that fails.
fn run(name: &str) {
    let s = source(name);
    let data = data_dir().join(name);
    assert!(
        data.join("uv.lock").is_file(),
        "{name}: no corpus data at {}; run `tests/corpus/fetch-data.py` (with --mirror DIR where GitHub is out of reach)",
        data.display()
    );
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("project");
    // With the project's source tree (`fetch-data.py --sources`), the project and its workspace
    // members are built and installed as `uv sync --no-editable` would, and its own modules are
    // imported too; without it only the third-party packages can be.
    let sources =
        data.join("src").is_dir() && std::env::var_os("IMGBUILD_CORPUS_NO_SOURCES").is_none();
    if sources {
        copy_tree(&data.join("src"), &p);
    } else {
        copy_tree(&data, &p);
        for d in ["src", "src.tmp"] {
            let _ = std::fs::remove_dir_all(p.join(d));
        }
    }
    let index = package_index();
    let lock = std::fs::read_to_string(p.join("uv.lock"))
        .unwrap()
        .replace("@INDEX@", index.trim_end_matches('/'))
        .replace("@FILES@", &files_host(&index));
    std::fs::write(p.join("uv.lock"), lock).unwrap();

    let base = base_layout(&s.base);
    let modules: Vec<&String> = if sources {
        s.imports.iter().chain(&s.project_modules).collect()
    } else {
        s.imports.iter().collect()
    };
    let smoke: Vec<String> = modules
        .into_iter()
        // A Django app's module may stop at "settings are not configured": it was found and its
        // code ran as far as it can without the project's settings — that counts as imported.
        // One that fails otherwise without settings (django-ninja reads them while importing)
        // is imported once more, in a new interpreter, after `settings.configure()`.
        // `a+b` imports a, then b, in one interpreter (psycopg_c must come after psycopg).
        .map(|m| {
            format!(
                "python3 -c 'import importlib\ntry:\n    [importlib.import_module(n) for n in \"{m}\".split(\"+\")]\nexcept Exception as e:\n    if type(e).__name__ != \"ImproperlyConfigured\": raise' 2>/dev/null || python3 -c 'import importlib\ntry:\n    import django\n    from django.conf import settings\n    settings.configure()\n    django.setup()\nexcept ImportError:\n    pass\ntry:\n    [importlib.import_module(n) for n in \"{m}\".split(\"+\")]\nexcept Exception as e:\n    if type(e).__name__ != \"ImproperlyConfigured\": raise'"
            )
        })
        .collect();
    let mut python = format!("lock = \"uv.lock\", extras = {}", toml_list(&s.extras));
    // The corpus holds the projects' locks, not their source trees: the project itself and its
    // workspace members cannot be built here, so they are left out unless SOURCE says otherwise.
    if !sources && !s.layer_options.contains("install_") && !s.layer_options.contains("packages") {
        python.push_str(", install_project = false, install_workspace = false");
    }
    if !s.layer_options.is_empty() {
        python.push_str(", ");
        python.push_str(&s.layer_options);
    }
    let cfg = format!(
        "[images.app]\nbase = \"oci:{}:{}\"\nsmoke = {}\n{}\n{}\n\n[[images.app.layers]]\nname = \"python-deps\"\npython = {{ {python} }}\n",
        base.display(),
        s.base,
        toml_list(&smoke),
        s.image_options,
        s.layers_before,
    );
    std::fs::write(p.join("imgbuild.toml"), &cfg).unwrap();
    eprintln!(
        "corpus {name}: {} @ {} ({} packages, base {}, {})\n{cfg}",
        s.repository,
        s.commit,
        s.packages,
        s.base,
        if sources {
            "with its sources"
        } else {
            "lock only"
        }
    );

    // Git sources from a local mirror where GitHub is out of reach (`IMGBUILD_CORPUS_GIT_MIRROR`:
    // DIR/<owner>+<name>/repo, as for fetch-data.py --mirror), through git's own `insteadOf`.
    let mut git_env: Vec<(String, String)> = Vec::new();
    if let Some(mirror) = std::env::var_os("IMGBUILD_CORPUS_GIT_MIRROR") {
        let lock_text = std::fs::read_to_string(p.join("uv.lock")).unwrap();
        let mut n = 0;
        for (i, _) in lock_text.match_indices("git = \"https://github.com/") {
            let url = &lock_text[i + 7..];
            let url = &url[..url.find(['?', '#', '"']).unwrap()];
            let slug = url
                .trim_start_matches("https://github.com/")
                .trim_end_matches(".git")
                .replace('/', "+");
            let repo = Path::new(&mirror).join(slug).join("repo");
            if repo.is_dir() {
                git_env.push((
                    format!("GIT_CONFIG_KEY_{n}"),
                    format!("url.file://{}.insteadOf", repo.display()),
                ));
                git_env.push((format!("GIT_CONFIG_VALUE_{n}"), url.to_string()));
                n += 1;
            }
        }
        git_env.push(("GIT_CONFIG_COUNT".into(), n.to_string()));
    }
    let step = |stage: &str, args: &[&str]| {
        let started = std::time::Instant::now();
        let out = imgbuild(&p)
            .envs(git_env.iter().map(|(k, v)| (k, v)))
            .env("IMGBUILD_CACHE", corpus_store())
            .env("SOURCE_DATE_EPOCH", "0")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!(
            "corpus {name}: {stage} {} in {:.1}s",
            if out.status.success() { "ok" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if !out.status.success() {
            eprintln!(
                "CORPUS-RESULT {name} {stage}-failed\n{}",
                first_lines(&stderr, 40)
            );
            panic!(
                "{name}: `imgbuild {}` failed ({}):\n{}\n{}",
                args.join(" "),
                out.status,
                first_lines(&stderr, 40),
                first_lines(&String::from_utf8_lossy(&out.stdout), 20)
            );
        }
        out
    };
    step("build", &["build", "app"]);
    step("verify", &["verify", "app"]);
    step("test", &["test", "app"]);
    eprintln!("CORPUS-RESULT {name} ok");
}

macro_rules! corpus {
    ($($test:ident => $name:literal,)*) => {
        const PROJECTS: &[&str] = &[$($name),*];
        $(
            #[test]
            #[ignore = "the real-world corpus: `just corpus` (network, minutes)"]
            fn $test() {
                run($name);
            }
        )*
    };
}

corpus! {
    agent_toolkit => "agent-toolkit",
    archivebox => "archivebox",
    dash_gridco => "dash-gridco",
    dash_invst => "dash-invst",
    deer_flow => "deer-flow",
    django_docker => "django-docker",
    fastapi_celery => "fastapi-celery",
    flask_celery => "flask-celery",
    fullstack_fastapi => "fullstack-fastapi",
    lnbits => "lnbits",
    open_deep_research => "open-deep-research",
    owl => "owl",
    paper_qa => "paper-qa",
    paperless => "paperless",
    postmodern_mono => "postmodern-mono",
    pydis_bot => "pydis-bot",
    pydis_site => "pydis-site",
}
