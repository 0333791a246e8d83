//! `bytecode = true` of a python layer: after the install is assembled, every `.py` file the
//! layer's RECORDs claim is compiled by the target's own interpreter, inside the base image's
//! root filesystem with the layer's sources on it, with runc (`runtime`: no network), into
//! PEP 552 hash-based pycs in the same layer, each with a RECORD row as pip writes it
//! (`path,sha256=…,size`), so verification checks the pycs like every other file.
//!
//! Deterministic: the sources are compiled in one fixed order (sorted by path) and cut into
//! fixed chunks, each compiled by a fresh interpreter with `PYTHONHASHSEED=0`
//! (`bytecode/compile.py`); hash-based pycs embed the source's hash, not its mtime (PEP 552:
//! "the pyc will be a deterministic function of the source file").
//!
//! Cached: the compiled pycs go to the store (blobs) under a key of the sources (paths and
//! sha256s), the interpreter's version and the settings (`key::python_bytecode`) — not the
//! base's layers or the platform, so one compile serves every platform whose interpreter has
//! the same version (the compile checks that the interpreter it ran is that version).

use super::record::{self, Row};
use super::target::Target;
use super::wheel::relative;
use crate::image::Descriptor;
use crate::layer::{Body, Entry, Source};
use crate::spec::BytecodeSpec;
use crate::store::Store;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bump when compiling changes the pycs for the same sources, interpreter and settings.
pub const FORMAT: u32 = 1;

/// The compiler run inside the container.
const DRIVER: &str = include_str!("bytecode/compile.py");

/// The work directory inside the compile root.
const WORK: &str = "imgbuild-bytecode";

/// Sources per chunk (one fresh interpreter each). Part of the output's determinism: fixed.
const CHUNK: usize = 250;

/// What a compile needs.
pub struct Job<'a> {
    pub store: &'a Store,
    pub base_layers: &'a [Descriptor],
    pub target: &'a Target,
    pub spec: &'a BytecodeSpec,
    /// Owner of the pycs and `__pycache__` directories (the layer's).
    pub owner: (u32, u32),
}

/// The compiled output of one set of sources, as remembered in the store.
#[derive(Serialize, Deserialize)]
struct Compiled {
    /// The interpreter that compiled it: `platform.python_version()`, the magic number.
    version: String,
    magic: String,
    /// Every pyc's bytes, one after the other in path order: one blob of the store.
    blob: crate::digest::Digest,
    pycs: Vec<Pyc>,
    /// Sources the interpreter could not compile (pip skips them too) and why.
    failed: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct Pyc {
    /// The source and the pyc, layer paths (no leading `/`).
    source: String,
    path: String,
    sha256: String,
    size: u64,
    /// Where its bytes start in the blob.
    offset: u64,
}

/// What `add` did, for the build's note.
pub struct Outcome {
    /// Compiled now (false: taken from the store).
    pub fresh: bool,
    pub sources: usize,
    pub pycs: usize,
    pub failed: Vec<(String, String)>,
    pub seconds: f64,
    /// Where a fresh compile's time went (`unpacking the base 3.1 s, …`).
    pub phases: String,
}

impl Outcome {
    pub fn note(&self, layer: &str, target: &Target) -> Option<String> {
        let mut s = if self.fresh {
            format!(
                "layer `{layer}`: compiled {} modules into {} pycs with CPython {} in {:.1} s ({})",
                self.sources - self.failed.len(),
                self.pycs,
                target.version,
                self.seconds,
                self.phases
            )
        } else if !self.failed.is_empty() {
            format!(
                "layer `{layer}`: {} pycs of CPython {} from the store",
                self.pycs, target.version
            )
        } else {
            return None;
        };
        if !self.failed.is_empty() {
            let shown: Vec<String> = self
                .failed
                .iter()
                .take(3)
                .map(|(p, e)| format!("/{p} ({e})"))
                .collect();
            s.push_str(&format!(
                "; {} source{} CPython {} cannot compile kept without a pyc, as pip does: {}{}",
                self.failed.len(),
                if self.failed.len() == 1 { "" } else { "s" },
                target.version,
                shown.join(", "),
                if self.failed.len() > 3 { ", …" } else { "" }
            ));
        }
        Some(s)
    }
}

/// The `.py` files the layer's RECORDs claim: layer path → (sha256 hex, RECORD entries that
/// claim it).
fn sources(entries: &[Entry], by_path: &HashMap<Vec<u8>, usize>, site: &str) -> Result<Sources> {
    let mut out = Sources::default();
    for (i, e) in entries.iter().enumerate() {
        let p = String::from_utf8_lossy(&e.path);
        if !p.ends_with(".dist-info/RECORD") {
            continue;
        }
        let text = String::from_utf8_lossy(&entry_bytes(e, &mut HashMap::new())?).into_owned();
        let rows = record::parse(&text).map_err(|m| anyhow!("/{p}: {m}"))?;
        for r in rows {
            let Some(path) = record::installed_path(site, &r.path) else {
                continue;
            };
            if !path.ends_with(".py") {
                continue;
            }
            let Some(&j) = by_path.get(path.as_bytes()) else {
                continue;
            };
            if !matches!(entries[j].body, Body::File { .. }) {
                continue;
            }
            let s = out
                .files
                .entry(path)
                .or_insert_with(|| (r.sha256.clone(), vec![]));
            if s.0.is_none() {
                s.0 = r.sha256.clone();
            }
            s.1.push(i);
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Sources {
    files: BTreeMap<String, (Option<String>, Vec<usize>)>,
}

/// The bytes of a file entry (zip archives opened once per call site's cache).
fn entry_bytes(
    e: &Entry,
    zips: &mut HashMap<PathBuf, zip::ZipArchive<fs::File>>,
) -> Result<Vec<u8>> {
    let Body::File { src, .. } = &e.body else {
        bail!("{} is not a file", e.display());
    };
    let mut buf = Vec::new();
    match src {
        Source::Bytes(b) => buf.extend_from_slice(b),
        Source::Disk(d) => buf = fs::read(d).with_context(|| d.display().to_string())?,
        Source::Zip { archive, index } => {
            let a: &Path = archive.as_ref();
            if !zips.contains_key(a) {
                zips.insert(a.to_path_buf(), zip::ZipArchive::new(fs::File::open(a)?)?);
            }
            zips.get_mut(a)
                .unwrap()
                .by_index(*index)?
                .read_to_end(&mut buf)?;
        }
        Source::Range { .. } => bail!("{}: unexpected tar member source", e.display()),
    }
    Ok(buf)
}

/// Adds the pycs of every `.py` source of `entries` (a merged install) and their RECORD rows.
pub fn add(job: &Job, mut entries: Vec<Entry>) -> Result<(Vec<Entry>, Outcome)> {
    let started = std::time::Instant::now();
    let site = job.target.site_dir.trim_start_matches('/').to_string();
    let by_path: HashMap<Vec<u8>, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    let mut srcs = sources(&entries, &by_path, &site)?;
    let mut outcome = Outcome {
        fresh: false,
        sources: srcs.files.len(),
        pycs: 0,
        failed: vec![],
        seconds: 0.0,
        phases: String::new(),
    };
    if srcs.files.is_empty() {
        return Ok((entries, outcome));
    }
    let mut zips = HashMap::new();
    for (path, (sha, _)) in srcs.files.iter_mut() {
        if sha.is_none() {
            let b = entry_bytes(&entries[by_path[path.as_bytes()]], &mut zips)?;
            *sha = Some(crate::digest::sha256_hex(&b));
        }
    }
    let material: Vec<(&str, &str)> = srcs
        .files
        .iter()
        .map(|(p, (h, _))| (p.as_str(), h.as_deref().unwrap_or_default()))
        .collect();
    let key = crate::key::python_bytecode(FORMAT, &job.target.version, job.spec, &material);
    let compiled = match cached(job.store, &key) {
        Some(c) => c,
        None => {
            let (c, phases) = compile(job, &entries, &srcs, &by_path)?;
            outcome.phases = phases
                .iter()
                .map(|(k, v)| format!("{k} {v:.1} s"))
                .collect::<Vec<_>>()
                .join(", ");
            job.store.put_record("python-bytecode", &key, &c)?;
            outcome.fresh = true;
            c
        }
    };
    if compiled.version != job.target.version {
        bail!(
            "the image's interpreter {} says it is Python {}, but imgbuild detected {}; set `python_version` in the layer's `python` table to what it says",
            job.target.interpreter,
            compiled.version,
            job.target.version
        );
    }
    // The pycs, their `__pycache__` directories, and a row in each RECORD claiming the source.
    let (uid, gid) = job.owner;
    let mut dirs = BTreeSet::new();
    let mut rows: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
    let site_abs = format!("/{site}");
    let blob = Arc::new(job.store.blob_path(&compiled.blob));
    for p in &compiled.pycs {
        let e = Entry {
            path: p.path.as_bytes().to_vec(),
            body: Body::File {
                src: Source::Range {
                    file: blob.clone(),
                    offset: p.offset,
                },
                size: p.size,
            },
            mode: 0o644,
            uid,
            gid,
        };
        // A pyc the wheel shipped itself is replaced by the compiled one.
        match by_path.get(p.path.as_bytes()) {
            Some(&i) => entries[i] = e,
            None => entries.push(e),
        }
        if let Some((dir, _)) = p.path.rsplit_once('/') {
            if !by_path.contains_key(dir.as_bytes()) {
                dirs.insert(dir.to_string());
            }
        }
        let row = Row::new(
            relative(&site_abs, &format!("/{}", p.path)),
            &p.sha256,
            p.size,
        );
        for &r in &srcs.files[&p.source].1 {
            rows.entry(r).or_default().push(row.clone());
        }
    }
    for d in dirs {
        entries.push(Entry {
            path: d.into_bytes(),
            body: Body::Dir,
            mode: 0o755,
            uid,
            gid,
        });
    }
    for (i, add) in rows {
        let text = String::from_utf8_lossy(&entry_bytes(&entries[i], &mut zips)?).into_owned();
        let mut have =
            record::parse(&text).map_err(|m| anyhow!("{}: {m}", entries[i].display()))?;
        let new: BTreeSet<&str> = add.iter().map(|r| r.path.as_str()).collect();
        have.retain(|r| !new.contains(r.path.as_str()));
        // The RECORD's own row stays last.
        let own = have.pop();
        have.extend(add);
        have.extend(own);
        let bytes: Arc<[u8]> = record::write(&have).into_bytes().into();
        entries[i].body = Body::File {
            size: bytes.len() as u64,
            src: Source::Bytes(bytes),
        };
    }
    outcome.pycs = compiled.pycs.len();
    outcome.failed = compiled.failed;
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok((entries, outcome))
}

/// The compiled output under `key`, when its blob is still in the store.
fn cached(store: &Store, key: &str) -> Option<Compiled> {
    let c: Compiled = store.get_record("python-bytecode", key)?;
    let end = c.pycs.iter().map(|p| p.offset + p.size).max().unwrap_or(0);
    (store.has(&c.blob) && store.size(&c.blob).is_some_and(|n| n >= end)).then_some(c)
}

/// What compile.py writes.
#[derive(Deserialize)]
struct DriverOut {
    version: String,
    implementation: String,
    magic: String,
    results: Vec<DriverResult>,
}

#[derive(Deserialize)]
struct DriverResult {
    source: String,
    pycs: Vec<String>,
    error: Option<String>,
}

/// Runs compile.py in the base's root filesystem with the sources on it.
fn compile(
    job: &Job,
    entries: &[Entry],
    srcs: &Sources,
    by_path: &HashMap<Vec<u8>, usize>,
) -> Result<(Compiled, Vec<(&'static str, f64)>)> {
    let mut phases = Vec::new();
    let mut t0 = std::time::Instant::now();
    let runc = crate::runtime::runc().ok_or_else(|| {
        crate::error::UsageError::new(format!(
            "cannot compile bytecode for CPython {}: no OCI runtime: runc is not on PATH, and imgbuild compiles bytecode only with the image's own interpreter, inside a container of the image",
            job.target.version
        ))
        .hint("install runc (e.g. `apt-get install runc`), or set `bytecode = false` in the layer's `python` table (the image then has no pycs: Python compiles modules at every start when it cannot write them)")
    })?;
    // The base unpacked once per store and shared with sdist builds; this root links its files
    // (the compile only adds files: sources are written as new files, pycs renamed into place).
    let shared = super::sdist::shared_root(job.store, job.base_layers)
        .context("unpacking the base image to compile bytecode")?;
    let tmp_dir = job.store.root().join("tmp");
    fs::create_dir_all(&tmp_dir)?;
    // Named like the store's temp files (owner pid inside): a killed build's root is swept.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".bytecode.{}.", std::process::id()))
        .suffix(".tmp")
        .tempdir_in(&tmp_dir)?;
    let rootfs = tmp.path().join("rootfs");
    super::sdist::link_tree(&shared, &rootfs).context("linking the compile root")?;
    phases.push(("compile root", t0.elapsed().as_secs_f64()));
    t0 = std::time::Instant::now();
    let mut zips = HashMap::new();
    for path in srcs.files.keys() {
        let e = &entries[by_path[path.as_bytes()]];
        let dst = rootfs.join(path);
        if let Some(d) = dst.parent() {
            fs::create_dir_all(d)?;
        }
        let _ = fs::remove_file(&dst);
        let bytes = entry_bytes(e, &mut zips)?;
        fs::File::create(&dst)
            .and_then(|mut f| f.write_all(&bytes))
            .with_context(|| format!("writing {}", dst.display()))?;
    }
    let work = rootfs.join(WORK);
    fs::create_dir_all(&work)?;
    fs::write(work.join("compile.py"), DRIVER)?;
    let sources: Vec<String> = srcs.files.keys().map(|p| format!("/{p}")).collect();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    fs::write(
        work.join("job.json"),
        serde_json::to_vec(&serde_json::json!({
            "sources": sources,
            "optimize": job.spec.optimize,
            "invalidation": job.spec.invalidation.as_str(),
            "chunk": CHUNK,
            "workers": workers,
            "out": format!("/{WORK}/out.json"),
        }))?,
    )?;
    let args = [
        job.target.interpreter.clone(),
        "-s".into(),
        "-B".into(),
        format!("/{WORK}/compile.py"),
        format!("/{WORK}/job.json"),
    ];
    let env = [
        format!("PATH={}", crate::image::DEFAULT_PATH),
        // Sets (and frozensets) of constants are marshalled in hash order.
        "PYTHONHASHSEED=0".to_string(),
        "LANG=C.UTF-8".to_string(),
        format!("HOME=/{WORK}"),
    ];
    crate::runtime::write_config(
        tmp.path(),
        &rootfs,
        &crate::runtime::Process {
            args: &args,
            env: &env,
            cwd: "/",
            uid: 0,
            gid: 0,
            capabilities: &[],
            nofile: (1024, 1024),
            no_new_privileges: true,
        },
        false,
        "imgbuild-bytecode",
    )?;
    let id = format!("imgbuild-bytecode-{}-{}", std::process::id(), unique());
    phases.push(("writing the sources", t0.elapsed().as_secs_f64()));
    t0 = std::time::Instant::now();
    let res = crate::runtime::run(&runc, tmp.path(), &id)?;
    phases.push(("compiling", t0.elapsed().as_secs_f64()));
    t0 = std::time::Instant::now();
    if !res.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "compiling bytecode with {} in a container of the image failed (exit {}); its last lines of output:\n{}",
            job.target.interpreter,
            res.status.code().unwrap_or(-1),
            lines[lines.len().saturating_sub(20)..]
                .iter()
                .map(|l| format!("    | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let out: DriverOut = serde_json::from_slice(
        &fs::read(work.join("out.json")).context("reading the compiler's result")?,
    )
    .context("reading the compiler's result")?;
    if out.implementation != "cpython" {
        bail!(
            "{} is {}, not CPython; imgbuild compiles bytecode for CPython only",
            job.target.interpreter,
            out.implementation
        );
    }
    let mut c = Compiled {
        version: out.version,
        magic: out.magic,
        blob: crate::digest::Digest::of(b""),
        pycs: vec![],
        failed: vec![],
    };
    let mut bytes_of = BTreeMap::new();
    for r in out.results {
        let source = r.source.trim_start_matches('/').to_string();
        if !srcs.files.contains_key(&source) {
            bail!(
                "the compiler reported a source imgbuild did not give it: {}",
                r.source
            );
        }
        if let Some(e) = r.error {
            c.failed.push((source, e));
            continue;
        }
        for p in r.pycs {
            let rel = p.trim_start_matches('/').to_string();
            if crate::layer::check_path(rel.as_bytes()).is_err() || !rel.contains("/__pycache__/") {
                bail!("the compiler reported an unexpected pyc path {p}");
            }
            let bytes = fs::read(rootfs.join(&rel)).with_context(|| format!("reading {p}"))?;
            c.pycs.push(Pyc {
                source: source.clone(),
                path: rel.clone(),
                sha256: crate::digest::sha256_hex(&bytes),
                size: bytes.len() as u64,
                offset: 0,
            });
            bytes_of.insert(rel, bytes);
        }
    }
    c.pycs.sort_by(|a, b| a.path.cmp(&b.path));
    let mut all = Vec::new();
    for p in c.pycs.iter_mut() {
        p.offset = all.len() as u64;
        all.extend_from_slice(&bytes_of[&p.path]);
    }
    c.blob = job.store.put(&all)?;
    phases.push(("storing the pycs", t0.elapsed().as_secs_f64()));
    t0 = std::time::Instant::now();
    drop(tmp);
    phases.push(("removing the compile root", t0.elapsed().as_secs_f64()));
    Ok((c, phases))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The flags word of a pyc (PEP 552): bit 0 set for hash-based, bit 1 `check_source`.
pub fn pyc_flags(pyc: &[u8]) -> Option<u32> {
    pyc.get(4..8)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_word_is_read_little_endian() {
        let mut pyc = vec![0xa7, 0x0d, 0x0d, 0x0a, 3, 0, 0, 0];
        pyc.extend([0u8; 8]);
        assert_eq!(pyc_flags(&pyc), Some(3));
        assert_eq!(pyc_flags(&pyc[..6]), None);
    }

    #[test]
    fn sources_are_the_py_files_records_claim() {
        let site = "usr/lib/python3/dist-packages";
        let rec = record::write(&[
            Row::new("pkg/__init__.py", &"a".repeat(64), 3),
            Row::new("pkg/data.txt", &"b".repeat(64), 3),
            Row::new("../../../bin/tool.py", &"c".repeat(64), 3),
            Row::bare("pkg-1.dist-info/RECORD"),
        ]);
        let entries = vec![
            Entry::bytes(format!("{site}/pkg/__init__.py"), 0o644, b"x=1".to_vec()),
            Entry::bytes(format!("{site}/pkg/data.txt"), 0o644, b"abc".to_vec()),
            Entry::bytes("usr/bin/tool.py", 0o755, b"x=2".to_vec()),
            Entry::bytes(
                format!("{site}/pkg-1.dist-info/RECORD"),
                0o644,
                rec.into_bytes(),
            ),
        ];
        let by_path = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.clone(), i))
            .collect();
        let s = sources(&entries, &by_path, site).unwrap();
        let names: Vec<&str> = s.files.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "usr/bin/tool.py",
                "usr/lib/python3/dist-packages/pkg/__init__.py"
            ]
        );
        assert_eq!(s.files[names[1]].1, vec![3]);
    }
}
