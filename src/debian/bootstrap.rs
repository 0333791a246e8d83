//! A base built from the archive (`base = { debian = "bookworm", packages = [...] }`), without
//! debootstrap: the release's `Essential: yes` and `Priority: required` packages plus the
//! named ones, resolved and pinned like a `debian` layer (`[debian."IMAGE/[base]"]`), unpacked
//! into one layer whose bytes depend only on the pins (mtime 0, not the source date), so the
//! same lock gives the same base digest on every machine.
//!
//! Maintainer scripts are not run; what a usable base needs from them is reproduced:
//! - merged /usr (what debootstrap sets up on bookworm; trixie's base-files ships it): `/bin`,
//!   `/sbin`, `/lib` (and `/lib64` on amd64) as symlinks into `/usr`, and the packages' files
//!   written through them;
//! - base-passwd's `postinst`: `/etc/passwd` and `/etc/group` from its
//!   `/usr/share/base-passwd/{passwd,group}.master`;
//! - the `awk` alternative (mawk's `postinst`): `/usr/bin/awk` → `/etc/alternatives/awk` →
//!   `/usr/bin/mawk`;
//! - `/bin/sh` → `dash` when no package ships it;
//! - mount points and scratch directories: `/dev`, `/proc`, `/sys`, `/run`, `/tmp` and
//!   `/var/tmp` (1777).
//!
//! Not reproduced: `ld.so.cache` (the loader searches the multiarch directories without it),
//! byte-compiled Python modules (`py3compile`), debconf answers, `/etc/shadow`, locales.

use super::layer::{fetch_all, keyring_path, pinned_with, Want};
use super::unpack;
use crate::image::{self, BaseImage, Descriptor, History, ImageConfig, RootFs, RunConfig};
use crate::layer::{self, Body, Entry, Source};
use crate::recipe::Ctx;
use crate::rootfs::{Kind, Listing, Node, Rootfs};
use crate::spec::DebianBase;
use crate::usage;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Seek};

/// Bump when the bytes written for the same pins change.
const FORMAT: u32 = 1;

/// The merged-/usr symlinks of a Debian root on `arch`.
fn usr_links(arch: &str) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")];
    if arch == "amd64" {
        v.push(("lib64", "usr/lib64"));
    }
    v
}

/// The base image of `spec` for the image planned in `cx`.
pub fn base(cx: &Ctx, spec: &DebianBase) -> Result<BaseImage> {
    let what = format!("image `{}`: base `debian:{}`", cx.image_name, spec.debian);
    for p in &spec.packages {
        super::layer::check_name(p).map_err(|e| usage!("{what}: packages: {e}"))?;
    }
    if spec.debian.is_empty()
        || !spec
            .debian
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
    {
        return Err(usage!(
            "{what}: `{}` is not a Debian release name (e.g. bookworm, trixie)",
            spec.debian
        ));
    }
    let arch = super::architecture(&cx.platform)?;
    let keyring = keyring_path(&cx.root, spec.keyring.as_deref());
    let key = cx.lock_key("[base]");
    let want = Want {
        key: &key,
        release: &spec.debian,
        arch: &arch,
        request: &spec.packages,
        base_status: "",
        keyring: &keyring,
        what: format!("{what}: "),
    };
    let pins = pinned_with(cx, &want, |ix| {
        ix.by_name
            .values()
            .filter_map(|v| v.first())
            .filter(|p| p.essential || p.priority == "required")
            .map(|p| p.name.clone())
            .collect()
    })?;

    let mut inputs = BTreeMap::new();
    inputs.insert("[debian-base-format]".to_string(), FORMAT.to_string());
    inputs.insert("[release]".to_string(), format!("{} {arch}", spec.debian));
    for p in &pins.packages {
        inputs.insert(
            format!("deb {}", p.name),
            format!("{} {} {}", p.version, p.architecture, p.sha256),
        );
    }
    let k = crate::key::layer(
        cx.compression,
        cx.gzip_level,
        0,
        Some(&cx.platform),
        &inputs,
    );
    let blob = crate::cache::layer_or(&cx.store, &k, || {
        let mut debs = fetch_all(cx, &pins, &keyring).with_context(|| what.clone())?;
        let fs = merged_usr(&arch);
        let mut entries = unpack::entries(&mut debs, &fs, "")?;
        script_effects(&mut entries, &arch)?;
        let entries = layer::normalise(entries).with_context(|| what.clone())?;
        let (blob, listing) = layer::write(
            &entries,
            0,
            cx.compression,
            cx.gzip_level,
            &cx.store,
            &|_| {},
        )
        .with_context(|| what.clone())?;
        drop(debs);
        Ok((blob, listing))
    })?;
    let mut run = RunConfig::default();
    run.set_env("PATH", image::DEFAULT_PATH);
    let created = image::rfc3339(0);
    let config = ImageConfig {
        created: Some(created.clone()),
        architecture: cx.platform.architecture.clone(),
        os: cx.platform.os.clone(),
        variant: cx.platform.variant.clone(),
        config: run,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![blob.diff_id.clone()],
        },
        history: vec![History {
            created: Some(created),
            created_by: Some(format!(
                "imgbuild base debian {}: {} packages ({})",
                spec.debian,
                pins.packages.len(),
                if spec.packages.is_empty() {
                    "essential and required".to_string()
                } else {
                    format!("essential and required, {}", spec.packages.join(" "))
                }
            )),
            ..Default::default()
        }],
        extra: Default::default(),
    };
    Ok(BaseImage {
        name: format!("debian:{}", spec.debian),
        digest: None,
        config,
        layers: vec![Descriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest,
            size: blob.size,
            platform: None,
            annotations: BTreeMap::new(),
            artifact_type: None,
        }],
    })
}

/// The tree the packages are unpacked onto: merged /usr's directory symlinks.
fn merged_usr(arch: &str) -> Rootfs {
    let node = |path: &str, kind, target: Option<&str>| Node {
        path: path.into(),
        kind,
        mode: 0o755,
        size: 0,
        sha256: None,
        target: target.map(String::from),
    };
    let mut nodes = vec![node("usr", Kind::Dir, None)];
    for (link, to) in usr_links(arch) {
        nodes.push(node(link, Kind::Symlink, Some(to)));
        nodes.push(node(to, Kind::Dir, None));
    }
    let mut fs = Rootfs::default();
    fs.apply(
        0,
        &Listing {
            nodes,
            captured: Default::default(),
        },
    );
    fs
}

/// The bytes of a regular file entry.
fn read_entry(e: &Entry) -> Result<Vec<u8>> {
    let Body::File { src, size } = &e.body else {
        anyhow::bail!("{} is not a regular file", e.display());
    };
    Ok(match src {
        Source::Bytes(b) => b.to_vec(),
        Source::Range { file, offset } => {
            let mut f = std::fs::File::open(file.as_path())?;
            f.seek(std::io::SeekFrom::Start(*offset))?;
            let mut b = vec![0; *size as usize];
            f.read_exact(&mut b)?;
            b
        }
        Source::Disk(p) => std::fs::read(p)?,
        Source::Zip { .. } => anyhow::bail!("{} is in a zip archive", e.display()),
    })
}

/// What the maintainer scripts of an essential set would have done that a base needs.
fn script_effects(entries: &mut Vec<Entry>, arch: &str) -> Result<()> {
    let have: BTreeMap<Vec<u8>, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    let mut add = Vec::new();
    for (link, to) in usr_links(arch) {
        // trixie's base-files ships these links itself.
        if let Some(&i) = have.get(link.as_bytes()) {
            if !matches!(&entries[i].body, Body::Symlink(t) if t == to.as_bytes()) {
                anyhow::bail!(
                    "/{link} is not a symlink to {to} in the packages: merged /usr is expected"
                );
            }
            continue;
        }
        add.push(Entry {
            path: link.as_bytes().to_vec(),
            body: Body::Symlink(to.as_bytes().to_vec()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        });
        if !have.contains_key(to.as_bytes()) {
            add.push(Entry::dir(to, 0o755));
        }
    }
    for (master, file) in [
        ("passwd.master", "etc/passwd"),
        ("group.master", "etc/group"),
    ] {
        let src = format!("usr/share/base-passwd/{master}");
        if let Some(&i) = have.get(src.as_bytes()) {
            if !have.contains_key(file.as_bytes()) {
                add.push(Entry::bytes(file, 0o644, read_entry(&entries[i])?));
            }
        }
    }
    if have.contains_key(&b"usr/bin/mawk"[..]) && !have.contains_key(&b"usr/bin/awk"[..]) {
        add.push(symlink("usr/bin/awk", "/etc/alternatives/awk"));
        add.push(symlink("etc/alternatives/awk", "/usr/bin/mawk"));
    }
    if have.contains_key(&b"usr/bin/dash"[..]) && !have.contains_key(&b"usr/bin/sh"[..]) {
        add.push(symlink("usr/bin/sh", "dash"));
    }
    for (d, mode) in [
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("var/tmp", 0o1777),
    ] {
        if !have.contains_key(d.as_bytes()) {
            add.push(Entry::dir(d, mode));
        }
    }
    entries.extend(add);
    Ok(())
}

fn symlink(path: &str, target: &str) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        body: Body::Symlink(target.as_bytes().to_vec()),
        mode: 0o777,
        uid: 0,
        gid: 0,
    }
}
