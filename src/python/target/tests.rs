use super::*;
use crate::rootfs::{Listing, Node};

fn node(path: &str, kind: Kind, target: Option<&str>) -> Node {
    Node {
        path: path.into(),
        kind,
        mode: 0o755,
        size: 0,
        sha256: None,
        target: target.map(String::from),
    }
}

fn fs(entries: &[(&str, Option<&str>)]) -> Rootfs {
    let mut nodes = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for (p, _) in entries {
        let mut d = p.trim_end_matches('/');
        while let Some(i) = d.rfind('/') {
            d = &d[..i];
            dirs.insert(d.to_string());
        }
    }
    for d in dirs {
        nodes.push(node(&d, Kind::Dir, None));
    }
    for (p, t) in entries {
        let kind = match (p.ends_with('/'), t) {
            (true, _) => Kind::Dir,
            (false, Some(_)) => Kind::Symlink,
            (false, None) => Kind::File,
        };
        nodes.push(node(p.trim_end_matches('/'), kind, *t));
    }
    let mut fs = Rootfs::default();
    fs.apply(
        0,
        &Listing {
            nodes,
            ..Default::default()
        },
    );
    fs
}

fn config(env: &[&str]) -> ImageConfig {
    let mut c = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    for kv in env {
        let (k, v) = kv.split_once('=').unwrap();
        c.config.set_env(k, v);
    }
    c
}

fn reader(
    files: Vec<(&'static str, Vec<u8>)>,
) -> impl Fn(&[&str]) -> Result<BTreeMap<String, Vec<u8>>> {
    move |asked: &[&str]| {
        Ok(files
            .iter()
            .filter(|(k, _)| asked.contains(k))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect())
    }
}

fn debian() -> Rootfs {
    fs(&[
        ("usr/", None),
        ("usr/bin/", None),
        ("usr/bin/python3", Some("python3.11")),
        ("usr/bin/python3.11", None),
        ("usr/lib/", None),
        ("usr/lib/python3.11/", None),
        ("usr/lib/python3.11/site.py", None),
        ("usr/lib/x86_64-linux-gnu/", None),
        ("usr/lib/x86_64-linux-gnu/libc.so.6", None),
        ("lib", Some("usr/lib")),
        ("bin", Some("usr/bin")),
    ])
}

#[test]
fn debian_bookworm() {
    let read = reader(vec![
        (
            "/usr/bin/python3.11",
            b"\x7fELF\0junk\x003.11.2\0more 3.11.0 text\0".to_vec(),
        ),
        (
            "/usr/lib/python3.11/site.py",
            b"'local/lib', 'dist-packages'".to_vec(),
        ),
        (
            "/lib/x86_64-linux-gnu/libc.so.6",
            b"GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36.\n".to_vec(),
        ),
    ]);
    let t = detect(&debian(), &config(&[]), &read, &PythonSpec::default()).unwrap();
    assert_eq!(t.interpreter, "/usr/bin/python3.11");
    assert_eq!(t.version, "3.11.2");
    assert_eq!(t.site_dir, "/usr/local/lib/python3.11/dist-packages");
    assert_eq!(t.scripts_dir, "/usr/local/bin");
    assert_eq!(t.data_dir, "/usr/local");
    assert_eq!(
        t.libc,
        Libc::Glibc {
            major: 2,
            minor: 36
        }
    );
    assert_eq!(t.arch, "x86_64");
    assert!(t
        .sys_path
        .contains(&"/usr/lib/python3/dist-packages".to_string()));
    assert_eq!(
        t.extension_suffixes()[0],
        ".cpython-311-x86_64-linux-gnu.so"
    );
}

#[test]
fn debian_version_from_dpkg_when_the_binary_has_none() {
    let read = reader(vec![
        ("/usr/bin/python3.11", b"\x7fELF".to_vec()),
        ("/usr/lib/python3.11/site.py", b"dist-packages".to_vec()),
        ("/var/lib/dpkg/status", b"Package: libc6\nVersion: 2.36-9+deb12u4\n\nPackage: python3.11-minimal\nStatus: install ok installed\nVersion: 3.11.2-6+deb12u6\n".to_vec()),
    ]);
    let t = detect(&debian(), &config(&[]), &read, &PythonSpec::default()).unwrap();
    assert_eq!(t.version, "3.11.2");
    assert_eq!(
        t.libc,
        Libc::Glibc {
            major: 2,
            minor: 36
        }
    );
}

fn python_org_313() -> Rootfs {
    fs(&[
        ("usr/local/bin/python3", Some("python3.13")),
        ("usr/local/bin/python3.13", None),
        ("usr/local/lib/python3.13/site.py", None),
        ("usr/local/lib/python3.13/site-packages/", None),
        ("lib/x86_64-linux-gnu/libc.so.6", None),
    ])
}

#[test]
fn python_org_313_from_python_version_env() {
    let read = reader(vec![
        (
            "/usr/local/lib/python3.13/site.py",
            b"site-packages".to_vec(),
        ),
        (
            "/lib/x86_64-linux-gnu/libc.so.6",
            b"release version 2.36.".to_vec(),
        ),
    ]);
    let cfg = config(&["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION=3.13.1"]);
    let t = detect(&python_org_313(), &cfg, &read, &PythonSpec::default()).unwrap();
    assert_eq!(t.interpreter, "/usr/local/bin/python3.13");
    assert_eq!(t.version, "3.13.1");
    assert_eq!(t.site_dir, "/usr/local/lib/python3.13/site-packages");
    assert_eq!(t.scripts_dir, "/usr/local/bin");
    assert!(t.tags().rank("cp313-cp313-manylinux_2_17_x86_64").is_some());
    assert!(t.tags().rank("cp311-cp311-manylinux_2_17_x86_64").is_none());
    assert!(t.marker_env().get("python_full_version") == Some("3.13.1"));
}

#[test]
fn overrides_that_conflict_with_the_base_are_errors() {
    let read = reader(vec![
        (
            "/usr/local/lib/python3.13/site.py",
            b"site-packages".to_vec(),
        ),
        (
            "/lib/x86_64-linux-gnu/libc.so.6",
            b"release version 2.36.".to_vec(),
        ),
    ]);
    let cfg = config(&["PYTHON_VERSION=3.13.1"]);
    let err = |spec: PythonSpec| {
        detect(&python_org_313(), &cfg, &read, &spec)
            .unwrap_err()
            .to_string()
    };
    let e = err(PythonSpec {
        python_version: Some("3.12".into()),
        ..Default::default()
    });
    assert!(e.contains("python_version = \"3.12\" in imgbuild.toml conflicts with the base image: /usr/local/bin/python3.13 is Python 3.13.1"), "{e}");
    let e = err(PythonSpec {
        site_dir: Some("/usr/local/lib/python3.11/site-packages".into()),
        ..Default::default()
    });
    assert!(e.contains("is for Python 3.11"), "{e}");
    let e = err(PythonSpec {
        interpreter: Some("/opt/python/bin/python3.12".into()),
        ..Default::default()
    });
    assert!(e.contains("does not exist in the base image"), "{e}");
    let ok = detect(
        &python_org_313(),
        &cfg,
        &read,
        &PythonSpec {
            python_version: Some("3.13".into()),
            site_dir: Some("/opt/site".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ok.site_dir, "/opt/site");
}

#[test]
fn no_interpreter_or_no_libc() {
    let read = reader(vec![]);
    let e = detect(
        &fs(&[("bin/sh", None)]),
        &config(&[]),
        &read,
        &PythonSpec::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no python3 on its PATH"), "{e}");
    let e = detect(
        &fs(&[("usr/bin/python3.12", None)]),
        &config(&["PYTHON_VERSION=3.12.8"]),
        &read,
        &PythonSpec::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cannot tell the C library"), "{e}");
}

#[test]
fn alpine_musl() {
    let f = fs(&[
        ("usr/bin/python3", Some("python3.12")),
        ("usr/bin/python3.12", None),
        ("usr/lib/python3.12/site.py", None),
        ("lib/ld-musl-aarch64.so.1", None),
    ]);
    let read = reader(vec![(
        "/lib/apk/db/installed",
        b"P:musl\nV:1.2.5-r0\n\nP:python3\nV:3.12.8-r1\n".to_vec(),
    )]);
    let mut c = config(&[]);
    c.architecture = "arm64".into();
    let t = detect(&f, &c, &read, &PythonSpec::default()).unwrap();
    assert_eq!(t.version, "3.12.8");
    assert_eq!(t.libc, Libc::Musl { major: 1, minor: 2 });
    assert_eq!(t.arch, "aarch64");
    assert_eq!(t.site_dir, "/usr/lib/python3.12/site-packages");
    assert_eq!(
        t.extension_suffixes()[0],
        ".cpython-312-aarch64-linux-musl.so"
    );
}

#[test]
fn embedded_versions() {
    assert_eq!(
        embedded_version(b"\x003.11.2\0", 11).as_deref(),
        Some("3.11.2")
    );
    assert_eq!(
        embedded_version(b"/versions/3.13.0\0x\0Python-3.13.0\0", 13).as_deref(),
        Some("3.13.0")
    );
    assert_eq!(embedded_version(b"\x003.11.\0 13.11.2\0", 11), None);
    assert_eq!(
        embedded_version(b"\x003.12.0rc1\0", 12).as_deref(),
        Some("3.12.0rc1")
    );
}
