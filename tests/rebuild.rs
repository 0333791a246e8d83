//! A no-op rebuild stats each unchanged file and never opens it (issue 18): the stat cache knows
//! its content hash by size, mtime and inode. Checked with strace on the real binary.

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
