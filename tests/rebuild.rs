//! A no-op rebuild stats each unchanged file and never opens it (issue 18): the stat cache knows
//! its content hash by size, mtime and inode; and an image whose inputs passed its checks before
//! is not checked again. Checked with strace on the real binary.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Every path `imgbuild build` opened under `under`, from an strace log of open/openat calls.
fn opened_under(log: &str, under: &Path) -> Vec<String> {
    let under = under.to_string_lossy().into_owned();
    log.lines()
        .filter(|l| l.contains("open") && !l.contains("ENOENT"))
        .filter_map(|l| {
            let start = l.find('"')? + 1;
            let end = start + l[start..].find('"')?;
            let p = &l[start..end];
            p.starts_with(&under).then(|| p.to_string())
        })
        .collect()
}

fn strace() -> &'static str {
    let found = Command::new("strace").arg("-V").output().is_ok();
    assert!(
        found,
        "strace is needed to see which files a rebuild opens: apt-get install strace (.ci/install-deps)"
    );
    "strace"
}

#[test]
fn a_no_op_rebuild_stats_unchanged_files_and_opens_none() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    let src = root.join("src");
    // Enough files for the summary to be made on two threads (more than 4096 entries).
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for i in 0..4500 {
        let d = src
            .join(format!("pkg{}", i % 7))
            .join(format!("m{}", i % 11));
        fs::create_dir_all(&d).unwrap();
        let f = d.join(format!("f{i}.py"));
        fs::write(&f, format!("print({i})\n")).unwrap();
        // Older than the racy window, so the stat cache remembers every file.
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
    }
    std::os::unix::fs::symlink("pkg0", src.join("alias")).unwrap();
    fs::write(
        root.join("imgbuild.toml"),
        "[images.t]\nbase = \"scratch\"\n\n[[images.t.layers]]\nname = \"src\"\nfiles = [{ from = \"src\", to = \"/app/src\" }]\n",
    )
    .unwrap();
    let build = |traced: Option<&Path>| -> serde_json::Value {
        let mut c = match traced {
            Some(log) => {
                let mut c = Command::new(strace());
                c.args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
                    .arg(log)
                    .arg(bin());
                c.current_dir(&root)
                    .env_remove("SOURCE_DATE_EPOCH")
                    .env("IMGBUILD_CACHE", root.join(".store"));
                c
            }
            None => imgbuild(&root),
        };
        serde_json::from_slice(&ok(c.args(["build", "t", "--json"])).stdout).unwrap()
    };
    let first = build(None);
    assert_eq!(first["layers"][0]["cached"], false);

    let log = root.join("noop.strace");
    let again = build(Some(&log));
    assert_eq!(again["layers"][0]["cached"], true, "{again}");
    assert_eq!(again["digest"], first["digest"]);
    let opened = opened_under(&fs::read_to_string(&log).unwrap(), &src);
    let files: Vec<_> = opened.iter().filter(|p| !Path::new(p).is_dir()).collect();
    assert!(
        files.is_empty(),
        "a no-op rebuild opened {} unchanged files, e.g. {:?}",
        files.len(),
        &files[..files.len().min(5)]
    );
    // The directories were listed (the walk did run), and each file was stat'ed instead.
    assert!(opened.iter().any(|p| p.ends_with("/m3")), "{opened:?}");

    // One changed file: the layer is written again, which reads the files (so the check above
    // does see a file being opened).
    let changed = src.join("pkg3/m5/f38.py");
    fs::write(&changed, "print('changed')\n").unwrap();
    let third = build(Some(&log));
    assert_eq!(third["layers"][0]["cached"], false);
    let opened = opened_under(&fs::read_to_string(&log).unwrap(), &src);
    assert!(
        opened.iter().any(|p| Path::new(p) == changed),
        "the rebuild after a change did not read {}: {opened:?}",
        changed.display()
    );
}

/// The store's layer listings `imgbuild build` opened (verification reads one per layer).
fn listings_opened(log: &str, store: &Path) -> Vec<String> {
    opened_under(log, &store.join("listings-v4"))
}

#[test]
fn an_image_that_passed_its_checks_is_not_checked_again_until_an_input_changes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    let store = root.join(".store");
    std::os::unix::fs::symlink(busybox_base(), root.join("base")).unwrap();
    fs::create_dir_all(root.join("app")).unwrap();
    fs::write(root.join("app/run"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(
        root.join("app/run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let toml = |cmd: &str| {
        format!(
            "[images.app]\nbase = \"oci:base:bb\"\ncmd = [\"{cmd}\"]\n\n[[images.app.layers]]\nname = \"app\"\nfiles = [{{ from = \"app\", to = \"/app\" }}]\n"
        )
    };
    fs::write(root.join("imgbuild.toml"), toml("/app/run")).unwrap();
    let traced = |log: &Path| {
        let mut c = Command::new(strace());
        c.args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
            .arg(log)
            .arg(bin())
            .args(["build", "app", "--json"])
            .current_dir(&root)
            .env_remove("SOURCE_DATE_EPOCH")
            .env("IMGBUILD_CACHE", &store);
        c
    };
    let log = root.join("build.strace");
    let first: serde_json::Value = serde_json::from_slice(&ok(&mut traced(&log)).stdout).unwrap();
    let read = listings_opened(&fs::read_to_string(&log).unwrap(), &store);
    assert!(
        !read.is_empty(),
        "the first build's checks read no layer listing"
    );

    // The same inputs: the verdict is taken from the store, the listings are not read.
    let again: serde_json::Value = serde_json::from_slice(&ok(&mut traced(&log)).stdout).unwrap();
    assert_eq!(again["digest"], first["digest"]);
    let read = listings_opened(&fs::read_to_string(&log).unwrap(), &store);
    assert!(
        read.is_empty(),
        "a rebuild with the same inputs checked again: {read:?}"
    );

    // A changed config (same layers) is checked again, and its failure is not remembered as a pass.
    fs::write(root.join("imgbuild.toml"), toml("/app/gone")).unwrap();
    for _ in 0..2 {
        let (code, err) = fails(imgbuild(&root).args(["build", "app"]));
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("cmd `/app/gone` does not exist in the image"),
            "{err}"
        );
    }

    // A changed layer is checked again: the file the command names is no longer in it.
    fs::write(root.join("imgbuild.toml"), toml("/app/run")).unwrap();
    ok(imgbuild(&root).args(["build", "app"]));
    fs::rename(root.join("app/run"), root.join("app/serve")).unwrap();
    let (code, err) = fails(imgbuild(&root).args(["build", "app"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cmd `/app/run` does not exist in the image"),
        "{err}"
    );
}
