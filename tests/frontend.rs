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
    config_on(dir, &busybox_ref(), layer, smoke)
}

/// The same on another base.
fn config_on(dir: &Path, base: &str, layer: &str, smoke: &str) {
    write_project(
        dir,
        &[],
        &format!(
            "[images.web]\nbase = \"{base}\"\nworkdir = \"/app\"\nsmoke = {smoke}\n\n[[images.web.layers]]\nname = \"frontend\"\n{layer}\n"
        ),
    );
}

/// The Debian web base (real nginx serving /var/www/html, real node) as a base reference.
fn web_base() -> String {
    format!("oci:{}:bookworm", debian_web_base().display())
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
    assert!(
        list.contains("dist/ → the directory the base's web server serves"),
        "{list}"
    );
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
    assert!(err.contains("expected path /app/healthcheck.js is missing from the image (hint: run `npm run build` with `output: \"standalone\"` in next.config.ts (or .js/.mjs)"), "{err}");

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
    // Debian's nginx serves /var/www/html (its default site's `root`): the preset finds it.
    let base = web_base();
    config_on(
        t.path(),
        &base,
        "preset = \"static-site\"\nroot = \"web\"",
        r#"["test -f /var/www/html/index.html", "nginx -t"]"#,
    );
    ok(imgbuild(t.path()).arg("web"));
    let root = unpack(t.path());
    assert!(root.join("var/www/html/index.html").is_file());
    assert!(root.join("var/www/html/assets/app.js").is_file());
    assert!(
        !root.join("var/www/html/assets/app.js.map").exists(),
        "source maps are left out"
    );
    require_tool("runc");
    ok(imgbuild(t.path()).args(["test", "web"]));

    // Another server's document root: `files` and `expect` given in the layer.
    config_on(
        t.path(),
        &base,
        "preset = \"static-site\"\nroot = \"web\"\nfiles = [{ from = \"dist\", to = \"/srv/www\" }]\nexpect = [\"/srv/www/index.html\"]",
        "[]",
    );
    ok(imgbuild(t.path()).arg("web"));
    let root = unpack(t.path());
    assert!(root.join("srv/www/index.html").is_file());
    assert!(!root.join("var/www/html/index.html").exists());

    // A base whose server imgbuild cannot read (busybox, no httpd command): asked for `to`.
    config(t.path(), "preset = \"static-site\"\nroot = \"web\"", "[]");
    let (code, err) = fails(imgbuild(t.path()).arg("web"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot tell which directory the base"),
        "{err}"
    );
    assert!(
        err.contains("hint: give the layer its own `files = [{ from = \"dist\", to = "),
        "{err}"
    );

    // A dist/ without index.html: the build fails naming the path (exit 1).
    fs::remove_file(dist.join("index.html")).unwrap();
    config_on(
        t.path(),
        &base,
        "preset = \"static-site\"\nroot = \"web\"",
        "[]",
    );
    let (code, err) = fails(imgbuild(t.path()).arg("web"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("expected path /var/www/html/index.html is missing from the image (hint: run `npm run build`; it writes the site into dist/)"), "{err}");

    // A base that already has an index.html (as the official nginx image does): an empty
    // dist/ must still fail — the base's page does not satisfy the layer's `expect`.
    fs::write(t.path().join("welcome.html"), "Welcome to nginx!\n").unwrap();
    write_project(
        t.path(),
        &[],
        &format!(
            "[images.nginx]\nbase = \"{base}\"\n[[images.nginx.layers]]\nname = \"welcome\"\nfiles = [{{ from = \"welcome.html\", to = \"/var/www/html/index.html\" }}]\n\n[images.web]\nbase = \"image:nginx\"\n[[images.web.layers]]\nname = \"frontend\"\npreset = \"static-site\"\nroot = \"web\"\n"
        ),
    );
    let (code, err) = fails(imgbuild(t.path()).arg("web"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("layer `frontend`: expected path /var/www/html/index.html comes from the base image, not from this layer"),
        "{err}"
    );

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
    assert!(err.contains("hint: run `npm run build` with `output: \"standalone\"` in next.config.ts (or .js/.mjs); it writes .next/standalone and .next/static"), "{err}");
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

/// Next.js writes `.next/cache` at run time: with `user = "1000:1000"` that directory belongs
/// to the user (it failed with `EACCES … mkdir '/app/.next/cache'`), and the real node of the
/// web base starts the server as that user.
#[test]
fn nextjs_cache_is_writable_by_the_image_user() {
    let t = tempfile::tempdir().unwrap();
    nextjs_output(t.path());
    write_project(
        t.path(),
        &[],
        &format!(
            "[images.web]\nbase = \"{}\"\nworkdir = \"/app\"\nuser = \"1000:1000\"\ncmd = [\"node\", \"server.js\"]\nsmoke = [\"touch /app/.next/cache/x\", \"node -e 'require(\\\"fs\\\").mkdirSync(\\\"/app/.next/cache/images\\\")'\", \"! touch /app/server.js.new\"]\n\n[[images.web.layers]]\nname = \"frontend\"\npreset = \"nextjs-standalone\"\nroot = \"frontend\"\n",
            web_base()
        ),
    );
    ok(imgbuild(t.path()).arg("web"));
    let root = unpack(t.path());
    let md = fs::metadata(root.join("app/.next/cache")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    assert_eq!(fs::metadata(root.join("app/server.js")).unwrap().uid(), 0);
    require_tool("runc");
    let out = ok(imgbuild(t.path()).args(["test", "web"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("web: 3 smoke command(s) passed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
