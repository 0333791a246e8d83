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
