use super::*;
use crate::python::testutil::{debian_target, wheel};

fn paths(i: &Installed) -> Vec<String> {
    let mut v: Vec<String> = i.entries.iter().map(|e| e.display()).collect();
    v.sort();
    v
}

fn bytes_of(i: &Installed, path: &str) -> Vec<u8> {
    let e = i
        .entries
        .iter()
        .find(|e| e.display() == path)
        .unwrap_or_else(|| panic!("{path} missing"));
    match &e.body {
        Body::File {
            src: Source::Bytes(b),
            ..
        } => b.to_vec(),
        other => panic!("{path}: {other:?}"),
    }
}

const SITE: &str = "/usr/local/lib/python3.11/dist-packages";

#[test]
fn data_schemes_scripts_record_and_installer() {
    let d = tempfile::tempdir().unwrap();
    let w = wheel(
        d.path(),
        "demo-1.0-py3-none-any.whl",
        &[
            ("demo/__init__.py", b"", 0o644),
            ("demo/cli.py", b"def main():\n    return 0\n", 0o644),
            (
                "demo-1.0.dist-info/METADATA",
                b"Name: demo\nVersion: 1.0\n",
                0o644,
            ),
            (
                "demo-1.0.dist-info/entry_points.txt",
                b"[console_scripts]\ndemo = demo.cli:main\n",
                0o644,
            ),
            (
                "demo-1.0.data/scripts/demo-raw",
                b"#!python\nprint('raw')\n",
                0o755,
            ),
            ("demo-1.0.data/data/share/demo/x.txt", b"x", 0o644),
            ("demo-1.0.data/headers/demo.h", b"int x;", 0o644),
            ("demo-1.0.data/platlib/demo_ext.so", b"\x7fELF", 0o755),
        ],
        |_| {},
    );
    verify_archive(&w, "demo-1.0-py3-none-any.whl").unwrap();
    let i = install(&w, "demo-1.0-py3-none-any.whl", &debian_target(), (0, 0)).unwrap();
    assert_eq!(i.dist_info, format!("{SITE}/demo-1.0.dist-info"));
    let p = paths(&i);
    for want in [
        format!("{SITE}/demo"),
        format!("{SITE}/demo/__init__.py"),
        format!("{SITE}/demo/cli.py"),
        format!("{SITE}/demo_ext.so"),
        format!("{SITE}/demo-1.0.dist-info/INSTALLER"),
        format!("{SITE}/demo-1.0.dist-info/RECORD"),
        format!("{SITE}/demo-1.0.dist-info/WHEEL"),
        "/usr/local/bin/demo".into(),
        "/usr/local/bin/demo-raw".into(),
        "/usr/local/share/demo/x.txt".into(),
        "/usr/local/include/python3.11/demo/demo.h".into(),
    ] {
        assert!(p.contains(&want), "{want} not in {p:#?}");
    }
    let ext = i
        .entries
        .iter()
        .find(|e| e.display().ends_with("demo_ext.so"))
        .unwrap();
    assert_eq!(ext.mode, 0o755);
    let raw = String::from_utf8(bytes_of(&i, "/usr/local/bin/demo-raw")).unwrap();
    assert_eq!(raw, "#!/usr/bin/python3.11\nprint('raw')\n");
    let launcher = String::from_utf8(bytes_of(&i, "/usr/local/bin/demo")).unwrap();
    assert!(
        launcher.starts_with("#!/usr/bin/python3.11\n")
            && launcher.contains("from demo.cli import main")
    );
    assert_eq!(
        bytes_of(&i, &format!("{SITE}/demo-1.0.dist-info/INSTALLER")),
        b"imgbuild\n"
    );
    let rec =
        String::from_utf8(bytes_of(&i, &format!("{SITE}/demo-1.0.dist-info/RECORD"))).unwrap();
    let rows = record::parse(&rec).unwrap();
    let row = |p: &str| {
        rows.iter()
            .find(|r| r.path == p)
            .unwrap_or_else(|| panic!("no row {p} in {rec}"))
    };
    assert_eq!(row("../../../bin/demo").size, Some(launcher.len() as u64));
    assert_eq!(
        row("../../../bin/demo").sha256.as_deref(),
        Some(hex::encode(Sha256::digest(launcher.as_bytes())).as_str())
    );
    assert_eq!(row("../../../share/demo/x.txt").size, Some(1));
    assert_eq!(row("../../../include/python3.11/demo/demo.h").size, Some(6));
    assert_eq!(row("demo/cli.py").size, Some(25));
    assert!(row("demo-1.0.dist-info/RECORD").sha256.is_none());
    assert!(row("demo-1.0.dist-info/INSTALLER").sha256.is_some());
    assert!(!rec.contains(".data/"), "{rec}");
}

#[test]
fn zip_slip_and_absolute_members_are_refused() {
    let d = tempfile::tempdir().unwrap();
    for (evil, why) in [
        ("../../etc/cron.d/x", "a `..` component"),
        ("/etc/passwd", "an absolute path"),
        ("demo/..\\..\\x", "a backslash"),
    ] {
        let w = wheel(
            d.path(),
            "demo-1.0-py3-none-any.whl",
            &[("demo/__init__.py", b"", 0o644), (evil, b"boom", 0o644)],
            |_| {},
        );
        let e = install(&w, "demo-1.0-py3-none-any.whl", &debian_target(), (0, 0))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&format!("refusing member `{evil}`: it has {why}")),
            "{e}"
        );
        let e = verify_archive(&w, "demo-1.0-py3-none-any.whl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("refusing member"), "{e}");
    }
}

#[test]
fn tampered_files_do_not_match_the_wheels_record() {
    let d = tempfile::tempdir().unwrap();
    let w = wheel(
        d.path(),
        "demo-1.0-py3-none-any.whl",
        &[
            ("demo/__init__.py", b"print('evil')", 0o644),
            ("demo/a.py", b"a", 0o644),
        ],
        |rows| {
            rows[0].sha256 = Some(hex::encode(Sha256::digest(b"print('good')")));
            rows.retain(|r| r.path != "demo/a.py");
        },
    );
    let e = verify_archive(&w, "demo-1.0-py3-none-any.whl")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("wheel demo-1.0-py3-none-any.whl does not match its own RECORD (2 problems)"),
        "{e}"
    );
    assert!(e.contains("demo/__init__.py: sha256"), "{e}");
    assert!(e.contains("demo/a.py is not listed in RECORD"), "{e}");
}

#[test]
fn collisions_between_distributions_name_both() {
    let d = tempfile::tempdir().unwrap();
    let t = debian_target();
    let a = wheel(
        d.path(),
        "alpha-1.0-py3-none-any.whl",
        &[
            ("shared/__init__.py", b"a", 0o644),
            ("alpha.py", b"", 0o644),
        ],
        |_| {},
    );
    let b = wheel(
        d.path(),
        "beta-2.0-py3-none-any.whl",
        &[("shared/__init__.py", b"b", 0o644), ("beta.py", b"", 0o644)],
        |_| {},
    );
    let ia = install(&a, "alpha-1.0-py3-none-any.whl", &t, (0, 0)).unwrap();
    let ib = install(&b, "beta-2.0-py3-none-any.whl", &t, (0, 0)).unwrap();
    let e = merge(vec![ia, ib], &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "{SITE}/shared/__init__.py is in both alpha 1.0 and beta 2.0 with different contents"
        )),
        "{e}"
    );
    assert!(
        e.contains("`prefer = { \"alpha\" = \"beta\" }` keeps alpha's files where the two collide (or the reverse), `exclude = [\"beta\"]` leaves beta out"),
        "{e}"
    );
}

fn record_of(entries: &[Entry], dist_info: &str) -> String {
    let e = entries
        .iter()
        .find(|e| e.display() == format!("{SITE}/{dist_info}/RECORD"))
        .unwrap();
    match &e.body {
        Body::File {
            src: Source::Bytes(b),
            ..
        } => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn identical_files_of_two_distributions_are_installed_once_and_recorded_by_both() {
    let d = tempfile::tempdir().unwrap();
    let t = debian_target();
    let ep: &[u8] = b"[console_scripts]\ntool = common.cli:main\n";
    let a = wheel(
        d.path(),
        "alpha-1.0-py3-none-any.whl",
        &[
            ("common/cli.py", b"def main(): pass\n", 0o644),
            ("alpha-1.0.dist-info/entry_points.txt", ep, 0o644),
        ],
        |_| {},
    );
    let b = wheel(
        d.path(),
        "beta-2.0-py3-none-any.whl",
        &[
            ("common/cli.py", b"def main(): pass\n", 0o644),
            ("beta-2.0.dist-info/entry_points.txt", ep, 0o644),
        ],
        |_| {},
    );
    let ia = install(&a, "alpha-1.0-py3-none-any.whl", &t, (0, 0)).unwrap();
    let ib = install(&b, "beta-2.0-py3-none-any.whl", &t, (0, 0)).unwrap();
    let out = merge(vec![ia, ib], &BTreeMap::new()).unwrap().entries;
    for p in [
        format!("{SITE}/common/cli.py"),
        "/usr/local/bin/tool".into(),
    ] {
        assert_eq!(out.iter().filter(|e| e.display() == p).count(), 1, "{p}");
        for di in ["alpha-1.0.dist-info", "beta-2.0.dist-info"] {
            let rel = relative(SITE, &p);
            assert!(
                record_of(&out, di).contains(&format!("{rel},sha256=")),
                "{di} {p}"
            );
        }
    }
}

#[test]
fn prefer_keeps_the_winners_file_and_drops_the_row_from_the_losers_record() {
    let d = tempfile::tempdir().unwrap();
    let t = debian_target();
    // The agent-toolkit case: two packages with a `ddgs` console script to different code.
    let a = wheel(
        d.path(),
        "ddgs-9.14.4-py3-none-any.whl",
        &[
            ("ddgs/cli.py", b"def safe_entry_point(): pass\n", 0o644),
            (
                "ddgs-9.14.4.dist-info/entry_points.txt",
                b"[console_scripts]\nddgs = ddgs.cli:safe_entry_point\n",
                0o644,
            ),
        ],
        |_| {},
    );
    let b = wheel(
        d.path(),
        "duckduckgo_search-8.1.1-py3-none-any.whl",
        &[
            (
                "duckduckgo_search/cli.py",
                b"def safe_entry_point(): pass\n",
                0o644,
            ),
            (
                "duckduckgo_search-8.1.1.dist-info/entry_points.txt",
                b"[console_scripts]\nddgs = duckduckgo_search.cli:safe_entry_point\n",
                0o644,
            ),
        ],
        |_| {},
    );
    let inst = || {
        vec![
            install(&b, "duckduckgo_search-8.1.1-py3-none-any.whl", &t, (0, 0)).unwrap(),
            install(&a, "ddgs-9.14.4-py3-none-any.whl", &t, (0, 0)).unwrap(),
        ]
    };
    let e = merge(inst(), &BTreeMap::new()).unwrap_err().to_string();
    assert!(
        e.contains("/usr/local/bin/ddgs is in both duckduckgo_search 8.1.1 and ddgs 9.14.4 with different contents"),
        "{e}"
    );
    assert!(e.contains("exclude = [\"ddgs\"]"), "{e}");
    let prefer = BTreeMap::from([("ddgs".to_string(), "duckduckgo-search".to_string())]);
    let out = merge(inst(), &prefer).unwrap().entries;
    let script: Vec<&Entry> = out
        .iter()
        .filter(|e| e.display() == "/usr/local/bin/ddgs")
        .collect();
    assert_eq!(script.len(), 1);
    let Body::File {
        src: Source::Bytes(b),
        ..
    } = &script[0].body
    else {
        panic!()
    };
    assert!(
        String::from_utf8_lossy(b).contains("from ddgs.cli import"),
        "{}",
        String::from_utf8_lossy(b)
    );
    assert!(!record_of(&out, "duckduckgo_search-8.1.1.dist-info").contains("bin/ddgs"));
    assert!(record_of(&out, "ddgs-9.14.4.dist-info").contains("bin/ddgs"));
}

#[test]
fn owner_applies_to_files_and_package_directories() {
    let d = tempfile::tempdir().unwrap();
    let w = wheel(
        d.path(),
        "demo-1.0-py3-none-any.whl",
        &[("demo/sub/__init__.py", b"", 0o644)],
        |_| {},
    );
    let i = install(
        &w,
        "demo-1.0-py3-none-any.whl",
        &debian_target(),
        (1000, 1001),
    )
    .unwrap();
    for e in &i.entries {
        assert_eq!((e.uid, e.gid), (1000, 1001), "{}", e.display());
    }
    assert!(paths(&i).contains(&format!("{SITE}/demo/sub")));
    assert_eq!(relative(SITE, "/usr/local/bin/x"), "../../../bin/x");
}

#[test]
fn stray_top_level_files_with_different_contents_are_left_out_of_the_layer_and_every_record() {
    // The archivebox case: three sdist-built wheels each put their own LICENSE and README.md at
    // the top of site-packages.
    let d = tempfile::tempdir().unwrap();
    let t = debian_target();
    let mut all = vec![];
    for (name, body) in [
        ("alpha", b"MIT" as &[u8]),
        ("beta", b"BSD"),
        ("gamma", b"GPL"),
    ] {
        let file = format!("{name}-1.0-py3-none-any.whl");
        let w = wheel(
            d.path(),
            &file,
            &[
                (&format!("{name}/__init__.py") as &str, b"" as &[u8], 0o644),
                ("LICENSE", body, 0o644),
                ("README.md", body, 0o644),
            ],
            |_| {},
        );
        all.push(install(&w, &file, &t, (0, 0)).unwrap());
    }
    let out = merge(all, &BTreeMap::new()).unwrap();
    for stray in ["LICENSE", "README.md"] {
        let p = format!("{SITE}/{stray}");
        assert!(!out.entries.iter().any(|e| e.display() == p), "{p}");
        assert!(
            out.left_out.iter().any(|l| l.starts_with(&format!(
                "{p} is installed by alpha 1.0 and beta 1.0 and gamma 1.0 with different contents"
            ))),
            "{:?}",
            out.left_out
        );
        for di in [
            "alpha-1.0.dist-info",
            "beta-1.0.dist-info",
            "gamma-1.0.dist-info",
        ] {
            let rec = record_of(&out.entries, di);
            assert!(
                !rec.lines().any(|l| l.starts_with(&format!("{stray},"))),
                "{di}: {rec}"
            );
            assert!(rec.contains("__init__.py,sha256="), "{di}: {rec}");
        }
    }
    // A top-level module is importable: a clash there is still an error.
    let a = wheel(
        d.path(),
        "one-1.0-py3-none-any.whl",
        &[("util.py", b"a", 0o644)],
        |_| {},
    );
    let b = wheel(
        d.path(),
        "two-1.0-py3-none-any.whl",
        &[("util.py", b"b", 0o644)],
        |_| {},
    );
    let e = merge(
        vec![
            install(&a, "one-1.0-py3-none-any.whl", &t, (0, 0)).unwrap(),
            install(&b, "two-1.0-py3-none-any.whl", &t, (0, 0)).unwrap(),
        ],
        &BTreeMap::new(),
    )
    .expect_err("a clash of util.py is an error")
    .to_string();
    assert!(e.contains("util.py is in both one 1.0 and two 1.0"), "{e}");
}
