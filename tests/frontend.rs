//! Frontend layer presets (`layers/*.toml`, embedded): `nextjs-standalone` and `static-site`
//! built into real images (read back with umoci, checked in runc), a preset's fields overridden
//! in the layer, `imgbuild presets`, and a missing build output that fails before anything is
//! fetched or written, naming the path and the command that produces it.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

/// `frontend/` of the job-agent fixture (a Next.js standalone output without public/).
fn nextjs_output(dir: &Path) {
    copy_fixture("job-agent/frontend", &dir.join("frontend"));
}

/// An image `web` on the busybox base with one layer `frontend`: `layer` is its TOML body.
fn config(dir: &Path, layer: &str, smoke: &str) {
    write_project(
        dir,
        &[],
        &format!(
            "[images.web]\nbase = \"{}\"\nworkdir = \"/app\"\nsmoke = {smoke}\n\n[[images.web.layers]]\nname = \"frontend\"\n{layer}\n",
            busybox_ref()
        ),
    );
}

/// Unpacks the last build of `web` with umoci; returns the root filesystem.
fn unpack(dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    let _ = fs::remove_dir_all(&bundle);
    umoci_unpack(&dir.join(".imgbuild/oci"), "web", &bundle);
    bundle.join("rootfs")
}

fn store_blobs(store: &Path) -> usize {
    fs::read_dir(store.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn presets_are_listed_with_what_they_do() {
    let t = tempfile::tempdir().unwrap();
    let out = ok(imgbuild(t.path()).arg("presets"));
    let list = stdout(&out);
    let names: Vec<&str> = list
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["nextjs-standalone", "static-site"], "{list}");
    assert!(
        list.contains(".next/standalone → workdir, .next/static, public/ (always present)"),
        "{list}"
    );
    assert!(list.contains("dist/ → /usr/share/nginx/html"), "{list}");
}

#[test]
fn nextjs_standalone_lays_out_the_server_and_guarantees_public() {
    let t = tempfile::tempdir().unwrap();
    nextjs_output(t.path());
    config(
        t.path(),
        "preset = \"nextjs-standalone\"\nroot = \"frontend\"",
        r#"["test -d /app/public", "test -f /app/server.js", "test -f /app/.next/static/css/app-4f1e2d.css"]"#,
    );
    ok(imgbuild(t.path()).arg("web"));
    let root = unpack(t.path());
    assert!(root.join("app/server.js").is_file());
    assert!(root.join("app/package.json").is_file());
    assert!(root
        .join("app/.next/static/chunks/main-abc123.js")
        .is_file());
    assert!(
        root.join("app/public").is_dir(),
        "public/ exists with no source"
    );
    assert_eq!(fs::read_dir(root.join("app/public")).unwrap().count(), 0);
    assert!(
        !root.join("app/frontend").exists() && !root.join("app/.next/standalone").exists(),
        "the standalone directory's contents go to the workdir"
    );
    require_tool("runc");
    let out = ok(imgbuild(t.path()).args(["test", "web"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("web: 3 smoke command(s) passed"));

    // A project that has public/ gets it copied.
    fs::create_dir_all(t.path().join("frontend/public")).unwrap();
    fs::write(
        t.path().join("frontend/public/robots.txt"),
        "User-agent: *\n",
    )
    .unwrap();
    ok(imgbuild(t.path()).arg("web"));
    let root = unpack(t.path());
    assert_eq!(
        fs::read_to_string(root.join("app/public/robots.txt")).unwrap(),
        "User-agent: *\n"
    );
}

#[test]
fn a_preset_field_given_in_the_layer_replaces_the_presets() {
    let t = tempfile::tempdir().unwrap();
    nextjs_output(t.path());
    fs::write(
        t.path()
            .join("frontend/.next/static/chunks/main-abc123.js.map"),
        "{}",
    )
    .unwrap();
    // `exclude` and `ensure_dirs` replace the preset's; `files` and `expect` stay the preset's.
    config(
        t.path(),
        "preset = \"nextjs-standalone\"\nroot = \"frontend\"\nexclude = [\"**/*.map\"]\nensure_dirs = [\"/app/public\", \"/app/.next/cache\"]",
        "[]",
    );
    ok(imgbuild(t.path()).arg("web"));
    let root = unpack(t.path());
    assert!(root.join("app/.next/cache").is_dir());
    assert!(root.join("app/public").is_dir());
    assert!(root
        .join("app/.next/static/chunks/main-abc123.js")
        .is_file());
    assert!(!root
        .join("app/.next/static/chunks/main-abc123.js.map")
        .exists());

    // `expect` given in the layer: a path the build does not produce fails it, with the hint.
    config(
        t.path(),
        "preset = \"nextjs-standalone\"\nroot = \"frontend\"\nexpect = [\"/app/server.js\", \"/app/healthcheck.js\"]",
        "[]",
    );
    let (code, err) = fails(imgbuild(t.path()).arg("web"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("expected path /app/healthcheck.js is missing from the image (hint: run `npm run build` with `output: \"standalone\"` in next.config.js"), "{err}");

    // `files` given in the layer: a monorepo whose standalone output nests the app.
    let nested = t.path().join("frontend/.next/standalone/apps/web");
    fs::create_dir_all(&nested).unwrap();
    fs::rename(
        t.path().join("frontend/.next/standalone/server.js"),
        nested.join("server.js"),
    )
    .unwrap();
    config(
        t.path(),
        "preset = \"nextjs-standalone\"\nroot = \"frontend\"\nfiles = [{ from = \".next/standalone/apps/web\", to = \"/app\" }, { from = \".next/static\", to = \"/app/.next/static\" }]",
        "[]",
    );
    ok(imgbuild(t.path()).arg("web"));
    let root = unpack(t.path());
    assert!(root.join("app/server.js").is_file());
    assert!(
        root.join("app/public").is_dir(),
        "the preset's ensure_dirs still apply"
    );
}

#[test]
fn static_site_serves_dist_and_can_be_pointed_elsewhere() {
    let t = tempfile::tempdir().unwrap();
    let dist = t.path().join("web/dist");
    fs::create_dir_all(dist.join("assets")).unwrap();
    fs::write(dist.join("index.html"), "<!doctype html><title>x</title>\n").unwrap();
    fs::write(dist.join("assets/app.js"), "console.log(1)\n").unwrap();
    fs::write(dist.join("assets/app.js.map"), "{}").unwrap();
    config(
        t.path(),
        "preset = \"static-site\"\nroot = \"web\"",
        r#"["test -f /usr/share/nginx/html/index.html"]"#,
    );
    ok(imgbuild(t.path()).arg("web"));
    let root = unpack(t.path());
    assert!(root.join("usr/share/nginx/html/index.html").is_file());
    assert!(root.join("usr/share/nginx/html/assets/app.js").is_file());
    assert!(
        !root.join("usr/share/nginx/html/assets/app.js.map").exists(),
        "source maps are left out"
    );
    require_tool("runc");
    ok(imgbuild(t.path()).args(["test", "web"]));

    // Another server's document root: `files` and `expect` given in the layer.
    config(
        t.path(),
        "preset = \"static-site\"\nroot = \"web\"\nfiles = [{ from = \"dist\", to = \"/srv/www\" }]\nexpect = [\"/srv/www/index.html\"]",
        "[]",
    );
    ok(imgbuild(t.path()).arg("web"));
    let root = unpack(t.path());
    assert!(root.join("srv/www/index.html").is_file());
    assert!(!root.join("usr/share/nginx/html").exists());

    // A dist/ without index.html: the build fails naming the path (exit 1).
    fs::remove_file(dist.join("index.html")).unwrap();
    config(t.path(), "preset = \"static-site\"\nroot = \"web\"", "[]");
    let (code, err) = fails(imgbuild(t.path()).arg("web"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("expected path /usr/share/nginx/html/index.html is missing from the image (hint: run `npm run build`; it writes the site into dist/)"), "{err}");

    // No dist/ at all.
    fs::remove_dir_all(&dist).unwrap();
    let (code, err) = fails(imgbuild(t.path()).arg("web"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "layer `frontend`: `from = \"dist\"` does not exist ({})",
            dist.display()
        )) && err.contains("hint: run `npm run build`; it writes the site into dist/"),
        "{err}"
    );
}

/// No `.next/standalone`: the build stops before the base is resolved (its registry is a closed
/// port) and before any blob, layout or lock file is written, saying which path is missing and
/// which command writes it.
#[test]
fn a_missing_build_output_fails_before_anything_is_fetched_or_written() {
    let t = tempfile::tempdir().unwrap();
    nextjs_output(t.path());
    fs::remove_dir_all(t.path().join("frontend/.next")).unwrap();
    let dead = free_port();
    fs::write(
        t.path().join("imgbuild.toml"),
        format!("[images.web]\nbase = \"127.0.0.1:{dead}/library/node:22-slim\"\nworkdir = \"/app\"\n\n[[images.web.layers]]\nname = \"frontend\"\npreset = \"nextjs-standalone\"\nroot = \"frontend\"\n"),
    )
    .unwrap();
    let (code, err) = fails(imgbuild(t.path()).arg("web"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "error: layer `frontend`: `from = \".next/standalone\"` does not exist ({})",
            t.path().join("frontend/.next/standalone").display()
        )),
        "{err}"
    );
    assert!(err.contains("hint: run `npm run build` with `output: \"standalone\"` in next.config.js; it writes .next/standalone and .next/static"), "{err}");
    assert!(
        !err.contains("127.0.0.1"),
        "the base was not contacted: {err}"
    );
    assert!(!t.path().join(".imgbuild").exists());
    assert!(!t.path().join("imgbuild.lock").exists());
    assert_eq!(store_blobs(&t.path().join(".store")), 0);

    // The standalone output without its static assets: the same, for .next/static.
    fs::create_dir_all(t.path().join("frontend/.next/standalone")).unwrap();
    fs::write(t.path().join("frontend/.next/standalone/server.js"), "").unwrap();
    let (code, err) = fails(imgbuild(t.path()).arg("web"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`from = \".next/static\"` does not exist"),
        "{err}"
    );
    assert_eq!(store_blobs(&t.path().join(".store")), 0);
}
