use super::*;

#[test]
fn html_project_page() {
    let page = reqwest::Url::parse("https://mirror.example.invalid/simple/alembic/").unwrap();
    let body = r#"<!DOCTYPE html><html><body>
<a href="../../files/alembic-1.20.1-py3-none-any.whl#sha256=AAAA" data-requires-python="&gt;=3.9">alembic-1.20.1-py3-none-any.whl</a><br/>
<A HREF='https://other.example.invalid/alembic-1.20.1.tar.gz#sha256=bbbb' data-yanked="">alembic-1.20.1.tar.gz</A>
<a href="/x/odd&amp;name-1.0-py3-none-any.whl">odd&amp;name-1.0-py3-none-any.whl</a>
</body></html>"#;
    let f = parse_html(body, &page);
    assert_eq!(f.len(), 3);
    assert_eq!(f[0].filename, "alembic-1.20.1-py3-none-any.whl");
    assert_eq!(
        f[0].url,
        "https://mirror.example.invalid/files/alembic-1.20.1-py3-none-any.whl"
    );
    assert_eq!(f[0].sha256.as_deref(), Some("aaaa"));
    assert!(!f[0].yanked);
    assert!(f[1].yanked);
    assert_eq!(
        f[1].url,
        "https://other.example.invalid/alembic-1.20.1.tar.gz"
    );
    assert_eq!(f[2].filename, "odd&name-1.0-py3-none-any.whl");
}

#[test]
fn json_project_page() {
    let page = reqwest::Url::parse("https://mirror.example.invalid/simple/amqp/").unwrap();
    let body = r#"{"meta":{"api-version":"1.1"},"name":"amqp","files":[
        {"filename":"amqp-5.4.2-py3-none-any.whl","url":"/files/amqp-5.4.2-py3-none-any.whl","hashes":{"sha256":"E6E7"},"requires-python":">=3.6","yanked":false},
        {"filename":"amqp-5.4.1-py3-none-any.whl","url":"https://f.example.invalid/a.whl","hashes":{},"yanked":"broken"}]}"#;
    let f = parse_json(body, &page).unwrap();
    assert_eq!(
        f[0].url,
        "https://mirror.example.invalid/files/amqp-5.4.2-py3-none-any.whl"
    );
    assert_eq!(f[0].sha256.as_deref(), Some("e6e7"));
    assert!(!f[0].yanked && f[1].yanked && f[1].sha256.is_none());
}

#[test]
fn releases_of_file_names() {
    assert_eq!(
        release_of("alembic-1.20.1-py3-none-any.whl").as_deref(),
        Some("1.20.1")
    );
    assert_eq!(
        release_of("alembic-1.20.1.tar.gz").as_deref(),
        Some("1.20.1")
    );
}

#[test]
fn ensure_refuses_a_local_wheel_with_the_wrong_hash() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path().join("store")).unwrap();
    let w = d.path().join("x-1.0-py3-none-any.whl");
    std::fs::write(&w, b"not the pinned bytes").unwrap();
    let want = Want {
        filename: "x-1.0-py3-none-any.whl".into(),
        sha256: "0".repeat(64),
        urls: vec![],
        path: Some(w),
        pinned_by: "pylock.toml".into(),
    };
    let e = ensure(&store, &[want]).unwrap_err().to_string();
    assert!(e.contains("wheel x-1.0-py3-none-any.whl from"), "{e}");
    assert!(e.contains("sha256 mismatch: pylock.toml pins 0000"), "{e}");
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0
    );
}

/// Wants for `n` small local wheels `pN-1.0-py3-none-any.whl`, pinned by their real sha256.
fn local_wants(dir: &std::path::Path, n: usize) -> Vec<Want> {
    (0..n)
        .map(|i| {
            let filename = format!("p{i}-1.0-py3-none-any.whl");
            let body = format!("X = {i}\n");
            let module = format!("p{i}/__init__.py");
            let path = crate::python::testutil::wheel(
                dir,
                &filename,
                &[(module.as_str(), body.as_bytes(), 0o644)],
                |_| {},
            );
            Want {
                sha256: hex::encode(Sha256::digest(std::fs::read(&path).unwrap())),
                filename,
                urls: vec![],
                path: Some(path),
                pinned_by: "pylock.toml".into(),
            }
        })
        .collect()
}

#[test]
fn each_wheel_is_handed_over_once_it_is_stored_and_checked_while_others_download() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path().join("store")).unwrap();
    let wants = local_wants(d.path(), 12);
    let seen = Mutex::new(Vec::new());
    let caller = std::thread::current().id();
    ensure_each(&store, &wants, &AtomicBool::new(false), &|i| {
        // Handed over on a download worker, with the wheel already stored and checked.
        assert_ne!(std::thread::current().id(), caller);
        let d = Digest::parse(&format!("sha256:{}", wants[i].sha256)).unwrap();
        assert!(store.has(&d));
        assert!(store
            .get_record::<String>("python-wheels", &wants[i].sha256)
            .is_some());
        seen.lock().unwrap().push(i);
        Ok(())
    })
    .unwrap();
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(seen, (0..12).collect::<Vec<_>>());
}

#[test]
fn failures_of_the_handover_are_reported_in_the_wants_order_with_the_downloads() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path().join("store")).unwrap();
    let mut wants = local_wants(d.path(), 10);
    wants[7].sha256 = "0".repeat(64);
    let e = ensure_each(&store, &wants, &AtomicBool::new(false), &|i| {
        if i == 2 || i == 5 {
            bail!("cannot install p{i}")
        }
        Ok(())
    })
    .unwrap_err()
    .to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert_eq!(lines[0], "cannot install p2");
    assert_eq!(lines[1], "cannot install p5");
    assert!(lines[2].contains("p7-1.0-py3-none-any.whl"), "{e}");
}

#[test]
fn a_stop_starts_no_further_download() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path().join("store")).unwrap();
    let wants = local_wants(d.path(), 4);
    let called = AtomicUsize::new(0);
    ensure_each(&store, &wants, &AtomicBool::new(true), &|_| {
        called.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
    .unwrap();
    assert_eq!(called.load(Ordering::SeqCst), 0);
    for w in &wants {
        let d = Digest::parse(&format!("sha256:{}", w.sha256)).unwrap();
        assert!(!store.has(&d), "{} was stored after the stop", w.filename);
    }
}
