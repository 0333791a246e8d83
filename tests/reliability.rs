//! A build can be killed at any moment, run twice at once, or run out of disk: the store stays
//! consistent (`imgbuild store fsck` finds nothing) and the next build gives the same digest.

mod common;
use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A project with three layers and ~12 MB of poorly compressible data, so a build takes a while.
fn project(dir: &Path) {
    let mut files = Vec::new();
    for (i, layer) in ["a", "b", "c"].iter().enumerate() {
        for f in 0..4 {
            let bytes = noise(0x9e3779b97f4a7c15 ^ (i * 4 + f) as u64, 1_000_000);
            files.push((format!("{layer}/f{f}.bin"), bytes));
        }
    }
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let layers: String = ["a", "b", "c"].iter().map(|l| format!("[[images.app.layers]]\nname = \"{l}\"\nfiles = [{{ from = \"{l}\", to = \"/{l}\" }}]\n")).collect();
    write_project(
        dir,
        &files,
        &format!("[images.app]\nbase = \"scratch\"\n{layers}"),
    );
}

fn fsck_clean(dir: &Path) {
    let out = ok(imgbuild(dir).args(["store", "fsck"]));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("0 problem(s)"), "{text}");
}

fn layout_consistent(dir: &Path) {
    let index = dir.join(".imgbuild/oci/index.json");
    let Ok(bytes) = fs::read(&index) else { return };
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("index.json is always whole");
    for m in v["manifests"].as_array().unwrap() {
        let hex = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
        assert!(
            dir.join(".imgbuild/oci/blobs/sha256").join(hex).is_file(),
            "index names a manifest that exists"
        );
    }
}

#[test]
fn killing_builds_at_random_moments_never_corrupts_the_store() {
    let runs: usize = std::env::var("IMGBUILD_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let reference = tempfile::tempdir().unwrap();
    project(reference.path());
    let t0 = Instant::now();
    let want = stdout(&ok(imgbuild(reference.path()).arg("app")));
    let full = t0.elapsed();

    let t = tempfile::tempdir().unwrap();
    project(t.path());
    let mut seed = std::process::id() as u64;
    let mut killed = 0;
    for i in 0..runs {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_micros((seed >> 33) % (full.as_micros() as u64 + 1));
        if i % 3 == 0 {
            // Start from nothing now and then, so early moments of a cold build are hit too.
            let _ = fs::remove_dir_all(t.path().join(".store"));
        }
        let mut child = imgbuild(t.path())
            .arg("app")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            killed += 1;
        }
        child.wait().unwrap();
        fsck_clean(t.path());
        layout_consistent(t.path());
    }
    eprintln!("killed {killed} of {runs} builds");
    let got = stdout(&ok(imgbuild(t.path()).arg("app")));
    assert_eq!(got, want, "the next build gives the same digest");
    fsck_clean(t.path());
}

#[test]
fn two_builds_at_once_share_the_store() {
    let t = tempfile::tempdir().unwrap();
    project(t.path());
    let spawn = || imgbuild(t.path()).arg("app").output();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    assert_eq!(a.stdout, b.stdout, "same digest");
    fsck_clean(t.path());
    layout_consistent(t.path());
}

#[test]
fn a_full_disk_fails_clearly_and_leaves_the_store_consistent() {
    let t = tempfile::tempdir().unwrap();
    project(t.path());
    let store = t.path().join("small-store");
    fs::create_dir_all(&store).unwrap();
    // A 4 MiB tmpfs is the full disk. Mounting it needs root (CI runs the tests as root): a
    // machine where it cannot be mounted fails this test, saying why, instead of passing it.
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&store)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mount (package `mount`): {e}"));
    assert!(
        mount.status.success(),
        "this test needs a small tmpfs as its full disk, and mounting one failed (uid {}; run the tests as root, as CI does): mount -t tmpfs -o size=4m tmpfs {}: {}",
        unsafe { libc::geteuid() },
        store.display(),
        String::from_utf8_lossy(&mount.stderr).trim()
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&store);
    let (code, err) = fails(imgbuild(t.path()).arg("app").env("IMGBUILD_CACHE", &store));
    assert_eq!(code, 1);
    assert!(err.contains("No space left on device"), "{err}");
    let leftovers: Vec<_> = fs::read_dir(store.join("tmp")).unwrap().flatten().collect();
    assert!(leftovers.is_empty(), "no half-written blob: {leftovers:?}");
    let out = ok(imgbuild(t.path())
        .args(["store", "fsck"])
        .env("IMGBUILD_CACHE", &store));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 problem(s)"));
}
