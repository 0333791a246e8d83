//! The bad-input catalogue: each case is a broken project, config, path or base, with the exit
//! code and the message imgbuild must give — and a check that nothing was half-written.
//! tests/BAD_INPUT.md lists every case with its message; a test keeps the two in step.

mod common;
use common::*;
use flate2::write::GzEncoder;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

struct Case {
    id: &'static str,
    /// Breaks the (already built) good project in `dir`.
    setup: fn(&Path),
    args: &'static [&'static str],
    code: i32,
    message: &'static str,
}

const GOOD: &str = r#"[images.app]
base = "oci:base:bb"
workdir = "/app"
[[images.app.layers]]
name = "app"
files = [{ from = "app", to = "/app" }]
"#;

fn edit(dir: &Path, from: &str, to: &str) {
    let p = dir.join("imgbuild.toml");
    let s = fs::read_to_string(&p).unwrap();
    assert!(s.contains(from), "case setup: `{from}` not in the config");
    fs::write(p, s.replacen(from, to, 1)).unwrap();
}

fn append(dir: &Path, text: &str) {
    let p = dir.join("imgbuild.toml");
    fs::write(&p, fs::read_to_string(&p).unwrap() + text).unwrap();
}

/// Writes an OCI layout `dir` (tag `t`) with one gzip layer made of `entries`.
/// `tweak` may alter (manifest, config) JSON before they are written.
fn crafted_base(
    dir: &Path,
    entries: &[(&str, tar::EntryType, &[u8])],
    tweak: impl Fn(&mut serde_json::Value, &mut serde_json::Value, &mut Vec<u8>),
) {
    let mut raw = Vec::new();
    {
        let mut b = tar::Builder::new(&mut raw);
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_size(data.len() as u64);
            // Write the name bytes directly: tar::Builder refuses `..` and absolute paths itself.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.finish().unwrap();
    }
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let mut layer = gz.finish().unwrap();
    let mut config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]}, "rootfs": {"type": "layers", "diff_ids": [digest_of(&raw)]}});
    let mut manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "", "size": 0},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_of(&layer), "size": layer.len()}]});
    let layer_name = digest_of(&layer)[7..].to_string();
    tweak(&mut manifest, &mut config, &mut layer);
    let cfg = serde_json::to_vec(&config).unwrap();
    if manifest["config"]["digest"] == "" {
        manifest["config"]["digest"] = digest_of(&cfg).into();
        manifest["config"]["size"] = cfg.len().into();
    }
    let man = serde_json::to_vec(&manifest).unwrap();
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(blobs.join(layer_name), &layer).unwrap();
    fs::write(blobs.join(&digest_of(&cfg)[7..]), &cfg).unwrap();
    fs::write(blobs.join(&digest_of(&man)[7..]), &man).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of(&man), "size": man.len(), "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

fn use_crafted(
    dir: &Path,
    entries: &[(&str, tar::EntryType, &[u8])],
    tweak: impl Fn(&mut serde_json::Value, &mut serde_json::Value, &mut Vec<u8>),
) {
    crafted_base(&dir.join("crafted"), entries, tweak);
    edit(dir, "base = \"oci:base:bb\"", "base = \"oci:crafted:t\"");
}

const FILE: tar::EntryType = tar::EntryType::Regular;
fn no_tweak(_: &mut serde_json::Value, _: &mut serde_json::Value, _: &mut Vec<u8>) {}

const CASES: &[Case] = &[
    // Configuration
    Case {
        id: "config-syntax",
        setup: |d| edit(d, "[images.app]", "[images.app"),
        args: &["app"],
        code: 2,
        message: "imgbuild.toml:1:",
    },
    Case {
        id: "config-unknown-key",
        setup: |d| edit(d, "workdir", "workdri"),
        args: &["app"],
        code: 2,
        message: "unknown key `workdri`",
    },
    Case {
        id: "config-wrong-type",
        setup: |d| edit(d, "workdir = \"/app\"", "workdir = 1"),
        args: &["app"],
        code: 2,
        message: "imgbuild.toml:3:11: invalid type: integer `1`, expected a string",
    },
    Case {
        id: "config-sbom-not-bool",
        setup: |d| edit(d, "workdir = \"/app\"", "workdir = \"/app\"\nsbom = \"no\""),
        args: &["app"],
        code: 2,
        message: "imgbuild.toml:4:8: invalid type: string \"no\", expected a boolean",
    },
    Case {
        id: "sbom-of-docker-archive",
        setup: |_| {},
        args: &["sbom", "docker-archive:app.tar"],
        code: 2,
        message: "a docker-archive holds no SBOM",
    },
    Case {
        id: "config-unknown-image",
        setup: |_| {},
        args: &["api"],
        code: 2,
        message: "no image `api`",
    },
    Case {
        id: "config-unknown-preset",
        setup: |d| {
            append(
                d,
                "[[images.app.layers]]\nname = \"web\"\npreset = \"nextjs\"\n",
            )
        },
        args: &["app"],
        code: 2,
        message: "unknown layer preset `nextjs`",
    },
    Case {
        id: "config-cyclic-base",
        setup: |d| {
            edit(d, "base = \"oci:base:bb\"", "base = \"image:other\"");
            append(d, "[images.other]\nbase = \"image:app\"\n[[images.other.layers]]\nname = \"o\"\nensure_dirs = [\"/o\"]\n")
        },
        args: &["app"],
        code: 2,
        message: "images build on each other in a cycle: app → other → app",
    },
    Case {
        id: "config-missing-base-layout",
        setup: |d| edit(d, "oci:base:bb", "oci:nowhere:bb"),
        args: &["app"],
        code: 2,
        message: "is not an OCI image layout",
    },
    Case {
        id: "config-missing-base-tag",
        setup: |d| edit(d, "oci:base:bb", "oci:base:nope"),
        args: &["app"],
        code: 2,
        message: "no image tagged `nope`",
    },
    Case {
        id: "config-unknown-catalog-base",
        setup: |d| edit(d, "oci:base:bb", "pyhton-3.13-slim"),
        args: &["app"],
        code: 2,
        message: "did you mean `python-3.13-slim`?",
    },
    Case {
        id: "config-bad-compression",
        setup: |d| edit(d, "workdir", "compression = \"lz4\"\nworkdir"),
        args: &["app"],
        code: 2,
        message: "compression `lz4`",
    },
    Case {
        id: "config-bad-platform",
        setup: |d| edit(d, "workdir", "platform = \"amd64\"\nworkdir"),
        args: &["app"],
        code: 2,
        message: "platform `amd64`",
    },
    Case {
        id: "config-duplicate-layer",
        setup: |d| {
            append(
                d,
                "[[images.app.layers]]\nname = \"app\"\nensure_dirs = [\"/x\"]\n",
            )
        },
        args: &["app"],
        code: 2,
        message: "two layers named `app`",
    },
    Case {
        id: "config-empty-layer",
        setup: |d| append(d, "[[images.app.layers]]\nname = \"empty\"\n"),
        args: &["app"],
        code: 2,
        message: "layer `empty` has nothing to add",
    },
    Case {
        id: "config-python-and-files",
        setup: |d| {
            append(d, "[[images.app.layers]]\nname = \"py\"\nfiles = []\npython = { lock = \"uv.lock\" }\n")
        },
        args: &["app"],
        code: 2,
        message: "cannot be combined",
    },
    Case {
        id: "config-bad-owner",
        setup: |d| edit(d, "name = \"app\"", "name = \"app\"\nowner = \"root\""),
        args: &["app"],
        code: 2,
        message: "owner `root` must be numeric",
    },
    Case {
        id: "config-bad-mode",
        setup: |d| edit(d, "to = \"/app\" }", "to = \"/app\", mode = \"rwx\" }"),
        args: &["app"],
        code: 2,
        message: "mode `rwx` must be octal",
    },
    Case {
        id: "config-bad-glob",
        setup: |d| edit(d, "name = \"app\"", "name = \"app\"\nexclude = [\"a[\"]"),
        args: &["app"],
        code: 2,
        message: "invalid exclude pattern `a[`",
    },
    Case {
        id: "config-missing",
        setup: |d| fs::remove_file(d.join("imgbuild.toml")).unwrap(),
        args: &["app"],
        code: 2,
        message: "no imgbuild.toml in",
    },
    // Paths
    Case {
        id: "path-missing-from",
        setup: |d| edit(d, "from = \"app\"", "from = \"ap\""),
        args: &["app"],
        code: 2,
        message: "`from = \"ap\"` does not exist",
    },
    Case {
        id: "path-escapes-project",
        setup: |d| edit(d, "from = \"app\"", "from = \"../outside\""),
        args: &["app"],
        code: 2,
        message: "outside the project",
    },
    Case {
        id: "path-symlink-outside",
        setup: |d| {
            symlink("/etc", d.join("etc-link")).unwrap();
            edit(d, "from = \"app\"", "from = \"etc-link\"")
        },
        args: &["app"],
        code: 2,
        message: "resolves to /etc, outside the project",
    },
    Case {
        id: "path-symlink-loop",
        setup: |d| {
            symlink("loop", d.join("loop")).unwrap();
            edit(d, "from = \"app\"", "from = \"loop\"")
        },
        args: &["app"],
        code: 2,
        message: "cannot be resolved",
    },
    Case {
        id: "path-to-dotdot",
        setup: |d| edit(d, "to = \"/app\"", "to = \"/app/../etc\""),
        args: &["app"],
        code: 2,
        message: "contains `..`",
    },
    Case {
        id: "path-fifo",
        setup: |d| {
            assert!(std::process::Command::new("mkfifo")
                .arg(d.join("app/pipe"))
                .status()
                .unwrap()
                .success())
        },
        args: &["app"],
        code: 2,
        message: "is a FIFO",
    },
    Case {
        id: "path-written-twice",
        setup: |d| {
            edit(d, "files = [{ from = \"app\", to = \"/app\" }]", "files = [{ from = \"app\", to = \"/app\" }, { from = \"app/main.py\", to = \"/app/main.py\" }]")
        },
        args: &["app"],
        code: 2,
        message: "/app/main.py is written twice in one layer",
    },
    Case {
        id: "path-expected-missing",
        setup: |d| {
            edit(
                d,
                "name = \"app\"",
                "name = \"app\"\nexpect = [\"/app/server.js\"]",
            )
        },
        args: &["app"],
        code: 1,
        message: "expected path /app/server.js is missing from the image",
    },
    // Bases
    Case {
        id: "base-bad-manifest-json",
        setup: |d| {
            use_crafted(d, &[("bin/x", FILE, b"x")], |m, _, _| {
                m["layers"] = "not a list".into()
            })
        },
        args: &["app"],
        code: 1,
        message: "parsing manifest",
    },
    Case {
        id: "base-wrong-media-type",
        setup: |d| {
            use_crafted(d, &[("bin/x", FILE, b"x")], |m, _, _| {
                m["layers"][0]["mediaType"] = "application/x-rar".into()
            })
        },
        args: &["app"],
        code: 2,
        message: "media type `application/x-rar`",
    },
    Case {
        id: "base-digest-mismatch",
        setup: |d| use_crafted(d, &[("bin/x", FILE, b"x")], |_, _, l| l[12] ^= 1),
        args: &["app"],
        code: 1,
        message: "does not match its digest",
    },
    Case {
        id: "base-diff-id-mismatch",
        setup: |d| {
            use_crafted(d, &[("bin/x", FILE, b"x")], |_, c, _| {
                c["rootfs"]["diff_ids"][0] = format!("sha256:{}", "0".repeat(64)).into()
            })
        },
        args: &["app"],
        code: 1,
        message: "but the image config says its diff_id is",
    },
    Case {
        id: "base-dotdot-entry",
        setup: |d| use_crafted(d, &[("../../etc/evil", FILE, b"x")], no_tweak),
        args: &["app"],
        code: 1,
        message: "has a `..` component; refusing it",
    },
    Case {
        id: "base-absolute-entry",
        setup: |d| use_crafted(d, &[("/etc/evil", FILE, b"x")], no_tweak),
        args: &["app"],
        code: 1,
        message: "has an absolute path; refusing it",
    },
    Case {
        id: "base-device-node",
        setup: |d| use_crafted(d, &[("dev/sda", tar::EntryType::Block, b"")], no_tweak),
        args: &["app"],
        code: 1,
        message: "is a device node or FIFO; refusing it",
    },
    Case {
        id: "base-declared-size-wrong",
        setup: |d| {
            use_crafted(d, &[("bin/x", FILE, b"x")], |m, _, _| {
                m["layers"][0]["size"] = (1u64 << 40).into()
            })
        },
        args: &["app"],
        code: 1,
        message: "were declared",
    },
    Case {
        id: "base-config-layers-disagree",
        setup: |d| {
            use_crafted(d, &[("bin/x", FILE, b"x")], |_, c, _| {
                c["rootfs"]["diff_ids"] = serde_json::json!([])
            })
        },
        args: &["app"],
        code: 2,
        message: "lists 0 diff_ids but its manifest has 1 layers",
    },
    Case {
        id: "base-wrong-platform",
        setup: |d| {
            use_crafted(d, &[("bin/x", FILE, b"x")], |_, c, _| {
                c["architecture"] = "arm64".into()
            });
            edit(d, "workdir", "platform = \"linux/amd64\"\nworkdir")
        },
        args: &["app"],
        code: 2,
        message: "is for linux/arm64, but this image is built for linux/amd64",
    },
    Case {
        id: "base-import-missing-rootfs",
        setup: |_| {},
        args: &["base", "import", "no-such-rootfs", "--output", "oci:x:y"],
        code: 2,
        message: "cannot read",
    },
    Case {
        id: "verify-corrupt-layout",
        setup: |d| {
            let idx: serde_json::Value =
                serde_json::from_slice(&fs::read(d.join(".imgbuild/oci/index.json")).unwrap())
                    .unwrap();
            let m: serde_json::Value = serde_json::from_slice(
                &fs::read(
                    d.join(".imgbuild/oci/blobs/sha256")
                        .join(&idx["manifests"][0]["digest"].as_str().unwrap()[7..]),
                )
                .unwrap(),
            )
            .unwrap();
            let last = m["layers"].as_array().unwrap().last().unwrap()["digest"]
                .as_str()
                .unwrap()[7..]
                .to_string();
            let p = d.join(".imgbuild/oci/blobs/sha256").join(last);
            let mut b = fs::read(&p).unwrap();
            b[20] ^= 1;
            fs::write(p, b).unwrap()
        },
        args: &["verify", "oci:.imgbuild/oci:app"],
        code: 1,
        message: "is corrupt: its content hashes to",
    },
];

#[test]
fn every_bad_input_gives_its_error_and_writes_nothing() {
    let base = busybox_base();
    let mut failures = Vec::new();
    for case in CASES {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("proj");
        fs::create_dir_all(d.join("app")).unwrap();
        fs::write(d.join("app/main.py"), "print('hi')\n").unwrap();
        fs::write(t.path().join("outside"), "secret").unwrap();
        symlink(&base, d.join("base")).unwrap();
        fs::write(d.join("imgbuild.toml"), GOOD).unwrap();
        ok(imgbuild(&d).arg("app"));
        let index_before = fs::read(d.join(".imgbuild/oci/index.json")).unwrap();
        (case.setup)(&d);
        let out = imgbuild(&d).args(case.args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().unwrap_or(-1);
        if code != case.code || !err.contains(case.message) {
            failures.push(format!(
                "{}: exit {code} (want {}), stderr:\n{err}\n(want `{}`)",
                case.id, case.code, case.message
            ));
            continue;
        }
        if fs::read(d.join(".imgbuild/oci/index.json")).unwrap() != index_before {
            failures.push(format!("{}: the layout index changed", case.id));
        }
        let temps: Vec<_> = fs::read_dir(d.join(".store/tmp"))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if !temps.is_empty() {
            failures.push(format!("{}: temporary files left: {temps:?}", case.id));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_catalogue_document_lists_every_case_with_its_message() {
    let doc = fs::read_to_string(repo().join("tests/BAD_INPUT.md")).unwrap();
    for c in CASES {
        let row = doc
            .lines()
            .find(|l| l.contains(&format!("`{}`", c.id)))
            .unwrap_or_else(|| panic!("tests/BAD_INPUT.md has no row for `{}`", c.id));
        assert!(
            row.contains(&c.message.replace('|', "\\|")),
            "the row for `{}` should quote `{}`: {row}",
            c.id,
            c.message
        );
    }
}
