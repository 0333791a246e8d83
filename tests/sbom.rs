//! Supply chain: the SPDX SBOM and SLSA provenance every build attaches to its manifest as OCI
//! referrers — validated by the SPDX project's own validator (`pyspdxtools`) and
//! cyclonedx-python-lib's JSON validator, the same bytes from two empty stores, pushed to a
//! real docker-registry (tag schema) and to ferro-oci-server (the referrers API) and pulled
//! back, a frontend's npm packages from a real `npm install`, and a tampered image caught by
//! `verify`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(dir: &Path, store: &Path, args: &[&str]) -> Command {
    let mut c = imgbuild(dir);
    c.env("IMGBUILD_CACHE", store)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(args);
    c
}

/// A venv with spdx-tools and cyclonedx-python-lib from the package index (once per machine).
fn validators() -> PathBuf {
    static V: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let venv = std::env::temp_dir().join("imgbuild-test-sbom-validators");
        if !venv.join("bin/pyspdxtools").is_file() {
            let scratch = tempfile::Builder::new()
                .prefix("imgbuild-test-sbom-venv.")
                .tempdir()
                .unwrap()
                .keep();
            ok(Command::new("python3").arg("-m").arg("venv").arg(&scratch));
            ok(Command::new(scratch.join("bin/pip")).args([
                "install",
                "--quiet",
                "spdx-tools",
                "cyclonedx-python-lib[json-validation]",
            ]));
            // The venv's scripts name its own path: keep it where it was made, link to it.
            let _ = std::os::unix::fs::symlink(&scratch, &venv);
        }
        venv
    })
    .clone()
}

fn pyspdxtools_validates(file: &Path) {
    let v = validators();
    let out = Command::new(v.join("bin/pyspdxtools"))
        .arg("-i")
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "pyspdxtools rejects the SBOM:\n{text}"
    );
    assert!(
        !text.to_lowercase().contains("validation"),
        "pyspdxtools reports problems:\n{text}"
    );
}

fn cyclonedx_validates(file: &Path) {
    let v = validators();
    let script = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\nerr = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nif err is not None:\n    print(err)\n    sys.exit(1)\nprint('valid')\n";
    let out = Command::new(v.join("bin/python"))
        .arg("-c")
        .arg(script)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cyclonedx-python-lib rejects the CycloneDX document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The packages of an SPDX document with this purl prefix: purl → (name, version).
fn purls(doc: &serde_json::Value, prefix: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in doc["packages"].as_array().unwrap() {
        for r in p["externalRefs"].as_array().into_iter().flatten() {
            let u = r["referenceLocator"].as_str().unwrap();
            if u.starts_with(prefix) {
                out.push((
                    u.to_string(),
                    p["name"].as_str().unwrap().to_string(),
                    p["versionInfo"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out
}

/// The DEPENDS_ON relationships of an SPDX document, by package name, in document order.
fn depends_on(doc: &serde_json::Value) -> Vec<(String, String)> {
    let name = |id: &serde_json::Value| -> String {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["SPDXID"] == *id)
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["relationshipType"] == "DEPENDS_ON")
        .map(|r| (name(&r["spdxElementId"]), name(&r["relatedSpdxElement"])))
        .collect()
}

fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
        } else {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The `.dist-info` directories with a RECORD under `rootfs`: (name, version) from METADATA.
fn installed_dists(rootfs: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in files_under(rootfs) {
        let s = f.to_string_lossy().into_owned();
        if !s.ends_with(".dist-info/RECORD")
            || !(s.contains("/dist-packages/") || s.contains("/site-packages/"))
        {
            continue;
        }
        let meta = std::fs::read_to_string(f.parent().unwrap().join("METADATA")).unwrap();
        let field = |k: &str| {
            meta.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap()
                .trim()
                .to_string()
        };
        out.push((field("Name:"), field("Version:")));
    }
    out.sort();
    out
}

#[test]
fn the_api_sbom_is_valid_spdx_and_cyclonedx_and_lists_every_distribution_its_records_install() {
    require_tool("umoci");
    let base = debian_python_base();
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("job-agent");
    copy_fixture("job-agent", &p);
    make_uv_lock(&p);
    let toml = std::fs::read_to_string(p.join("imgbuild.toml")).unwrap();
    std::fs::write(
        p.join("imgbuild.toml"),
        toml.replace(
            "base = \"oci:../.bases/debian-python3:bookworm\"",
            &format!("base = \"oci:{}:bookworm\"", base.display()),
        ),
    )
    .unwrap();
    let store = shared_store();
    let out = ok(&mut run(&p, &store, &["build", "api", "--json"]));
    let summary = json(&out.stdout);
    let digest = summary["digest"].as_str().unwrap().to_string();

    // SPDX, by the SPDX project's validator.
    let spdx = ok(&mut run(&p, &store, &["sbom", "api"])).stdout;
    let spdx_file = t.path().join("api.spdx.json");
    std::fs::write(&spdx_file, &spdx).unwrap();
    pyspdxtools_validates(&spdx_file);
    // The same document from the layout the build wrote.
    let from_layout = ok(&mut run(&p, &store, &["sbom", "oci:.imgbuild/oci:api"])).stdout;
    assert_eq!(from_layout, spdx, "the layout's SBOM is the build's");
    let doc = json(&spdx);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    assert!(doc["documentNamespace"]
        .as_str()
        .unwrap()
        .ends_with(digest.trim_start_matches("sha256:")));

    // CycloneDX, by cyclonedx-python-lib's strict JSON validator.
    let cdx = ok(&mut run(
        &p,
        &store,
        &["sbom", "api", "--format", "cyclonedx"],
    ))
    .stdout;
    let cdx_file = t.path().join("api.cdx.json");
    std::fs::write(&cdx_file, &cdx).unwrap();
    cyclonedx_validates(&cdx_file);
    assert_eq!(json(&cdx)["specVersion"], "1.6");

    // Every distribution the image's RECORDs list, with its version and purl; nothing else.
    let bundle = t.path().join("bundle");
    umoci_unpack(&p.join(".imgbuild/oci"), "api", &bundle);
    let dists = installed_dists(&bundle.join("rootfs"));
    assert!(dists.len() > 30, "{dists:?}");
    let listed = purls(&doc, "pkg:pypi/");
    for (name, version) in &dists {
        let purl = format!("pkg:pypi/{}@{version}", normalize(name));
        assert!(
            listed
                .iter()
                .any(|(u, n, v)| *u == purl && n == name && v == version),
            "{name} {version} ({purl}) is not in the SBOM"
        );
    }
    assert_eq!(listed.len(), dists.len(), "{listed:?}");
    let alembic = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "alembic")
        .unwrap();
    assert_eq!(alembic["checksums"][0]["algorithm"], "SHA256");
    assert!(alembic["sourceInfo"]
        .as_str()
        .unwrap()
        .contains("from a package index"));
    // The base's Debian packages, from its dpkg status.
    let debs = purls(&doc, "pkg:deb/debian/");
    assert!(
        debs.iter()
            .any(|(u, n, _)| n == "python3" && u.contains("distro=debian-12")),
        "{debs:?}"
    );
    let status = std::fs::read_to_string(bundle.join("rootfs/var/lib/dpkg/status")).unwrap();
    let installed = status.matches("Status: install ok installed").count();
    assert_eq!(debs.len(), installed);
    // No index host, no credentials.
    let index = package_index();
    let host = index.split('/').nth(2).unwrap();
    assert!(
        !String::from_utf8_lossy(&spdx).contains(host),
        "the SBOM names the index host"
    );

    // The provenance: subject = the manifest, the base and the lock among its dependencies.
    let prov = json(
        &ok(&mut run(
            &p,
            &store,
            &["sbom", "api", "--format", "provenance"],
        ))
        .stdout,
    );
    assert_eq!(prov["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        prov["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let lock_sha = sha256_hex(std::fs::read(p.join("uv.lock")).unwrap());
    assert!(deps
        .iter()
        .any(|d| d["uri"] == "file:uv.lock" && d["digest"]["sha256"] == lock_sha.as_str()));
    assert!(deps.iter().any(|d| d["name"] == "base"));
    assert!(!String::from_utf8_lossy(&serde_json::to_vec(&prov).unwrap()).contains(host));

    // verify checks the SBOM against the RECORDs and the dpkg status.
    let v = ok(&mut run(&p, &store, &["verify", "oci:.imgbuild/oci:api"]));
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("SBOM's"),
        "{}",
        String::from_utf8_lossy(&v.stderr)
    );
}

/// A small Python project on a fake Debian base with a dpkg status: image `t` with the wheels
/// alpha 1.0 and beta 2.0 (uncompressed layers, so a test can rewrite them) and an app layer.
fn small_project(dir: &Path, store: &Path, repository: Option<&str>) {
    let r = dir.join("rootfs");
    write_text(
        &r.join("var/lib/dpkg/status"),
        "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: amd64\nDepends: libgcc-s1 | base-files\nSource: glibc\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library\n shared libraries\n\nPackage: removed\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n",
    );
    write_text(
        &r.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
    );
    fake_bookworm_python(dir, store);
    let a = py_wheel(
        &dir.join("wheels"),
        "alpha-1.0-py3-none-any.whl",
        &[("alpha/__init__.py", b"A = 1\n")],
        "License-Expression: MIT\n",
    );
    let b = py_wheel(
        &dir.join("wheels"),
        "beta-2.0-py3-none-any.whl",
        &[("beta/__init__.py", b"B = 2\n")],
        "Classifier: License :: OSI Approved :: Apache Software License\n",
    );
    std::fs::write(
        dir.join("pylock.toml"),
        format!("lock-version = \"1.0\"\ncreated-by = \"test\"\n\n[[packages]]\nname = \"alpha\"\nversion = \"1.0\"\ndependencies = [{{ name = \"beta\" }}]\nwheels = [{{ path = \"wheels/alpha-1.0-py3-none-any.whl\", hashes = {{ sha256 = \"{a}\" }} }}]\n\n[[packages]]\nname = \"beta\"\nversion = \"2.0\"\nwheels = [{{ path = \"wheels/beta-2.0-py3-none-any.whl\", hashes = {{ sha256 = \"{b}\" }} }}]\n"),
    )
    .unwrap();
    write_text(&dir.join("app/main.py"), "print('hi')\n");
    let repo = repository
        .map(|r| format!("repository = \"{r}\"\n"))
        .unwrap_or_default();
    write_text(
        &dir.join("imgbuild.toml"),
        &format!(
            "[defaults]\ncompression = \"none\"\nplatform = \"linux/amd64\"\n\n[images.t]\n{repo}base = \"oci:base:py\"\nstart_check = false\n\n[[images.t.layers]]\nname = \"python-deps\"\npython = {{ lock = \"pylock.toml\", require = [\"alpha\", \"beta\"] }}\n\n[[images.t.layers]]\nname = \"app\"\nfiles = [{{ from = \"app\", to = \"/app\" }}]\n"
        ),
    );
}

#[test]
fn two_empty_stores_on_different_paths_give_the_same_sbom_and_provenance_bytes() {
    let mut got = Vec::new();
    for n in ["one", "second-store-path"] {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(n).join("proj");
        let store = t.path().join(n).join("store");
        std::fs::create_dir_all(&p).unwrap();
        small_project(&p, &store, None);
        let digest = json(&ok(&mut run(&p, &store, &["build", "t", "--json"])).stdout)["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let sbom = ok(&mut run(&p, &store, &["sbom", "t"])).stdout;
        let prov = ok(&mut run(
            &p,
            &store,
            &["sbom", "t", "--format", "provenance"],
        ))
        .stdout;
        let index = std::fs::read(p.join(".imgbuild/oci/index.json")).unwrap();
        // The layout lists the referrers as a registry without the referrers API would: an
        // index tagged sha256-<manifest hex>.
        let tag = format!("sha256-{}", digest.trim_start_matches("sha256:"));
        let idx = json(&index);
        let entry = idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag.as_str())
            .unwrap_or_else(|| panic!("no {tag} in {idx}"))
            .clone();
        assert_eq!(
            entry["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        let listed = json(
            &std::fs::read(
                p.join(".imgbuild/oci/blobs/sha256").join(
                    entry["digest"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("sha256:"),
                ),
            )
            .unwrap(),
        );
        let types: Vec<String> = listed["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["artifactType"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            types,
            ["application/spdx+json", "application/vnd.in-toto+json"]
        );
        got.push((digest, sbom, prov, index));
    }
    assert_eq!(got[0].0, got[1].0, "image digests");
    assert_eq!(
        String::from_utf8_lossy(&got[0].1),
        String::from_utf8_lossy(&got[1].1),
        "SBOM bytes"
    );
    assert_eq!(
        String::from_utf8_lossy(&got[0].2),
        String::from_utf8_lossy(&got[1].2),
        "provenance bytes"
    );
    assert_eq!(
        String::from_utf8_lossy(&got[0].3),
        String::from_utf8_lossy(&got[1].3),
        "index.json (referrer digests) bytes"
    );
    let doc = json(&got[0].1);
    let py = purls(&doc, "pkg:pypi/");
    assert_eq!(
        py.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        ["pkg:pypi/alpha@1.0", "pkg:pypi/beta@2.0"]
    );
    let lic: Vec<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "alpha" || p["name"] == "beta")
        .map(|p| p["licenseDeclared"].as_str().unwrap())
        .collect();
    assert_eq!(lic, ["MIT", "Apache-2.0"]);
    // DEPENDS_ON as the lock (alpha → beta) and the dpkg status (libc6 → base-files) say.
    assert_eq!(
        depends_on(&doc),
        [
            ("alpha".to_string(), "beta".to_string()),
            ("libc6".into(), "base-files".into())
        ]
    );
    let debs = purls(&doc, "pkg:deb/");
    assert_eq!(
        debs.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        [
            "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-12",
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
        ]
    );
}

#[test]
fn sbom_and_provenance_can_be_turned_off() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    small_project(t.path(), &store, None);
    let toml = std::fs::read_to_string(t.path().join("imgbuild.toml")).unwrap();
    std::fs::write(
        t.path().join("imgbuild.toml"),
        toml.replace(
            "platform = \"linux/amd64\"\n",
            "platform = \"linux/amd64\"\nsbom = false\n",
        )
        .replace(
            "start_check = false\n",
            "start_check = false\nprovenance = false\n",
        ),
    )
    .unwrap();
    ok(&mut run(t.path(), &store, &["build", "t"]));
    let index = json(&std::fs::read(t.path().join(".imgbuild/oci/index.json")).unwrap());
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    let (code, err) = fails(&mut run(t.path(), &store, &["sbom", "t"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has no SBOM"), "{err}");
    ok(&mut run(t.path(), &store, &["verify", "t"]));
}

/// `small_project` in `dir` built and pushed to `repo` with no credentials in reach: the
/// empty home it ran with and the build's `--json` summary.
fn build_and_push(dir: &Path, store: &Path, repo: &str) -> (PathBuf, serde_json::Value) {
    small_project(dir, store, Some(repo));
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let first = json(
        &ok(without_credentials(
            &mut run(dir, store, &["build", "t", "--push", "--json"]),
            &home,
        ))
        .stdout,
    );
    (home, first)
}

/// After a push of image `t` to `repo` (as `digest`): `imgbuild sbom` of the pushed image is
/// the local one, `verify repo@digest` checks its SBOM, and pushing again uploads nothing
/// (image or referrers).
fn read_back_and_push_again(dir: &Path, store: &Path, home: &Path, repo: &str, digest: &str) {
    let remote_sbom = ok(without_credentials(
        &mut run(dir, store, &["sbom", &format!("{repo}:latest")]),
        home,
    ))
    .stdout;
    assert_eq!(remote_sbom, ok(&mut run(dir, store, &["sbom", "t"])).stdout);
    let v = ok(without_credentials(
        &mut run(dir, store, &["verify", &format!("{repo}@{digest}")]),
        home,
    ));
    assert!(String::from_utf8_lossy(&v.stderr).contains("SBOM's"));
    let again = json(
        &ok(without_credentials(
            &mut run(dir, store, &["push", "t", "--json"]),
            home,
        ))
        .stdout,
    );
    assert_eq!(again["uploaded_bytes"], 0, "{again}");
    assert_eq!(again["referrer_bytes"], 0, "{again}");
}

#[test]
fn pushed_referrers_are_listed_by_the_tag_schema_and_pull_back_byte_identical() {
    require_tool("skopeo");
    require_tool("curl");
    let reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let repo = format!("{}/acme/t", reg.host());
    let (home, first) = build_and_push(t.path(), &store, &repo);
    let digest = first["digest"].as_str().unwrap().to_string();
    let layout = t.path().join(".imgbuild/oci");
    let local_manifest = std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    // The image itself is what it was.
    assert_eq!(skopeo_raw(&format!("{repo}:latest"), None), local_manifest);

    // docker-registry 2.8 has no referrers API: the tag schema index lists both.
    let tag = format!("sha256-{}", digest.trim_start_matches("sha256:"));
    let fallback = json(&skopeo_raw(&format!("{repo}:{tag}"), None));
    assert_eq!(
        fallback["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let listed = fallback["manifests"].as_array().unwrap();
    let mut types: Vec<&str> = listed
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        ["application/spdx+json", "application/vnd.in-toto+json"]
    );
    for m in listed {
        let d = m["digest"].as_str().unwrap();
        let local = std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap();
        let remote = skopeo_raw(&format!("{repo}@{d}"), None);
        assert_eq!(remote, local, "referrer manifest {d}");
        let rm = json(&remote);
        assert_eq!(rm["subject"]["digest"], digest.as_str());
        let payload = rm["layers"][0]["digest"].as_str().unwrap();
        let out = ok(Command::new("curl").args([
            "-sf",
            &format!("http://{}/v2/acme/t/blobs/{payload}", reg.host()),
        ]));
        let local_payload = std::fs::read(
            layout
                .join("blobs/sha256")
                .join(payload.trim_start_matches("sha256:")),
        )
        .unwrap();
        assert_eq!(out.stdout, local_payload, "payload {payload}");
    }
    // `imgbuild sbom` and `verify` read them from the registry; pushing again uploads nothing
    // and leaves the index as it was.
    read_back_and_push_again(t.path(), &store, &home, &repo, &digest);
    assert!(first["referrer_bytes"].as_u64().unwrap() > 1000, "{first}");
    assert_eq!(json(&skopeo_raw(&format!("{repo}:{tag}"), None)), fallback);
}

/// Rewrites the python layer of `layout:t` without the distribution `beta` (files and
/// dist-info), fixing up the config, the manifest, the tag and the SBOM's subject, as someone
/// who tampers with an image and re-attaches its old SBOM would.
const TAMPER: &str = r#"
import hashlib, io, json, os, sys, tarfile
lay = sys.argv[1]
REF = "org.opencontainers.image.ref.name"
def blob(d): return os.path.join(lay, "blobs", "sha256", d.split(":")[1])
def put(b):
    d = "sha256:" + hashlib.sha256(b).hexdigest()
    open(blob(d), "wb").write(b)
    return d
def dumps(v): return json.dumps(v, separators=(",", ":")).encode()
index = json.load(open(os.path.join(lay, "index.json")))
img = [m for m in index["manifests"] if m["annotations"][REF] == "t"][0]
refs = [m for m in index["manifests"] if m["annotations"][REF].startswith("sha256-")][0]
man = json.load(open(blob(img["digest"]), "rb"))
cfg = json.load(open(blob(man["config"]["digest"]), "rb"))
i = len(man["layers"]) - 2  # python-deps: the layer before app
src = tarfile.open(fileobj=io.BytesIO(open(blob(man["layers"][i]["digest"]), "rb").read()))
out = io.BytesIO()
dst = tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT)
for m in src.getmembers():
    if "/beta" in m.name:
        continue
    dst.addfile(m, src.extractfile(m) if m.isfile() else None)
dst.close()
layer = out.getvalue()
d = put(layer)
man["layers"][i]["digest"] = d
man["layers"][i]["size"] = len(layer)
cfg["rootfs"]["diff_ids"][i] = d
cb = dumps(cfg)
man["config"]["digest"] = put(cb)
man["config"]["size"] = len(cb)
mb = dumps(man)
img["digest"] = put(mb)
img["size"] = len(mb)
# The old SBOM and provenance, re-attached to the new manifest.
listed = json.load(open(blob(refs["digest"]), "rb"))
for m in listed["manifests"]:
    r = json.load(open(blob(m["digest"]), "rb"))
    r["subject"]["digest"] = img["digest"]
    r["subject"]["size"] = len(mb)
    rb = dumps(r)
    m["digest"] = put(rb)
    m["size"] = len(rb)
lb = dumps(listed)
refs["digest"] = put(lb)
refs["size"] = len(lb)
refs["annotations"][REF] = "sha256-" + img["digest"].split(":")[1]
json.dump(index, open(os.path.join(lay, "index.json"), "w"))
"#;

#[test]
fn a_tampered_layer_fails_verify_on_the_sbom_check_too() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    small_project(t.path(), &store, None);
    ok(&mut run(t.path(), &store, &["build", "t"]));
    ok(&mut run(
        t.path(),
        &store,
        &["verify", "oci:.imgbuild/oci:t"],
    ));
    let layout = t.path().join(".imgbuild/oci");
    ok(Command::new("python3").arg("-c").arg(TAMPER).arg(&layout));
    let (code, err) = fails(&mut run(
        t.path(),
        &store,
        &["verify", "oci:.imgbuild/oci:t"],
    ));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("SBOM: the SBOM lists pkg:pypi/beta@2.0, which no RECORD in the image shows"),
        "{err}"
    );
    assert!(
        err.contains("SBOM: the SBOM's layer `python-deps` is sha256:"),
        "{err}"
    );
}

/// A real npm project: `npm install` (from the package registry npm is configured with) of a
/// small package set writes `frontend/package-lock.json` (lockfileVersion 3) and
/// `frontend/node_modules/.package-lock.json`; a Next.js standalone output stands beside it.
fn npm_frontend(dir: &Path) -> PathBuf {
    require_tool("npm");
    let fe = dir.join("frontend");
    write_text(
        &fe.join("package.json"),
        r#"{
  "name": "web",
  "version": "1.0.0",
  "private": true,
  "dependencies": { "debug": "4.3.4", "@isaacs/string-locale-compare": "1.1.0" },
  "devDependencies": { "is-number": "7.0.0" }
}
"#,
    );
    ok(Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
        ])
        .current_dir(&fe));
    write_text(
        &fe.join(".next/standalone/server.js"),
        "require('http').createServer().listen(3000)\n",
    );
    write_text(
        &fe.join(".next/standalone/package.json"),
        "{\"name\":\"web\"}\n",
    );
    write_text(&fe.join(".next/static/chunks/main.js"), "console.log(1)\n");
    fe
}

/// The npm entries of a lock (lockfileVersion 3): (name, version, integrity, dev).
fn lock_entries(lock: &Path) -> Vec<(String, String, String, bool)> {
    let v = json(&std::fs::read(lock).unwrap());
    assert_eq!(v["lockfileVersion"], 3, "npm wrote lockfile version 3");
    let mut out = Vec::new();
    for (k, e) in v["packages"].as_object().unwrap() {
        let Some(i) = k.rfind("node_modules/") else {
            continue;
        };
        out.push((
            k[i + "node_modules/".len()..].to_string(),
            e["version"].as_str().unwrap().to_string(),
            e["integrity"].as_str().unwrap_or("").to_string(),
            e["dev"].as_bool() == Some(true),
        ));
    }
    out
}

/// The hex digest of an SRI `integrity` value (`sha512-BASE64`), decoded here by Python.
fn sri_hex(sri: &str) -> String {
    let b64 = sri.split_once('-').unwrap().1;
    let out = ok(Command::new("python3")
        .arg("-c")
        .arg("import base64,sys; print(base64.b64decode(sys.argv[1]).hex())")
        .arg(b64));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_frontend_layer_lists_the_npm_packages_its_package_lock_states() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let fe = npm_frontend(t.path());
    write_text(
        &t.path().join("imgbuild.toml"),
        &format!(
            "[defaults]\nplatform = \"linux/amd64\"\n\n[images.web]\nbase = \"{}\"\nworkdir = \"/app\"\nstart_check = false\n\n[[images.web.layers]]\nname = \"frontend\"\npreset = \"nextjs-standalone\"\nroot = \"frontend\"\n\n[[images.web.layers]]\nname = \"modules\"\nfiles = [{{ from = \"frontend/node_modules\", to = \"/srv/node_modules\" }}]\n",
            busybox_ref()
        ),
    );
    ok(&mut run(t.path(), &store, &["build", "web"]));
    let spdx = ok(&mut run(t.path(), &store, &["sbom", "web"])).stdout;
    let spdx_file = t.path().join("web.spdx.json");
    std::fs::write(&spdx_file, &spdx).unwrap();
    pyspdxtools_validates(&spdx_file);
    let cdx = ok(&mut run(
        t.path(),
        &store,
        &["sbom", "web", "--format", "cyclonedx"],
    ))
    .stdout;
    let cdx_file = t.path().join("web.cdx.json");
    std::fs::write(&cdx_file, &cdx).unwrap();
    cyclonedx_validates(&cdx_file);

    let doc = json(&spdx);
    let pkgs = doc["packages"].as_array().unwrap();
    let rels = doc["relationships"].as_array().unwrap();
    let id_of = |name: &str| -> String {
        pkgs.iter()
            .find(|p| p["name"] == name && p["primaryPackagePurpose"] == "ARCHIVE")
            .unwrap_or_else(|| panic!("no layer {name}"))["SPDXID"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (frontend, modules) = (id_of("frontend"), id_of("modules"));
    // npm package element → the layer that CONTAINS it.
    let holder = |id: &str| -> String {
        rels.iter()
            .find(|r| r["relationshipType"] == "CONTAINS" && r["relatedSpdxElement"] == id)
            .unwrap()["spdxElementId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let in_layer = |layer: &str| -> Vec<(String, String, serde_json::Value, String)> {
        let mut v: Vec<_> = pkgs
            .iter()
            .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-Npm-"))
            .filter(|p| holder(p["SPDXID"].as_str().unwrap()) == layer)
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["versionInfo"].as_str().unwrap().to_string(),
                    p.clone(),
                    p["SPDXID"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    };

    // The frontend layer was built from frontend/package-lock.json: its production set.
    let lock = lock_entries(&fe.join("package-lock.json"));
    let mut want: Vec<(String, String)> = lock
        .iter()
        .filter(|e| !e.3)
        .map(|e| (e.0.clone(), e.1.clone()))
        .collect();
    want.sort();
    let got = in_layer(&frontend);
    assert_eq!(
        got.iter()
            .map(|g| (g.0.clone(), g.1.clone()))
            .collect::<Vec<_>>(),
        want
    );
    assert!(want.iter().any(|(n, v)| n == "debug" && v == "4.3.4"));
    assert!(want.iter().any(|(n, _)| n == "ms"), "debug's dependency");
    assert!(!want.iter().any(|(n, _)| n == "is-number"), "a dev package");
    for (name, version, p, _) in &got {
        let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
        let enc = name.replace('@', "%40");
        assert_eq!(purl, format!("pkg:npm/{enc}@{version}"));
        let sri = &lock.iter().find(|e| e.0 == *name).unwrap().2;
        assert!(sri.starts_with("sha512-"), "{name}: {sri}");
        assert_eq!(p["checksums"][0]["algorithm"], "SHA512", "{p}");
        assert_eq!(p["checksums"][0]["checksumValue"], sri_hex(sri).as_str());
    }
    let scoped = got
        .iter()
        .find(|g| g.0 == "@isaacs/string-locale-compare")
        .unwrap();
    assert_eq!(
        scoped.2["externalRefs"][0]["referenceLocator"],
        "pkg:npm/%40isaacs/string-locale-compare@1.1.0"
    );
    assert_eq!(scoped.2["licenseDeclared"], "ISC");
    // DEPENDS_ON as the lock states it: debug → ms, in the same layer.
    let debug = &got.iter().find(|g| g.0 == "debug").unwrap().3;
    let ms = &got.iter().find(|g| g.0 == "ms").unwrap().3;
    assert!(
        rels.iter().any(|r| r["spdxElementId"] == debug.as_str()
            && r["relationshipType"] == "DEPENDS_ON"
            && r["relatedSpdxElement"] == ms.as_str()),
        "debug DEPENDS_ON ms"
    );
    // CycloneDX keeps the edge and the SHA-512.
    let c = json(&cdx);
    assert!(c["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["ref"] == debug.as_str()
            && d["dependsOn"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == ms.as_str())));
    let cdebug = c["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["bom-ref"] == debug.as_str())
        .unwrap();
    assert_eq!(cdebug["purl"], "pkg:npm/debug@4.3.4");
    assert_eq!(cdebug["hashes"][0]["alg"], "SHA-512");

    // The modules layer ships node_modules: every package npm installed there, dev ones too.
    let hidden = lock_entries(&fe.join("node_modules/.package-lock.json"));
    let mut all: Vec<(String, String)> =
        hidden.iter().map(|e| (e.0.clone(), e.1.clone())).collect();
    all.sort();
    assert_eq!(
        in_layer(&modules)
            .iter()
            .map(|g| (g.0.clone(), g.1.clone()))
            .collect::<Vec<_>>(),
        all
    );
    assert!(all.iter().any(|(n, _)| n == "is-number"));

    // No registry host (the lock's `resolved` URLs name it unless npm is set to omit them).
    let registry =
        String::from_utf8(ok(Command::new("npm").args(["config", "get", "registry"])).stdout)
            .unwrap();
    let host = registry.trim().split('/').nth(2).unwrap().to_string();
    let host = host.as_str();
    assert!(
        !String::from_utf8_lossy(&spdx).contains(host),
        "the SBOM names {host}"
    );

    // The provenance: the lock by sha256, each package by its integrity.
    let prov = json(
        &ok(&mut run(
            t.path(),
            &store,
            &["sbom", "web", "--format", "provenance"],
        ))
        .stdout,
    );
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let lock_sha = sha256_hex(std::fs::read(fe.join("package-lock.json")).unwrap());
    assert!(deps
        .iter()
        .any(|d| d["uri"] == "file:frontend/package-lock.json"
            && d["digest"]["sha256"] == lock_sha.as_str()));
    let debug_sri = &lock.iter().find(|e| e.0 == "debug").unwrap().2;
    assert!(deps.iter().any(|d| d["uri"] == "pkg:npm/debug@4.3.4"
        && d["digest"]["sha512"] == sri_hex(debug_sri).as_str()));
    assert!(!String::from_utf8_lossy(&serde_json::to_vec(&prov).unwrap()).contains(host));

    // verify's SBOM check still agrees with the image (npm packages are not RECORDs or dpkg).
    let v = ok(&mut run(
        t.path(),
        &store,
        &["verify", "oci:.imgbuild/oci:web"],
    ));
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("SBOM's"),
        "{}",
        String::from_utf8_lossy(&v.stderr)
    );

    // A lock the SBOM cannot read fails the build, naming it and what to do; the layout keeps
    // the image it had.
    let index = std::fs::read(t.path().join(".imgbuild/oci/index.json")).unwrap();
    std::fs::write(
        fe.join("package-lock.json"),
        "{\"name\": \"web\", \"lockfileVersion\": 1, \"dependencies\": {}}\n",
    )
    .unwrap();
    let (code, err) = fails(&mut run(t.path(), &store, &["build", "web"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("frontend/package-lock.json is lockfileVersion 1")
            && err.contains("npm install --package-lock-only"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(t.path().join(".imgbuild/oci/index.json")).unwrap(),
        index,
        "nothing written"
    );
}

#[test]
fn depends_on_follows_the_lock_across_layers() {
    // beta in one layer, alpha (which the lock says depends on beta) in the next.
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    small_project(t.path(), &store, None);
    let toml = std::fs::read_to_string(t.path().join("imgbuild.toml")).unwrap();
    let one = "[[images.t.layers]]\nname = \"python-deps\"\npython = { lock = \"pylock.toml\", require = [\"alpha\", \"beta\"] }\n";
    assert!(toml.contains(one));
    std::fs::write(
        t.path().join("imgbuild.toml"),
        toml.replace(one, "[[images.t.layers]]\nname = \"beta\"\npython = { lock = \"pylock.toml\", exclude = [\"alpha\"] }\n\n[[images.t.layers]]\nname = \"alpha\"\npython = { lock = \"pylock.toml\", exclude = [\"beta\"], require = [\"alpha\", \"beta\"] }\n"),
    )
    .unwrap();
    ok(&mut run(t.path(), &store, &["build", "t"]));
    let doc = json(&ok(&mut run(t.path(), &store, &["sbom", "t"])).stdout);
    let contains = |layer: &str, what: &str| {
        let id = |n: &str, purpose: Option<&str>| -> String {
            doc["packages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == n && purpose.is_none_or(|u| p["primaryPackagePurpose"] == u))
                .unwrap()["SPDXID"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let (l, w) = (id(layer, Some("ARCHIVE")), id(what, Some("LIBRARY")));
        doc["relationships"].as_array().unwrap().iter().any(|r| {
            r["spdxElementId"] == l.as_str()
                && r["relationshipType"] == "CONTAINS"
                && r["relatedSpdxElement"] == w.as_str()
        })
    };
    assert!(contains("beta", "beta") && contains("alpha", "alpha"));
    assert!(!contains("alpha", "beta"));
    assert!(depends_on(&doc).contains(&("alpha".to_string(), "beta".to_string())));
}

#[test]
fn a_debian_layers_packages_are_its_own_with_the_debs_sha256() {
    // netbase (no dependencies) from the Debian archive onto the small project's base.
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    small_project(t.path(), &store, None);
    let toml = std::fs::read_to_string(t.path().join("imgbuild.toml")).unwrap();
    std::fs::write(
        t.path().join("imgbuild.toml"),
        format!("{toml}\n[[images.t.layers]]\nname = \"system\"\ndebian = {{ packages = [\"netbase\"] }}\n"),
    )
    .unwrap();
    ok(&mut run(t.path(), &store, &["build", "t"]));
    let lock: toml::Table = std::fs::read_to_string(t.path().join("imgbuild.lock"))
        .unwrap()
        .parse()
        .unwrap();
    let pin = lock["debian"]["t/system"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("netbase"))
        .unwrap()
        .clone();
    let (version, sha) = (
        pin["version"].as_str().unwrap().to_string(),
        pin["sha256"].as_str().unwrap().to_string(),
    );
    let doc = json(&ok(&mut run(t.path(), &store, &["sbom", "t"])).stdout);
    let pkgs = doc["packages"].as_array().unwrap();
    let netbase = pkgs
        .iter()
        .find(|p| p["name"] == "netbase")
        .expect("netbase in the SBOM");
    assert_eq!(netbase["versionInfo"], version.as_str());
    assert_eq!(netbase["checksums"][0]["algorithm"], "SHA256");
    assert_eq!(netbase["checksums"][0]["checksumValue"], sha.as_str());
    assert!(netbase["sourceInfo"]
        .as_str()
        .unwrap()
        .contains("from the Debian archive"));
    let system = pkgs
        .iter()
        .find(|p| p["name"] == "system" && p["primaryPackagePurpose"] == "ARCHIVE")
        .unwrap();
    assert!(
        doc["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["spdxElementId"] == system["SPDXID"]
                && r["relationshipType"] == "CONTAINS"
                && r["relatedSpdxElement"] == netbase["SPDXID"]),
        "the layer that added netbase CONTAINS it"
    );
    // The base's own packages stay the base's, without a hash the image cannot know.
    let libc = pkgs.iter().find(|p| p["name"] == "libc6").unwrap();
    assert!(libc["checksums"].as_array().is_none_or(|c| c.is_empty()));
    let prov = json(
        &ok(&mut run(
            t.path(),
            &store,
            &["sbom", "t", "--format", "provenance"],
        ))
        .stdout,
    );
    assert!(prov["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["uri"]
            .as_str()
            .unwrap()
            .starts_with("pkg:deb/debian/netbase@")
            && d["digest"]["sha256"] == sha.as_str()));
    ok(&mut run(
        t.path(),
        &store,
        &["verify", "oci:.imgbuild/oci:t"],
    ));
}

#[test]
fn the_provenance_has_wall_clock_time_only_when_asked() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    small_project(t.path(), &store, None);
    let build = |asked: bool| {
        let mut c = run(t.path(), &store, &["build", "t", "--json"]);
        if asked {
            c.env("IMGBUILD_PROVENANCE_TIMESTAMPS", "1");
        } else {
            c.env_remove("IMGBUILD_PROVENANCE_TIMESTAMPS");
        }
        let digest = json(&ok(&mut c).stdout)["digest"].clone();
        let prov = json(
            &ok(&mut run(
                t.path(),
                &store,
                &["sbom", "t", "--format", "provenance"],
            ))
            .stdout,
        );
        (digest, prov["predicate"]["runDetails"]["metadata"].clone())
    };
    let (d1, plain) = build(false);
    assert_eq!(
        plain,
        serde_json::json!({}),
        "no wall-clock field by default"
    );
    let (d2, timed) = build(true);
    assert_eq!(d1, d2, "the image is the same");
    let finished = timed["finishedOn"].as_str().unwrap();
    assert_eq!(finished.len(), "2026-01-01T00:00:00Z".len(), "{finished}");
    assert!(
        finished.ends_with('Z') && finished.as_bytes()[10] == b'T',
        "{finished}"
    );
    // Now, not the source date (2023-11-14).
    assert!(finished > "2024", "{finished}");
}

/// A registry with the OCI 1.1 referrers API: ferro-oci-server (crates.io), on 127.0.0.1 with
/// its blobs in a temp dir; stopped by PID on drop. The binary: `IMGBUILD_REFERRERS_REGISTRY`,
/// else `ferro-oci-server` on PATH.
struct ApiRegistry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for ApiRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ApiRegistry {
    fn start() -> ApiRegistry {
        require_tool("curl");
        let bin = std::env::var("IMGBUILD_REFERRERS_REGISTRY")
            .unwrap_or_else(|_| "ferro-oci-server".into());
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v '{bin}'"))
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "this test needs a registry with the referrers API: `{bin}` is not there; install it with `cargo install ferro-oci-server --version 1.0.0 --locked` (.ci/install-deps does) or set IMGBUILD_REFERRERS_REGISTRY to its path"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(&bin)
            .env("FERRO_OCI_LISTEN", format!("127.0.0.1:{port}"))
            .env("FERRO_OCI_STORAGE_DIR", dir.path())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("starting the referrers registry");
        let r = ApiRegistry {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://{}/v2/", r.host()))
                .output();
            if out.is_ok_and(|o| o.stdout == b"200") {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("{bin} on port {port} did not come up");
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// GET of a registry path: (HTTP status, body).
    fn get(&self, path: &str, accept: &str) -> (String, Vec<u8>) {
        let t = tempfile::NamedTempFile::new().unwrap();
        let out = ok(Command::new("curl")
            .args(["-s", "-o"])
            .arg(t.path())
            .args(["-w", "%{http_code}", "-H", &format!("Accept: {accept}")])
            .arg(format!("http://{}{path}", self.host())));
        (
            String::from_utf8(out.stdout).unwrap(),
            std::fs::read(t.path()).unwrap(),
        )
    }
}

#[test]
fn pushed_referrers_go_through_the_referrers_api_where_the_registry_has_it() {
    let reg = ApiRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let repo = format!("{}/acme/t", reg.host());
    let (home, first) = build_and_push(t.path(), &store, &repo);
    let digest = first["digest"].as_str().unwrap().to_string();
    let layout = t.path().join(".imgbuild/oci");
    let blob = |d: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index = "application/vnd.oci.image.index.v1+json";
    let manifest = "application/vnd.oci.image.manifest.v1+json";
    // The image is what it was.
    let (code, body) = reg.get("/v2/acme/t/manifests/latest", manifest);
    assert_eq!(code, "200");
    assert_eq!(body, blob(&digest));

    // The referrers API lists both; no fallback tag was written.
    let (code, body) = reg.get(&format!("/v2/acme/t/referrers/{digest}"), index);
    assert_eq!(code, "200", "{}", String::from_utf8_lossy(&body));
    let listed = json(&body);
    let mut types: Vec<&str> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        ["application/spdx+json", "application/vnd.in-toto+json"]
    );
    let tag = format!("sha256-{}", digest.trim_start_matches("sha256:"));
    let (code, _) = reg.get(&format!("/v2/acme/t/manifests/{tag}"), index);
    assert_eq!(
        code, "404",
        "the tag schema index is not written where the API is"
    );
    // Each referrer and its payload pull back byte-identical.
    for m in listed["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap();
        let (code, remote) = reg.get(&format!("/v2/acme/t/manifests/{d}"), manifest);
        assert_eq!(code, "200");
        assert_eq!(remote, blob(d), "referrer manifest {d}");
        let rm = json(&remote);
        assert_eq!(rm["subject"]["digest"], digest.as_str());
        let payload = rm["layers"][0]["digest"].as_str().unwrap();
        let (code, bytes) = reg.get(&format!("/v2/acme/t/blobs/{payload}"), "*/*");
        assert_eq!(code, "200");
        assert_eq!(bytes, blob(payload), "payload {payload}");
    }
    // `imgbuild sbom` and `verify` read them through the API; pushing again uploads nothing.
    read_back_and_push_again(t.path(), &store, &home, &repo, &digest);
    let (_, body) = reg.get(&format!("/v2/acme/t/referrers/{digest}"), index);
    assert_eq!(json(&body)["manifests"], listed["manifests"]);
}
