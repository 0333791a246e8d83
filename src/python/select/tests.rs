use super::*;
use crate::python::lock::WheelRef;
use crate::python::testutil::debian_target;

const H: &str = "3333333333333333333333333333333333333333333333333333333333333333";

fn pkg(name: &str, version: &str, wheels: &[&str], sdist: Option<&str>) -> Package {
    Package {
        name: name.into(),
        version: version.into(),
        artifacts: Artifacts::Files {
            wheels: wheels
                .iter()
                .map(|f| WheelRef {
                    filename: f.to_string(),
                    url: Some(format!("https://files.example.invalid/{f}")),
                    path: None,
                    sha256: Some(H.into()),
                    size: None,
                })
                .collect(),
            sdist: sdist.map(|f| WheelRef {
                filename: f.to_string(),
                url: Some(format!("https://files.example.invalid/{f}")),
                path: None,
                sha256: Some(H.into()),
                size: None,
            }),
            other: None,
        },
    }
}

fn locked(p: Vec<Package>) -> Locked {
    Locked {
        packages: p,
        ..Default::default()
    }
}

const PSYCOPG: &[&str] = &[
    "psycopg_binary-3.3.9-cp311-cp311-musllinux_1_2_x86_64.whl",
    "psycopg_binary-3.3.9-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "psycopg_binary-3.3.9-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "psycopg_binary-3.3.9-cp311-cp311-manylinux_2_28_x86_64.whl",
    "psycopg_binary-3.3.9-cp313-cp313-manylinux_2_28_x86_64.whl",
    "psycopg_binary-3.3.9-cp311-cp311-manylinux_2_28_aarch64.whl",
];

#[test]
fn best_wheel_for_the_target_python_and_glibc() {
    let l = locked(vec![pkg("psycopg-binary", "3.3.9", PSYCOPG, None)]);
    let t = debian_target();
    let p = select(&l, &t, &[], "uv.lock").unwrap();
    assert_eq!(
        p[0].filename,
        "psycopg_binary-3.3.9-cp311-cp311-manylinux_2_28_x86_64.whl"
    );
    let mut t313 = t.clone();
    t313.version = "3.13.1".into();
    let p = select(&l, &t313, &[], "uv.lock").unwrap();
    assert_eq!(
        p[0].filename,
        "psycopg_binary-3.3.9-cp313-cp313-manylinux_2_28_x86_64.whl"
    );
}

#[test]
fn wrong_python_version_names_the_package_the_tags_and_what_to_do() {
    let l = locked(vec![pkg(
        "fastcore",
        "1.0",
        &["fastcore-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"],
        None,
    )]);
    let e = select(&l, &debian_target(), &[], "uv.lock")
        .unwrap_err()
        .to_string();
    assert!(e.contains("fastcore 1.0 has no wheel for the target (CPython 3.11.2 at /usr/bin/python3.11 (glibc 2.36, x86_64)"), "{e}");
    assert!(
        e.contains("uv.lock has fastcore-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"),
        "{e}"
    );
    assert!(
        e.contains("the target accepts") && e.contains("cp311-cp311-manylinux_2_36_x86_64"),
        "{e}"
    );
    assert!(e.contains("set `find_links = \"wheels\"`"), "{e}");
}

#[test]
fn sdist_only_packages_are_built_unless_find_links_has_a_wheel() {
    let mut l = locked(vec![
        pkg("only-src", "2.0", &[], Some("only_src-2.0.tar.gz")),
        pkg("also-src", "1.0", &[], Some("also_src-1.0.tar.gz")),
    ]);
    let p = select(&l, &debian_target(), &[], "uv.lock").unwrap();
    assert!(
        matches!(&p[0].origin, Origin::Sdist(s) if s.filename == "only_src-2.0.tar.gz"),
        "{p:?}"
    );
    assert_eq!(p[0].sha256, H);
    if let Artifacts::Files { sdist, .. } = &mut l.packages[1].artifacts {
        sdist.as_mut().unwrap().sha256 = None;
    }
    let e = select(&l, &debian_target(), &[], "uv.lock")
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 package without a usable wheel"), "{e}");
    assert!(
        e.contains("also-src 1.0: uv.lock gives no sha256 for its sdist also_src-1.0.tar.gz"),
        "{e}"
    );
    let l = locked(vec![
        pkg("only-src", "2.0", &[], Some("only_src-2.0.tar.gz")),
        pkg("also-src", "1.0", &[], Some("also_src-1.0.tar.gz")),
    ]);
    let local = vec![
        LocalWheel {
            path: "/w/only_src-2.0-cp311-cp311-linux_x86_64.whl".into(),
            filename: "only_src-2.0-cp311-cp311-linux_x86_64.whl".into(),
            sha256: H.into(),
        },
        LocalWheel {
            path: "/w/also_src-1.0-py3-none-any.whl".into(),
            filename: "also_src-1.0-py3-none-any.whl".into(),
            sha256: H.into(),
        },
        LocalWheel {
            path: "/w/also_src-1.1-py3-none-any.whl".into(),
            filename: "also_src-1.1-py3-none-any.whl".into(),
            sha256: H.into(),
        },
    ];
    let p = select(&l, &debian_target(), &local, "uv.lock").unwrap();
    assert_eq!(p.len(), 2);
    assert!(
        matches!(&p[0].origin, Origin::Local(x) if x.ends_with("only_src-2.0-cp311-cp311-linux_x86_64.whl"))
    );
    assert!(
        matches!(&p[1].origin, Origin::Local(x) if x.ends_with("also_src-1.0-py3-none-any.whl"))
    );
}

#[test]
fn requirements_packages_wait_for_the_index() {
    let l = locked(vec![Package {
        name: "alembic".into(),
        version: "1.20.1".into(),
        artifacts: Artifacts::Hashes(vec![H.into()]),
    }]);
    let p = select(&l, &debian_target(), &[], "requirements.txt").unwrap();
    assert!(
        matches!(&p[0].origin, Origin::Index { hashes, fallback: None } if hashes == &vec![H.to_string()])
    );
}

fn git_pkg() -> Package {
    Package {
        name: "fh-llm-client".into(),
        version: "0.0.12".into(),
        artifacts: Artifacts::Files {
            wheels: vec![],
            sdist: None,
            other: Some(Other::Git {
                url: "https://git.example.invalid/llm-client.git".into(),
                commit: "3831881aaaa".into(),
                subdirectory: None,
            }),
        },
    }
}

fn local_wheel(dir: &Path, direct_url: Option<&str>) -> LocalWheel {
    let f = "fh_llm_client-0.0.12-py3-none-any.whl";
    let mut files: Vec<crate::python::testutil::File> = vec![("llmclient/__init__.py", b"", 0o644)];
    if let Some(d) = direct_url {
        files.push((
            "fh_llm_client-0.0.12.dist-info/direct_url.json",
            d.as_bytes(),
            0o644,
        ));
    }
    let path = crate::python::testutil::wheel(dir, f, &files, |_| {});
    LocalWheel {
        path,
        filename: f.into(),
        sha256: H.into(),
    }
}

#[test]
fn a_git_package_is_never_satisfied_by_a_wheel_of_the_same_name_and_version() {
    let d = tempfile::tempdir().unwrap();
    let t = debian_target();
    let l = locked(vec![git_pkg()]);
    // An index wheel of the same name and version, or one built from another commit, put into
    // find_links: not used; the locked commit is built instead.
    let other = r#"{"url": "https://git.example.invalid/llm-client.git", "vcs_info": {"vcs": "git", "commit_id": "0000"}}"#;
    for w in [None, Some(other)] {
        let p = select(&l, &t, &[local_wheel(d.path(), w)], "uv.lock").unwrap();
        assert!(
            matches!(&p[0].origin, Origin::Source(SourceRef::Git { url, commit, .. }) if url == "https://git.example.invalid/llm-client.git" && commit == "3831881aaaa"),
            "{:?}",
            p[0].origin
        );
    }
    // A git source without a locked commit: refused, saying what would count.
    let mut nocommit = git_pkg();
    if let Artifacts::Files { other, .. } = &mut nocommit.artifacts {
        *other = Some(Other::Git {
            url: "https://git.example.invalid/llm-client.git".into(),
            commit: String::new(),
            subdirectory: None,
        });
    }
    let e = select(
        &locked(vec![nocommit]),
        &t,
        &[local_wheel(d.path(), None)],
        "uv.lock",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("fh_llm_client-0.0.12-py3-none-any.whl (it records no git origin)"),
        "{e}"
    );
    assert!(e.contains("names no commit"), "{e}");
    assert!(!e.contains("pip wheel"), "{e}");
    // Built from the locked commit: used.
    let good = r#"{"url": "git+https://git.example.invalid/llm-client", "vcs_info": {"vcs": "git", "commit_id": "3831881aaaa"}}"#;
    let p = select(&l, &t, &[local_wheel(d.path(), Some(good))], "uv.lock").unwrap();
    assert!(matches!(p[0].origin, Origin::Local(_)));
}

#[test]
fn a_workspace_member_is_built_from_its_source_directory() {
    let t = debian_target();
    let p = Package {
        name: "deerflow-harness".into(),
        version: "0.1.2".into(),
        artifacts: Artifacts::Files {
            wheels: vec![],
            sdist: None,
            other: Some(Other::Local {
                kind: "editable".into(),
                path: "packages/harness".into(),
            }),
        },
    };
    let p = select(&locked(vec![p]), &t, &[], "uv.lock").unwrap();
    assert!(
        matches!(&p[0].origin, Origin::Source(SourceRef::Dir(d)) if d == Path::new("packages/harness")),
        "{:?}",
        p[0].origin
    );
}
