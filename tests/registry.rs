//! Registries, for real: `docker-registry` processes on 127.0.0.1 (open, htpasswd Basic, and
//! token auth with a token server written here), skopeo and umoci as independent readers.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A project with one image `api` on `base`, pushed to `repository`, with an app layer.
fn project(dir: &Path, repository: &str, base: &str) {
    write_project(
        dir,
        &[
            ("app/main.sh", b"echo hello\n"),
            ("app/data.txt", "data\n".repeat(100).as_bytes()),
        ],
        &api_toml(repository, base),
    );
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `imgbuild` with credentials from nowhere but what the test sets.
fn cmd(dir: &Path) -> Command {
    let mut c = imgbuild(dir);
    without_credentials(&mut c, &dir.join(".home")).env("IMGBUILD_REGISTRY_ATTEMPTS", "2");
    c
}

#[test]
fn push_to_open_registry_skip_unchanged_upload_only_changes_mount_across_repositories() {
    let reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let repo = format!("{}/acme/api", reg.host());
    project(d, &repo, &busybox_ref());

    // Fresh push.
    let out = ok(cmd(d).args(["build", "api", "--push", "--json"]));
    let s = json(&out);
    let digest = s["digest"].as_str().unwrap().to_string();
    assert_eq!(s["reference"], format!("{repo}@{digest}"));
    assert!(s["uploaded_bytes"].as_u64().unwrap() > 500_000, "{s}");
    assert_eq!(s["skipped_blobs"], 0);

    // skopeo sees the same manifest, by digest and by the default tag.
    let raw = skopeo_raw(&format!("{repo}@{digest}"), None);
    assert_eq!(digest_of(&raw), digest);
    assert_eq!(
        digest_of(&skopeo_raw(&format!("{repo}:latest"), None)),
        digest
    );

    // skopeo pulls it back into a layout that umoci unpacks (diff_ids and sizes checked).
    let back = d.join("back");
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{repo}@{digest}"))
        .arg(format!("oci:{}:api", back.display())));
    umoci_unpack(&back, "api", &d.join("bundle"));
    assert!(d.join("bundle/rootfs/app/main.sh").is_file());

    // The build record lists the pushed reference (for `pin`).
    let rec: Value =
        serde_json::from_slice(&fs::read(d.join(".imgbuild/builds/api.json")).unwrap()).unwrap();
    assert_eq!(rec["pushed"][0], format!("{repo}@{digest}"));
    // …which `imgbuild pin` turns into the compose file's `image:`.
    fs::write(
        d.join("compose.yml"),
        format!("services:\n  api:\n    image: {repo}:latest\n"),
    )
    .unwrap();
    ok(cmd(d).args(["pin", "compose.yml"]));
    assert_eq!(
        fs::read_to_string(d.join("compose.yml")).unwrap(),
        format!("services:\n  api:\n    image: {repo}@{digest}\n")
    );

    // Unchanged: nothing uploaded, all three blobs skipped; `imgbuild push` with tags.
    let out = ok(cmd(d).args(["push", "api", "--tag", "v1", "--tag", "v1.0", "--json"]));
    let s = json(&out);
    assert_eq!(s["uploaded_bytes"], 0, "{s}");
    assert_eq!(s["skipped_blobs"], 3, "{s}");
    assert_eq!(s["reference"], format!("{repo}@{digest}"));
    for tag in ["v1", "v1.0"] {
        assert_eq!(
            digest_of(&skopeo_raw(&format!("{repo}:{tag}"), None)),
            digest
        );
    }
    let out = ok(cmd(d).args(["push", "api"]));
    assert_eq!(stdout(&out), format!("{repo}@{digest}"));

    // One file changes: only the app layer and the config go up.
    fs::write(d.join("app/main.sh"), "echo changed\n").unwrap();
    let s = json(&ok(cmd(d).args(["build", "api", "--push", "--json"])));
    let app = &s["layers"][0];
    assert_eq!(app["name"], "app");
    assert_eq!(app["cached"], false);
    let d2 = s["digest"].as_str().unwrap().to_string();
    let manifest: Value =
        serde_json::from_slice(&skopeo_raw(&format!("{repo}@{d2}"), None)).unwrap();
    let config_size = manifest["config"]["size"].as_u64().unwrap();
    assert_eq!(
        s["uploaded_bytes"].as_u64().unwrap(),
        app["size"].as_u64().unwrap() + config_size,
        "{s}"
    );
    assert_eq!(
        s["skipped_blobs"], 1,
        "the base layer is already there: {s}"
    );

    // Another repository on the same registry: every blob is mounted, none uploaded.
    let other = format!("{}/acme/other", reg.host());
    let toml = fs::read_to_string(d.join("imgbuild.toml"))
        .unwrap()
        .replace(&repo, &other);
    fs::write(d.join("imgbuild.toml"), toml).unwrap();
    let s = json(&ok(cmd(d).args(["push", "api", "--json"])));
    assert_eq!(s["uploaded_bytes"], 0, "{s}");
    assert_eq!(s["mounted_blobs"], 3, "{s}");
    assert_eq!(digest_of(&skopeo_raw(&format!("{other}@{d2}"), None)), d2);

    // `imgbuild verify REFERENCE` pulls by digest into an empty store and checks everything.
    let v = tempfile::tempdir().unwrap();
    let out = ok(cmd(v.path()).args(["verify", &format!("{other}@{d2}"), "--json"]));
    let r = json(&out);
    assert_eq!(r["ok"], true);
    assert_eq!(r["layers"], 2);
}

#[test]
fn large_layers_go_up_in_chunks_of_at_most_4_mib() {
    let reg = Registry::start_custom("", "200");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let repo = format!("{}/acme/big", reg.host());
    project(d, &repo, &busybox_ref());
    // 9 MiB that does not compress: three chunks.
    let noise = noise(0x2545F4914F6CDD1D, 9 * 1024 * 1024);
    fs::write(d.join("app/noise.bin"), &noise).unwrap();
    let s = json(&ok(cmd(d).args(["build", "api", "--push", "--json"])));
    let digest = s["digest"].as_str().unwrap();
    assert!(s["uploaded_bytes"].as_u64().unwrap() > 9 * 1024 * 1024);
    let log = reg.log();
    let patches = log.matches("\"PATCH /v2/acme/big/blobs/uploads/").count();
    assert!(patches >= 3, "expected ≥ 3 PATCH chunks, log has {patches}");
    // The app layer is whole and correct: skopeo copies it back, umoci checks its diff_id.
    let back = d.join("back");
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{repo}@{digest}"))
        .arg(format!("oci:{}:big", back.display())));
    umoci_unpack(&back, "big", &d.join("bundle"));
    assert_eq!(
        fs::read(d.join("bundle/rootfs/app/noise.bin")).unwrap(),
        noise
    );
}

#[test]
fn basic_auth_login_wrong_password_and_missing_credentials() {
    let reg = Registry::start(Some(("ci", "s3cret-pw")));
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let repo = format!("{}/acme/api", reg.host());
    project(d, &repo, &busybox_ref());
    ok(cmd(d).args(["build", "api"]));

    // No credentials anywhere: a clear error naming registry, scope and places looked in.
    let (code, err) = fails(cmd(d).args(["push", "api"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{} refused", reg.host())), "{err}");
    assert!(err.contains("repository:acme/api:pull,push"), "{err}");
    assert!(err.contains("no credentials were found"), "{err}");
    assert!(
        err.contains("IMGBUILD_REGISTRY_USER/PASSWORD (not set)"),
        "{err}"
    );
    assert!(err.contains(".docker/config.json (absent)"), "{err}");
    assert!(err.contains("imgbuild login"), "{err}");

    // Wrong password: rejected, the password never printed.
    let out = cmd(d)
        .args(["push", "api"])
        .env("IMGBUILD_REGISTRY_USER", "ci")
        .env("IMGBUILD_REGISTRY_PASSWORD", "wrong-pw-123")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("were rejected"), "{err}");
    assert!(err.contains("user `ci`"), "{err}");
    assert!(
        !err.contains("wrong-pw-123")
            && !String::from_utf8_lossy(&out.stdout).contains("wrong-pw-123")
    );

    // Environment credentials work.
    let s = json(&ok(cmd(d)
        .args(["push", "api", "--json"])
        .env("IMGBUILD_REGISTRY_USER", "ci")
        .env("IMGBUILD_REGISTRY_PASSWORD", "s3cret-pw")));
    let digest = s["digest"].as_str().unwrap();
    assert_eq!(
        digest_of(&skopeo_raw(
            &format!("{repo}@{digest}"),
            Some("ci:s3cret-pw")
        )),
        digest
    );

    // `imgbuild login` checks the password, stores it docker's way, and later pushes use it.
    let mut login = cmd(d);
    login
        .args(["login", &reg.host(), "--username", "ci", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = login.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"wrong\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "a wrong password is not stored");
    assert!(!d.join(".home/.docker/config.json").exists());
    let mut child = login.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret-pw\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret-pw"));
    let cfg: Value =
        serde_json::from_slice(&fs::read(d.join(".home/.docker/config.json")).unwrap()).unwrap();
    assert!(cfg["auths"][reg.host()]["auth"].is_string());
    let s = json(&ok(cmd(d).args(["push", "api", "--json"])));
    assert_eq!(s["uploaded_bytes"], 0);
    // The secret is in no layer and no log of ours.
    for entry in files_under(&d.join(".store")) {
        let bytes = fs::read(&entry).unwrap();
        assert!(
            !bytes_contain(&bytes, b"s3cret-pw"),
            "{} holds the password",
            entry.display()
        );
    }
    ok(cmd(d).args(["logout", &reg.host()]));
    let (_, err) = fails(cmd(d).args(["push", "api"]));
    assert!(err.contains("no credentials were found"), "{err}");
}

#[test]
fn registry_base_is_locked_builds_the_same_digest_and_fails_clearly() {
    let reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let base_ref = format!("{}/lib/bb:1", reg.host());
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(busybox_ref())
        .arg(format!("docker://{base_ref}")));
    let base_digest = digest_of(&skopeo_raw(&base_ref, None));

    // The same base from a layout and from the registry: the same image.
    let repo = format!("{}/acme/api", reg.host());
    project(d, &repo, &busybox_ref());
    let from_layout = stdout(&ok(cmd(d).args(["build", "api"])));
    let p = d.join("p");
    project(&p, &repo, &base_ref);
    let from_registry = stdout(&ok(cmd(&p).args(["build", "api"])));
    // The same image but for the registry base's name (`base.name` names the reference).
    assert_ne!(from_layout, from_registry);
    assert_eq!(
        manifest_without_base_name(d, &from_layout, None),
        manifest_without_base_name(&p, &from_registry, Some(&base_ref))
    );

    // imgbuild.lock pins the tag.
    let lock = fs::read_to_string(p.join("imgbuild.lock")).unwrap();
    assert!(
        lock.contains(&format!("[base.\"{base_ref}\".manifests]")),
        "{lock}"
    );
    assert!(
        lock.contains(&format!("\"linux/amd64\" = \"{base_digest}\"")),
        "{lock}"
    );

    // The tag moves on; builds keep the locked digest (even with an empty store).
    let other = d.join("other");
    project(&other, &format!("{}/lib/bb", reg.host()), &busybox_ref());
    fs::write(other.join("app/main.sh"), "echo other\n").unwrap();
    let s = json(&ok(
        cmd(&other).args(["build", "api", "--push", "--tag", "1", "--json"])
    ));
    let moved = s["digest"].as_str().unwrap().to_string();
    assert_eq!(digest_of(&skopeo_raw(&base_ref, None)), moved);
    fs::remove_dir_all(p.join(".store")).unwrap();
    assert_eq!(stdout(&ok(cmd(&p).args(["build", "api"]))), from_registry);
    assert_eq!(fs::read_to_string(p.join("imgbuild.lock")).unwrap(), lock);

    // `lock --update` re-resolves the tag.
    ok(cmd(&p).args(["lock", "--update"]));
    let lock2 = fs::read_to_string(p.join("imgbuild.lock")).unwrap();
    assert!(lock2.contains(&moved), "{lock2}");
    // Back to the old digest, then delete it from the registry: a clear error.
    fs::write(p.join("imgbuild.lock"), &lock).unwrap();
    let del = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
        ])
        .arg(format!(
            "http://{}/v2/lib/bb/manifests/{base_digest}",
            reg.host()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&del.stdout), "202");
    fs::remove_dir_all(p.join(".store")).unwrap();
    let (code, err) = fails(cmd(&p).args(["build", "api"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("is locked to {base_digest}")),
        "{err}"
    );
    assert!(err.contains("no longer has that manifest"), "{err}");
    assert!(err.contains("imgbuild lock --update"), "{err}");

    // An unknown repository, and an unknown tag.
    let q = d.join("q");
    project(&q, &repo, &format!("{}/nope/base:1", reg.host()));
    let (code, err) = fails(cmd(&q).args(["build", "api"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("repository `nope/base` does not exist"),
        "{err}"
    );
    project(&q, &repo, &format!("{}/lib/bb:404", reg.host()));
    let (_, err) = fails(cmd(&q).args(["build", "api"]));
    assert!(
        err.contains("has no tag `404`") && err.contains("tags there: 1"),
        "{err}"
    );
    assert!(!q.join("imgbuild.lock").exists());
}

#[test]
fn a_registry_that_serves_wrong_content_is_caught() {
    let reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let repo = format!("{}/acme/api", reg.host());
    project(d, &repo, &busybox_ref());
    let s = json(&ok(cmd(d).args(["build", "api", "--push", "--json"])));
    let digest = s["digest"].as_str().unwrap().to_string();
    let manifest: Value =
        serde_json::from_slice(&skopeo_raw(&format!("{repo}@{digest}"), None)).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // Flip one byte of the base layer in the registry's storage (same size).
    let data = reg.blob_data_path(&layer);
    let mut bytes = fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&data, &bytes).unwrap();

    let v = tempfile::tempdir().unwrap();
    let (code, err) = fails(cmd(v.path()).args(["verify", &format!("{repo}@{digest}")]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("downloading blob {layer}")), "{err}");
    assert!(err.contains("does not match"), "{err}");
    assert!(
        !v.path()
            .join(".store/blobs/sha256")
            .join(&layer[7..])
            .exists(),
        "no bad blob kept"
    );

    // As a base, the same.
    let p = d.join("p");
    project(&p, &repo, &format!("{repo}@{digest}"));
    let (_, err) = fails(cmd(&p).args(["build", "api"]));
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn plain_http_is_only_for_loopback_or_insecure_hosts() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    project(
        d,
        "registry.invalid:5000/acme/api",
        "http://registry.invalid/acme/base:1",
    );
    let (code, err) = fails(cmd(d).args(["build", "api"]));
    assert_eq!(code, 2);
    assert!(err.contains("references have no scheme"), "{err}");
    assert!(err.contains("insecure_registries"), "{err}");
}

/// A token server for the registry's `auth: token:` config: signs ES256 JWTs with a key pair
/// made by openssl for the test, for user `tok` / `tok-pw` only.
struct TokenServer {
    port: u16,
    issued: Arc<AtomicUsize>,
    scopes: Arc<Mutex<Vec<String>>>,
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 && i + 3 <= b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

impl TokenServer {
    fn start(dir: &Path, service: &str) -> TokenServer {
        require_tool("openssl");
        let key = dir.join("key.pem");
        ok(Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&key));
        ok(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(dir.join("key.p8")));
        ok(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-new",
                "-days",
                "2",
                "-subj",
                "/CN=imgbuild-test-token",
                "-key",
            ])
            .arg(&key)
            .arg("-out")
            .arg(dir.join("cert.pem")));
        ok(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(dir.join("cert.pem"))
            .arg("-out")
            .arg(dir.join("cert.der")));
        let p8 = fs::read(dir.join("key.p8")).unwrap();
        let cert = fs::read(dir.join("cert.der")).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &p8,
            &rng,
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = Arc::new(AtomicUsize::new(0));
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let (iss, sc, service) = (issued.clone(), scopes.clone(), service.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = handle_token(&mut conn, &kp, &rng, &cert, &service, &iss, &sc);
            }
        });
        TokenServer {
            port,
            issued,
            scopes,
        }
    }
}

fn handle_token(
    conn: &mut TcpStream,
    kp: &ring::signature::EcdsaKeyPair,
    rng: &ring::rand::SystemRandom,
    cert: &[u8],
    service: &str,
    issued: &AtomicUsize,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    use base64::Engine as _;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let method = line.split_whitespace().next().unwrap_or("").to_string();
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut user_ok = false;
    let mut sent_auth = false;
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, v)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("authorization") {
                sent_auth = true;
                let v = v.trim();
                let dec = v
                    .strip_prefix("Basic ")
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .unwrap_or_default();
                user_ok = dec == b"tok:tok-pw";
            }
        }
    }
    // GET realm?service&scope… with Basic credentials, or an OAuth2 refresh-token POST
    // (docker's `identitytoken`) whose form carries the scopes, space-separated.
    let mut scopes: Vec<String> = Vec::new();
    let oauth = method == "POST";
    if oauth {
        let mut body = vec![0u8; content_length];
        r.read_exact(&mut body)?;
        let form = String::from_utf8_lossy(&body).into_owned();
        sent_auth = true;
        for kv in form.split('&') {
            match kv.split_once('=') {
                Some(("refresh_token", v)) => user_ok = pct_decode(v) == "refresh-xyz",
                Some(("scope", v)) => scopes.extend(pct_decode(v).split(' ').map(String::from)),
                _ => {}
            }
        }
    } else {
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        for kv in query.split('&') {
            if let Some(v) = kv.strip_prefix("scope=") {
                scopes.push(pct_decode(v));
            }
        }
    }
    let mut access = Vec::new();
    for s in scopes {
        seen.lock().unwrap().push(s.clone());
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() == 3 && user_ok {
            access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}));
        }
    }
    let mut w = conn.try_clone()?;
    if sent_auth && !user_ok {
        w.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    // No password: an anonymous token with no access (the registry then says 401).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [base64::engine::general_purpose::STANDARD.encode(cert)]});
    let n = issued.fetch_add(1, Ordering::SeqCst);
    let claims = serde_json::json!({"iss": "imgbuild-test-issuer", "sub": if user_ok {"tok"} else {""}, "aud": service, "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{n}"), "access": access});
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = kp.sign(rng, signing_input.as_bytes()).unwrap();
    let token = format!("{signing_input}.{}", b64url(sig.as_ref()));
    let body = if oauth {
        serde_json::json!({"access_token": token, "expires_in": 300}).to_string()
    } else {
        serde_json::json!({"token": token, "expires_in": 300}).to_string()
    };
    w.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes())?;
    let mut sink = Vec::new();
    let _ = r.read_to_end(&mut sink);
    Ok(())
}

#[test]
fn bearer_token_flow_against_a_real_token_issuer() {
    let keys = tempfile::tempdir().unwrap();
    let ts = TokenServer::start(keys.path(), "imgbuild-test-registry");
    let reg = Registry::start_custom(
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: imgbuild-test-registry\n    issuer: imgbuild-test-issuer\n    rootcertbundle: {}\n",
            ts.port,
            keys.path().join("cert.pem").display()
        ),
        "401",
    );
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let repo = format!("{}/acme/api", reg.host());
    project(d, &repo, &busybox_ref());
    ok(cmd(d).args(["build", "api"]));

    // No credentials: the anonymous token grants nothing; the error says what was needed.
    let (code, err) = fails(cmd(d).args(["push", "api"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("repository:acme/api:pull,push") && err.contains("no credentials were found"),
        "{err}"
    );

    // With credentials: one token for the whole push, reused for every request.
    let before = ts.issued.load(Ordering::SeqCst);
    let s = json(&ok(cmd(d)
        .args(["push", "api", "--json"])
        .env("IMGBUILD_REGISTRY_USER", "tok")
        .env("IMGBUILD_REGISTRY_PASSWORD", "tok-pw")));
    assert_eq!(
        ts.issued.load(Ordering::SeqCst) - before,
        1,
        "one token per push"
    );
    assert!(s["uploaded_bytes"].as_u64().unwrap() > 0);
    assert!(ts
        .scopes
        .lock()
        .unwrap()
        .contains(&"repository:acme/api:pull,push".to_string()));

    // A second repository: the token asks for pull on the mount source too; blobs are mounted.
    let other = format!("{}/acme/other", reg.host());
    let toml = fs::read_to_string(d.join("imgbuild.toml"))
        .unwrap()
        .replace(&repo, &other);
    fs::write(d.join("imgbuild.toml"), toml).unwrap();
    let s = json(&ok(cmd(d)
        .args(["push", "api", "--json"])
        .env("IMGBUILD_REGISTRY_USER", "tok")
        .env("IMGBUILD_REGISTRY_PASSWORD", "tok-pw")));
    assert_eq!(s["mounted_blobs"], 3, "{s}");
    assert_eq!(s["uploaded_bytes"], 0, "{s}");
    assert!(ts
        .scopes
        .lock()
        .unwrap()
        .contains(&"repository:acme/api:pull".to_string()));

    // Wrong password: rejected, not printed.
    let out = cmd(d)
        .args(["push", "api"])
        .env("IMGBUILD_REGISTRY_USER", "tok")
        .env("IMGBUILD_REGISTRY_PASSWORD", "not-the-pw")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("were rejected") && !err.contains("not-the-pw"),
        "{err}"
    );

    // docker's identity token (config.json `identitytoken`): an OAuth2 refresh-token grant.
    fs::create_dir_all(d.join(".home/.docker")).unwrap();
    fs::write(
        d.join(".home/.docker/config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"identitytoken":"refresh-xyz"}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let s2 = json(&ok(cmd(d).args(["push", "api", "--tag", "oauth", "--json"])));
    assert_eq!(s2["uploaded_bytes"], 0, "{s2}");
    fs::remove_file(d.join(".home/.docker/config.json")).unwrap();

    // Pulling a base and verifying by digest go through the token flow too.
    let digest = s["digest"].as_str().unwrap();
    let v = tempfile::tempdir().unwrap();
    ok(cmd(v.path())
        .args(["verify", &format!("{other}@{digest}")])
        .env("IMGBUILD_REGISTRY_USER", "tok")
        .env("IMGBUILD_REGISTRY_PASSWORD", "tok-pw"));
}

/// A TCP proxy in front of a registry that misbehaves as told: the first connections get a
/// canned answer (`503`, `429` with Retry-After, or a dropped connection) instead of the
/// registry, and once `cut_after` bytes have gone upstream, that connection is cut mid-request.
struct Flaky {
    port: u16,
    canned_sent: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
}

impl Flaky {
    fn start(upstream: u16, canned: Vec<&'static str>, cut_after: Option<u64>) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let canned_sent = Arc::new(AtomicUsize::new(0));
        let cut = Arc::new(AtomicUsize::new(0));
        let upstream_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (cs, ct) = (canned_sent.clone(), cut.clone());
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(client) = conn else { continue };
                if let Some(answer) = canned.get(n).copied() {
                    cs.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        let mut r = BufReader::new(client.try_clone().unwrap());
                        let mut line = String::new();
                        while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                            line.clear();
                        }
                        let mut w = client;
                        let _ = match answer {
                            "drop" => Ok(()),
                            "429" => w.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                            _ => w.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                        };
                        let _ = w.shutdown(std::net::Shutdown::Both);
                    });
                    continue;
                }
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                let (total, ct) = (upstream_bytes.clone(), ct.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let before = total.fetch_add(n as u64, Ordering::SeqCst);
                        if let Some(limit) = cut_after {
                            if before < limit
                                && before + n as u64 >= limit
                                && ct.fetch_add(1, Ordering::SeqCst) == 0
                            {
                                let _ = s_write.write_all(&buf[..n / 2]);
                                let _ = s_write.shutdown(std::net::Shutdown::Both);
                                let _ = c_read.shutdown(std::net::Shutdown::Both);
                                break;
                            }
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Flaky {
            port,
            canned_sent,
            cut,
        }
    }
}

#[test]
fn retries_on_503_429_and_dropped_connections_and_recovers_a_cut_chunked_upload() {
    let reg = Registry::start_custom("", "200");
    let proxy = Flaky::start(reg.port, vec!["503", "429", "drop"], Some(6 * 1024 * 1024));
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let repo = format!("127.0.0.1:{}/acme/flaky", proxy.port);
    project(d, &repo, &busybox_ref());
    let noise = noise(0x9E3779B97F4A7C15, 10 * 1024 * 1024);
    fs::write(d.join("app/noise.bin"), &noise).unwrap();
    let s = json(&ok(cmd(d)
        .args(["build", "api", "--push", "--json"])
        .env("IMGBUILD_REGISTRY_ATTEMPTS", "5")));
    assert_eq!(
        proxy.canned_sent.load(Ordering::SeqCst),
        3,
        "503, 429 and a drop were served"
    );
    assert_eq!(
        proxy.cut.load(Ordering::SeqCst),
        1,
        "one upload was cut mid-chunk"
    );
    let digest = s["digest"].as_str().unwrap();
    // The registry (asked directly) has the whole image. After the cut, imgbuild asked the
    // registry where to resume (a GET of the upload's status, in its log); distribution drops
    // such a session rather than resume it, so the blob was started again.
    let direct = format!("{}/acme/flaky", reg.host());
    assert_eq!(
        digest_of(&skopeo_raw(&format!("{direct}@{digest}"), None)),
        digest
    );
    let log = reg.log();
    assert!(
        log.contains("\"GET /v2/acme/flaky/blobs/uploads/"),
        "no upload status request in the log"
    );
    let v = tempfile::tempdir().unwrap();
    ok(cmd(v.path()).args(["verify", &format!("{direct}@{digest}")]));
}

#[test]
fn an_index_base_resolves_to_the_platform_manifest_and_locks_both_digests() {
    let reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let host = reg.host();
    // Two different images in lib/multi: busybox (amd64) and one built on it (listed as arm64).
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(busybox_ref())
        .arg(format!("docker://{host}/lib/multi:amd64")));
    let other = d.join("other");
    project(&other, &format!("{host}/lib/multi"), &busybox_ref());
    ok(cmd(&other).args(["build", "api", "--push", "--tag", "arm64"]));
    let amd = skopeo_raw(&format!("{host}/lib/multi:amd64"), None);
    let arm = skopeo_raw(&format!("{host}/lib/multi:arm64"), None);
    let entry = |m: &[u8], arch: &str| serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of(m), "size": m.len(), "platform": {"architecture": arch, "os": "linux"}});
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")]}).to_string();
    fs::write(d.join("index.json"), &index).unwrap();
    let put = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
            "--data-binary",
        ])
        .arg(format!("@{}", d.join("index.json").display()))
        .arg(format!("http://{host}/v2/lib/multi/manifests/1"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&put.stdout), "201");

    let p = d.join("p");
    let base = format!("{host}/lib/multi:1");
    project(&p, &format!("{host}/acme/api"), &base);
    let from_index = stdout(&ok(cmd(&p).args(["build", "api"])));
    let lock = fs::read_to_string(p.join("imgbuild.lock")).unwrap();
    assert!(
        lock.contains(&format!("index = \"{}\"", digest_of(index.as_bytes()))),
        "{lock}"
    );
    assert!(
        lock.contains(&format!("\"linux/amd64\" = \"{}\"", digest_of(&amd))),
        "{lock}"
    );
    // The amd64 entry was chosen: the same image as on the busybox layout (but for the name).
    let q = d.join("q");
    project(&q, &format!("{host}/acme/api"), &busybox_ref());
    let from_layout = stdout(&ok(cmd(&q).args(["build", "api"])));
    assert_eq!(
        manifest_without_base_name(&q, &from_layout, None),
        manifest_without_base_name(&p, &from_index, Some(&base))
    );

    // A platform the index does not have: a clear error listing those it has.
    let toml = fs::read_to_string(p.join("imgbuild.toml"))
        .unwrap()
        .replace("linux/amd64", "linux/s390x");
    fs::write(p.join("imgbuild.toml"), toml).unwrap();
    let (code, err) = fails(cmd(&p).args(["build", "api"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("has no manifest for linux/s390x (it has: linux/arm64, linux/amd64)"),
        "{err}"
    );
}

#[test]
fn credentials_from_auth_json_a_credential_helper_and_a_limited_environment() {
    use base64::Engine as _;
    let reg = Registry::start(Some(("ci", "helper-pw")));
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let repo = format!("{}/acme/api", reg.host());
    project(d, &repo, &busybox_ref());
    ok(cmd(d).args(["build", "api"]));

    // containers auth.json named by REGISTRY_AUTH_FILE.
    let auth = d.join("auth.json");
    let b64 = base64::engine::general_purpose::STANDARD.encode("ci:helper-pw");
    fs::write(
        &auth,
        format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    ok(cmd(d)
        .args(["push", "api"])
        .env("REGISTRY_AUTH_FILE", &auth));

    // docker config.json with credsStore: the helper is asked, its answer never printed.
    let bin = d.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-imgbuildtest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\nif [ \"$server\" = \"{}\" ]; then echo '{{\"ServerURL\":\"x\",\"Username\":\"ci\",\"Secret\":\"helper-pw\"}}'; else echo 'credentials not found in native keychain'; exit 1; fi\n",
            reg.host()
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fs::create_dir_all(d.join(".home/.docker")).unwrap();
    fs::write(
        d.join(".home/.docker/config.json"),
        r#"{"credsStore":"imgbuildtest"}"#,
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = ok(cmd(d)
        .args(["push", "api", "--tag", "helper"])
        .env("PATH", &path));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("helper-pw"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("helper-pw"));
    fs::remove_file(d.join(".home/.docker/config.json")).unwrap();

    // Environment credentials are for the push registry only: a base on another registry
    // does not get them (here: the same registry under another name, localhost).
    let q = d.join("q");
    let port = reg.port;
    project(&q, &repo, &format!("localhost:{port}/acme/api:helper"));
    let (_, err) = fails(
        cmd(&q)
            .args(["build", "api"])
            .env("IMGBUILD_REGISTRY_USER", "ci")
            .env("IMGBUILD_REGISTRY_PASSWORD", "helper-pw"),
    );
    assert!(
        err.contains(&format!("IMGBUILD_REGISTRY_HOST=localhost:{port}")),
        "{err}"
    );
    ok(cmd(&q)
        .args(["build", "api"])
        .env("IMGBUILD_REGISTRY_USER", "ci")
        .env("IMGBUILD_REGISTRY_PASSWORD", "helper-pw")
        .env("IMGBUILD_REGISTRY_HOST", format!("localhost:{port}")));
}

/// The manifest `digest` of project `dir`'s layout with its `base.name` annotation taken out,
/// after checking that annotation: the reference `base` as written, or none.
fn manifest_without_base_name(dir: &Path, digest: &str, base: Option<&str>) -> serde_json::Value {
    let blob = dir
        .join(".imgbuild/oci/blobs/sha256")
        .join(digest.trim().trim_start_matches("sha256:"));
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(blob).unwrap()).unwrap();
    let ann = m["annotations"].as_object_mut().unwrap();
    let name = ann.remove("org.opencontainers.image.base.name");
    assert_eq!(name.as_ref().and_then(|v| v.as_str()), base, "{m}");
    m
}
