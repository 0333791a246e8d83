use super::*;
use crate::image::History;
use crate::layer;
use crate::python::testutil::{debian_target, wheel};
use crate::python::wheel::{install, merge};
use crate::rootfs::{Listing, Node};
use crate::store::Store;

const SITE: &str = "usr/local/lib/python3.11/dist-packages";

fn node(path: &str, kind: Kind, mode: u32, content: Option<&[u8]>, target: Option<&str>) -> Node {
    Node {
        path: path.into(),
        kind,
        mode,
        size: content.map(|c| c.len() as u64).unwrap_or(0),
        sha256: content
            .map(|c| crate::rootfs::FileSha::from_hex(&crate::digest::sha256_hex(c)).unwrap()),
        target: target.map(String::from),
    }
}

fn base_listing() -> Listing {
    Listing {
        nodes: vec![
            node("usr", Kind::Dir, 0o755, None, None),
            node("usr/bin", Kind::Dir, 0o755, None, None),
            node(
                "usr/bin/python3",
                Kind::Symlink,
                0o777,
                None,
                Some("python3.11"),
            ),
            node(
                "usr/bin/python3.11",
                Kind::File,
                0o755,
                Some(b"\x7fELF"),
                None,
            ),
            node("usr/bin/env", Kind::File, 0o755, Some(b"\x7fELF"), None),
            node("usr/local/bin", Kind::Dir, 0o755, None, None),
            node(SITE, Kind::Dir, 0o755, None, None),
        ],
        captured: Default::default(),
    }
}

fn config() -> ImageConfig {
    let mut c = ImageConfig::default();
    for (i, by) in [
        "imgbuild base import rootfs.tar",
        "imgbuild layer python-deps (python uv.lock)",
        "imgbuild layer app (src)",
    ]
    .iter()
    .enumerate()
    {
        let _ = i;
        c.history.push(History {
            created_by: Some(by.to_string()),
            ..Default::default()
        });
    }
    c.config.set_env("PATH", crate::image::DEFAULT_PATH);
    c
}

/// The merged filesystem of the base, a python layer with two wheels, and `app` (layer 2).
fn image(app: Listing) -> (Rootfs, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let t = debian_target();
    let demo = wheel(
        d.path(),
        "demo-1.0-py3-none-any.whl",
        &[
            ("demo/__init__.py", b"", 0o644),
            ("demo/cli.py", b"def main():\n    return 0\n", 0o644),
            (
                "demo/_speed.cpython-311-x86_64-linux-gnu.so",
                b"\x7fELF",
                0o755,
            ),
            ("nsp/sub/mod.py", b"x = 1\n", 0o644),
            (
                "demo-1.0.dist-info/entry_points.txt",
                b"[console_scripts]\ndemo = demo.cli:main\n",
                0o644,
            ),
        ],
        |_| {},
    );
    let single = wheel(
        d.path(),
        "single-2.0-py3-none-any.whl",
        &[("single.py", b"y = 2\n", 0o644)],
        |_| {},
    );
    let listing = installed(
        d.path(),
        &t,
        &[
            (&demo, "demo-1.0-py3-none-any.whl"),
            (&single, "single-2.0-py3-none-any.whl"),
        ],
    );
    assert!(listing
        .captured
        .contains_key(&format!("{SITE}/demo-1.0.dist-info/RECORD")));
    assert!(listing.captured["usr/local/bin/demo"].starts_with("#!/usr/bin/python3.11"));
    let mut fs = Rootfs::default();
    fs.apply(0, &base_listing());
    fs.apply(1, &listing);
    fs.apply(2, &app);
    (fs, d)
}

fn dists() -> Vec<(String, String)> {
    vec![
        ("demo".into(), "1.0".into()),
        ("single".into(), "2.0".into()),
    ]
}

fn problems(fs: &Rootfs, require: &[&str], scripts: &[&str]) -> Vec<String> {
    let t = debian_target();
    let d = dists();
    let require: Vec<String> = require.iter().map(|s| s.to_string()).collect();
    let scripts: Vec<String> = scripts.iter().map(|s| s.to_string()).collect();
    let e = Expect {
        layer: "python-deps",
        me: 1,
        target: &t,
        dists: &d,
        require: &require,
        scripts: &scripts,
    };
    let mut out = Vec::new();
    check_layer(fs, &config(), &e, &mut out);
    out.into_iter().map(|p| p.message).collect()
}

fn app(nodes: Vec<Node>, captured: &[(&str, &str)]) -> Listing {
    Listing {
        nodes,
        captured: captured
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The listing of a layer holding `wheels` installed for `t` (written to a store under `dir`).
fn installed(
    dir: &std::path::Path,
    t: &Target,
    wheels: &[(&std::path::PathBuf, &str)],
) -> crate::rootfs::Listing {
    let all = wheels
        .iter()
        .map(|(w, name)| install(w, name, t, (0, 0)).unwrap())
        .collect();
    let entries = layer::normalise(merge(all, &Default::default()).unwrap().entries).unwrap();
    let store = Store::open(dir.join("store")).unwrap();
    let none = crate::compress::Compression::None;
    layer::write(
        &entries,
        0,
        none,
        crate::compress::DEFAULT_GZIP_LEVEL,
        &store,
        &|_| {},
    )
    .unwrap()
    .1
}

#[test]
fn a_clean_install_passes_every_check() {
    let (fs, _d) = image(app(vec![node("app", Kind::Dir, 0o755, None, None)], &[]));
    let p = problems(
        &fs,
        &[
            "demo",
            "demo.cli",
            "demo._speed",
            "nsp.sub.mod",
            "nsp",
            "single",
        ],
        &["demo", "env"],
    );
    assert!(p.is_empty(), "{p:#?}");
    assert!(
        check_rootfs(&fs, &config()).is_empty(),
        "{:#?}",
        check_rootfs(&fs, &config())
    );
}

#[test]
fn later_layers_that_delete_replace_or_add_files_are_named() {
    let cli = format!("{SITE}/demo/cli.py");
    let listing = app(
        vec![
            node(
                &format!("{SITE}/demo/.wh.cli.py"),
                Kind::File,
                0o644,
                Some(b""),
                None,
            ),
            node(
                &format!("{SITE}/single.py"),
                Kind::File,
                0o644,
                Some(b"y = 3\n"),
                None,
            ),
            node(
                &format!("{SITE}/demo/extra.py"),
                Kind::File,
                0o644,
                Some(b"evil"),
                None,
            ),
            node(
                &format!("{SITE}/demo/__pycache__/cli.cpython-311.pyc"),
                Kind::File,
                0o644,
                Some(b"pyc"),
                None,
            ),
        ],
        &[],
    );
    let (fs, _d) = image(listing);
    let p = problems(&fs, &["demo.cli"], &[]);
    let want = [
        format!("demo 1.0: /{cli} (in RECORD) was deleted by layer `app`"),
        format!("single 2.0: /{SITE}/single.py (in RECORD) is replaced by layer `app` (it was installed by layer `python-deps`)"),
        format!("/{SITE}/demo/extra.py (written by layer `app`) is claimed by no RECORD"),
        "require `demo.cli`: not importable by /usr/bin/python3.11".to_string(),
    ];
    for w in &want {
        assert!(
            p.iter().any(|m| m.starts_with(w.as_str())),
            "missing `{w}` in {p:#?}"
        );
    }
    assert_eq!(p.len(), 4, "{p:#?}");
    let r: Vec<String> = check_rootfs(&fs, &config())
        .into_iter()
        .map(|p| p.message)
        .collect();
    assert!(
        r.iter()
            .any(|m| m.contains("demo/cli.py (in RECORD) was deleted by layer `app`")),
        "{r:#?}"
    );
    assert!(r.iter().any(|m| m.contains("single.py: sha256=")), "{r:#?}");
    assert!(
        r.iter()
            .any(|m| m.contains("demo/extra.py is claimed by no RECORD")),
        "{r:#?}"
    );
}

#[test]
fn missing_modules_scripts_and_host_shebangs() {
    let listing = app(
        vec![
            node(
                "usr/local/bin/tool",
                Kind::File,
                0o755,
                Some(b"#!/tmp/venv/bin/python\n"),
                None,
            ),
            node(
                "usr/local/bin/noexec",
                Kind::File,
                0o644,
                Some(b"#!/usr/bin/python3.11\n"),
                None,
            ),
            node(
                "usr/local/bin/viaenv",
                Kind::File,
                0o755,
                Some(b"#!/usr/bin/env python9\n"),
                None,
            ),
        ],
        &[
            ("usr/local/bin/tool", "#!/tmp/venv/bin/python"),
            ("usr/local/bin/noexec", "#!/usr/bin/python3.11"),
            ("usr/local/bin/viaenv", "#!/usr/bin/env python9"),
        ],
    );
    let (fs, _d) = image(listing);
    let p = problems(
        &fs,
        &["nonexistent_mod", "demo.nope"],
        &["tool", "noexec", "viaenv", "missing"],
    );
    for w in [
        "require `nonexistent_mod`: not importable by /usr/bin/python3.11: none of nonexistent_mod.py, nonexistent_mod/__init__.py, nonexistent_mod/ or nonexistent_mod.cpython-311-x86_64-linux-gnu.so / .abi3.so / .so exists under /usr/local/lib/python3.11/dist-packages",
        "require `demo.nope`: not importable",
        "script `tool` (/usr/local/bin/tool): its shebang names /tmp/venv/bin/python, which does not exist in the image",
        "script `noexec` (/usr/local/bin/noexec) is not executable",
        "script `viaenv` (/usr/local/bin/viaenv): its shebang runs `python9` through env, and no PATH directory of the image has it",
        "script `missing` is not in any PATH directory of the image (PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)",
    ] {
        assert!(p.iter().any(|m| m.starts_with(w)), "missing `{w}` in {p:#?}");
    }
    assert_eq!(p.len(), 6, "{p:#?}");
}

#[test]
fn site_directory_must_be_on_sys_path_or_pythonpath() {
    let (fs, _d) = image(app(vec![], &[]));
    let mut t = debian_target();
    t.sys_path = vec!["/usr/lib/python3/dist-packages".into()];
    let d = dists();
    let e = Expect {
        layer: "python-deps",
        me: 1,
        target: &t,
        dists: &d,
        require: &[],
        scripts: &[],
    };
    let mut out = Vec::new();
    check_layer(&fs, &config(), &e, &mut out);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert!(
        out[0]
            .message
            .contains("is not on the default sys.path of /usr/bin/python3.11"),
        "{out:#?}"
    );
    let mut c = config();
    c.config
        .set_env("PYTHONPATH", "/usr/local/lib/python3.11/dist-packages");
    let mut out = Vec::new();
    check_layer(&fs, &c, &e, &mut out);
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn verify_finds_packages_for_a_python_the_image_does_not_have() {
    let (mut fs, _d) = image(app(vec![], &[]));
    fs.apply(
        3,
        &app(
            vec![
                node("usr/bin/.wh.python3.11", Kind::File, 0o644, Some(b""), None),
                node("usr/bin/.wh.python3", Kind::File, 0o644, Some(b""), None),
            ],
            &[],
        ),
    );
    let r: Vec<String> = check_rootfs(&fs, &config())
        .into_iter()
        .map(|p| p.message)
        .collect();
    assert!(
        r.iter().any(|m| m.contains(
            "holds packages for Python 3.11, but no PATH directory of the image has python3.11"
        )),
        "{r:#?}"
    );
    assert!(r.iter().any(|m| m.contains("script /usr/local/bin/demo: its shebang names /usr/bin/python3.11, which does not exist")), "{r:#?}");
}

#[test]
fn a_record_rewritten_by_a_later_layer_is_named() {
    let rec = format!("{SITE}/single-2.0.dist-info/RECORD");
    let listing = app(
        vec![node(&rec, Kind::File, 0o644, Some(b"single.py,,\n"), None)],
        &[(rec.as_str(), "single.py,,\n")],
    );
    let (fs, _d) = image(listing);
    let p = problems(&fs, &[], &[]);
    assert_eq!(
        p[0],
        format!("single 2.0: /{rec} is replaced by layer `app`")
    );
    // What the rewritten RECORD no longer claims is reported too.
    assert!(
        p.iter().any(|m| m.contains(
            "single-2.0.dist-info/WHEEL (written by layer `python-deps`) is claimed by no RECORD"
        )),
        "{p:#?}"
    );
}

#[test]
fn verify_finds_a_site_packages_directory_no_interpreter_reads() {
    // Packages copied into /usr/local/lib/python3.11/site-packages of a Debian image (a builder
    // stage on a python.org image, a runtime stage on Debian): Debian's python3 never reads it.
    let d = tempfile::tempdir().unwrap();
    let mut t = debian_target();
    t.site_dir = "/usr/local/lib/python3.11/site-packages".into();
    let w = wheel(
        d.path(),
        "single-2.0-py3-none-any.whl",
        &[("single.py", b"y = 2\n", 0o644)],
        |_| {},
    );
    let listing = installed(d.path(), &t, &[(&w, "single-2.0-py3-none-any.whl")]);
    let mut base = base_listing();
    base.nodes
        .push(node("usr/lib", Kind::Dir, 0o755, None, None));
    base.nodes
        .push(node("usr/lib/python3", Kind::Dir, 0o755, None, None));
    base.nodes.push(node(
        "usr/lib/python3/dist-packages",
        Kind::Dir,
        0o755,
        None,
        None,
    ));
    let mut fs = Rootfs::default();
    fs.apply(0, &base);
    fs.apply(1, &listing);
    let r: Vec<String> = check_rootfs(&fs, &config())
        .into_iter()
        .map(|p| p.message)
        .collect();
    assert_eq!(r, vec!["/usr/local/lib/python3.11/site-packages holds packages that no interpreter of the image reads: there is no /usr/local/bin/python3.11 for it and PYTHONPATH does not name it; /usr/bin/python3.11 is Debian's python3, which reads /usr/local/lib/python3.11/dist-packages".to_string()]);

    // PYTHONPATH naming it, or an interpreter of that prefix, makes it read.
    let mut c = config();
    c.config
        .set_env("PYTHONPATH", "/usr/local/lib/python3.11/site-packages");
    assert!(check_rootfs(&fs, &c).is_empty());
    fs.apply(
        2,
        &app(
            vec![node(
                "usr/local/bin/python3.11",
                Kind::File,
                0o755,
                Some(b"\x7fELF"),
                None,
            )],
            &[],
        ),
    );
    assert!(check_rootfs(&fs, &config()).is_empty());
}

#[test]
fn site_packages_of_a_python_that_is_not_debians_is_not_judged() {
    // The same site-packages without Debian's /usr/lib/python3/dist-packages: Fedora's python3
    // (for one) reads /usr/local/lib/python3.N/site-packages, so nothing is said.
    let d = tempfile::tempdir().unwrap();
    let mut t = debian_target();
    t.site_dir = "/usr/local/lib/python3.11/site-packages".into();
    let w = wheel(
        d.path(),
        "single-2.0-py3-none-any.whl",
        &[("single.py", b"y = 2\n", 0o644)],
        |_| {},
    );
    let listing = installed(d.path(), &t, &[(&w, "single-2.0-py3-none-any.whl")]);
    let mut fs = Rootfs::default();
    fs.apply(0, &base_listing());
    fs.apply(1, &listing);
    assert!(check_rootfs(&fs, &config()).is_empty());
}
