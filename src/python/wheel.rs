//! A wheel (PEP 427) turned into layer entries: files stream from the archive into the layer,
//! `*.data/` directories go to their install schemes, console scripts are generated for the
//! image's interpreter, and RECORD is rewritten for the installed paths.

use super::filename::{dist_info_name, WheelName};
use super::record::{self, Row};
use super::scripts;
use super::target::Target;
use crate::layer::{Body, Entry, Source};
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What installing one wheel adds to the layer.
pub struct Installed {
    /// `name version` for messages.
    pub label: String,
    /// The `.dist-info` directory (absolute).
    pub dist_info: String,
    pub entries: Vec<Entry>,
    /// The distribution's normalised name (what `prefer` names).
    pub name: String,
    /// Each installed file (layer path) → its sha256 (hex, when known) and its RECORD row.
    pub files: BTreeMap<Vec<u8>, Claim>,
}

/// What one distribution's RECORD says of a file it installs.
#[derive(Clone, Debug)]
pub struct Claim {
    pub sha256: Option<String>,
    pub row: String,
}

/// One member of the archive, its name checked.
struct Member {
    index: usize,
    name: String,
    size: u64,
    mode: Option<u32>,
}

/// Refuses member names that could land outside the install directories.
pub fn check_member_name(name: &str) -> Result<(), String> {
    let trimmed = name.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("an empty name".into());
    }
    if name.starts_with('/') || name.starts_with('\\') || name.get(1..2) == Some(":") {
        return Err("an absolute path".into());
    }
    if name.contains('\\') {
        return Err("a backslash".into());
    }
    if name.contains('\0') {
        return Err("a NUL byte".into());
    }
    for c in trimmed.split('/') {
        match c {
            ".." => return Err("a `..` component".into()),
            "" | "." => return Err(format!("a `{c}` component")),
            _ => {}
        }
    }
    Ok(())
}

fn members(zip: &mut zip::ZipArchive<File>, wheel: &str) -> Result<Vec<Member>> {
    let mut out = Vec::with_capacity(zip.len());
    for index in 0..zip.len() {
        let f = zip.by_index_raw(index)?;
        let name = String::from_utf8(f.name_raw().to_vec()).map_err(|_| {
            anyhow!("wheel {wheel}: a member name is not UTF-8; refusing the wheel")
        })?;
        if let Err(why) = check_member_name(&name) {
            bail!("wheel {wheel}: refusing member `{name}`: it has {why}");
        }
        if f.is_dir() {
            continue;
        }
        out.push(Member {
            index,
            name,
            size: f.size(),
            mode: f.unix_mode(),
        });
    }
    Ok(out)
}

fn read_member(zip: &mut zip::ZipArchive<File>, index: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    zip.by_index(index)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// The `.dist-info` directory of the wheel named `file` (checked against the file name).
fn dist_info(members: &[Member], file: &WheelName, wheel: &str) -> Result<String> {
    let want = dist_info_name(&file.dist);
    let dirs: BTreeSet<&str> = members
        .iter()
        .filter_map(|m| m.name.split('/').next())
        .filter(|d| d.ends_with(".dist-info"))
        .collect();
    dirs.iter()
        .find(|d| {
            let stem = d.trim_end_matches(".dist-info");
            stem.rsplit_once('-')
                .is_some_and(|(n, _)| dist_info_name(n) == want)
        })
        .map(|d| d.to_string())
        .ok_or_else(|| {
            anyhow!("wheel {wheel} has no {want}-*.dist-info directory (found: {dirs:?})")
        })
}

/// Reads and checks every member against the wheel's own RECORD: sha256 and size of each
/// file, every file listed, every listed file present.
pub fn verify_archive(path: &Path, filename: &str) -> Result<()> {
    let wn = WheelName::parse(filename)
        .ok_or_else(|| anyhow!("`{filename}` is not a wheel file name"))?;
    let mut zip = zip::ZipArchive::new(File::open(path)?)
        .with_context(|| format!("wheel {filename} is not a valid zip archive"))?;
    let ms = members(&mut zip, filename)?;
    let di = dist_info(&ms, &wn, filename)?;
    let rec_name = format!("{di}/RECORD");
    let rec = ms
        .iter()
        .find(|m| m.name == rec_name)
        .ok_or_else(|| anyhow!("wheel {filename} has no {rec_name}"))?;
    let text = String::from_utf8(read_member(&mut zip, rec.index)?)
        .map_err(|_| anyhow!("wheel {filename}: {rec_name} is not UTF-8"))?;
    let rows: BTreeMap<String, Row> = record::parse(&text)
        .map_err(|e| anyhow!("wheel {filename}: {e}"))?
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for m in &ms {
        seen.insert(m.name.as_str());
        let signature = m.name == rec_name
            || m.name == format!("{rec_name}.jws")
            || m.name == format!("{rec_name}.p7s");
        if signature {
            continue;
        }
        let Some(row) = rows.get(&m.name) else {
            if !record::is_bytecode(&m.name) {
                problems.push(format!("{} is not listed in RECORD", m.name));
            }
            continue;
        };
        let Some(want) = &row.sha256 else {
            if !record::is_bytecode(&m.name) {
                problems.push(format!("{} has no sha256 in RECORD", m.name));
            }
            continue;
        };
        let (got, n) = hash_reader(zip.by_index(m.index)?)
            .with_context(|| format!("wheel {filename}: reading {}", m.name))?;
        if &got != want {
            problems.push(format!(
                "{}: sha256 {} does not match RECORD ({})",
                m.name,
                record::hex_to_b64(&got),
                record::hex_to_b64(want)
            ));
        } else if row.size.is_some_and(|s| s != n) {
            problems.push(format!(
                "{}: {n} bytes, RECORD says {}",
                m.name,
                row.size.unwrap()
            ));
        }
    }
    for p in rows.keys() {
        if !seen.contains(p.as_str()) && !record::is_bytecode(p) {
            problems.push(format!(
                "{p} is listed in RECORD but missing from the archive"
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "wheel {filename} does not match its own RECORD ({} problem{}): {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("; ")
        );
    }
    Ok(())
}

/// sha256 (hex) and length of everything `r` yields.
fn hash_reader(mut r: impl Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            return Ok((hex::encode(h.finalize()), n));
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

/// The install scheme: where each part of a wheel goes (absolute paths, no trailing slash).
fn scheme_dir(t: &Target, key: &str, dist: &str) -> Option<String> {
    Some(match key {
        "purelib" | "platlib" => t.site_dir.clone(),
        "scripts" => t.scripts_dir.clone(),
        "data" => t.data_dir.clone(),
        "headers" => format!("{}/{dist}", t.include_dir),
        _ => return None,
    })
}

/// `to` relative to the directory `from` (both absolute), as RECORD writes paths outside it.
pub fn relative(from: &str, to: &str) -> String {
    let f: Vec<&str> = from.split('/').filter(|c| !c.is_empty()).collect();
    let t: Vec<&str> = to.split('/').filter(|c| !c.is_empty()).collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; f.len() - common];
    parts.extend(&t[common..]);
    parts.join("/")
}

fn rel(abs: &str) -> Vec<u8> {
    abs.trim_start_matches('/').as_bytes().to_vec()
}

/// Installs the wheel at `archive` (named `filename`) for `target`.
/// A file imgbuild writes itself (script, INSTALLER): its RECORD row and its layer body.
fn generated(site: &str, dest: &str, bytes: Vec<u8>, rows: &mut Vec<Row>) -> Body {
    rows.push(Row::new(
        relative(site, dest),
        &hex::encode(Sha256::digest(&bytes)),
        bytes.len() as u64,
    ));
    Body::File {
        size: bytes.len() as u64,
        src: Source::Bytes(bytes.into()),
    }
}

/// METADATA must name the distribution and version the wheel's file name gives.
fn check_metadata(
    text: &str,
    wn: &WheelName,
    filename: &str,
    di: &str,
    python: &str,
) -> Result<()> {
    let header = text.split("\n\n").next().unwrap_or("");
    let field = |k: &str| {
        header.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(f, _)| f.trim().eq_ignore_ascii_case(k))
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let (Some(name), Some(version)) = (field("Name"), field("Version")) else {
        bail!(
            "wheel {filename}: {di}/METADATA has no Name or Version field; the wheel is malformed"
        );
    };
    if dist_info_name(&name) != dist_info_name(&wn.dist) {
        bail!(
            "wheel {filename}: {di}/METADATA names `{name}`, not `{}`",
            wn.dist
        );
    }
    let norm = |v: &str| {
        v.trim_start_matches(['v', 'V'])
            .to_ascii_lowercase()
            .replace('_', "-")
    };
    if norm(&version) != norm(&wn.version)
        && super::version::Version::parse(&version) != super::version::Version::parse(&wn.version)
    {
        bail!(
            "wheel {filename}: {di}/METADATA says version {version}, not {}",
            wn.version
        );
    }
    if let Some(rp) = field("Requires-Python") {
        let v = super::version::Version::parse(python);
        if v.is_some_and(|v| !super::version::satisfies(&v, &rp)) {
            bail!(
                "wheel {filename} requires Python {rp} (Requires-Python in {di}/METADATA), but the image's interpreter is {python}; the lock was resolved for another Python: use a base whose Python satisfies {rp}, or lock again for Python {python}"
            );
        }
    }
    Ok(())
}

pub fn install(
    archive: &Path,
    filename: &str,
    target: &Target,
    owner: (u32, u32),
) -> Result<Installed> {
    let wn = WheelName::parse(filename)
        .ok_or_else(|| anyhow!("`{filename}` is not a wheel file name"))?;
    let mut zip = zip::ZipArchive::new(File::open(archive)?)
        .with_context(|| format!("wheel {filename} is not a valid zip archive"))?;
    let ms = members(&mut zip, filename)?;
    let di = dist_info(&ms, &wn, filename)?;
    let stem = di.trim_end_matches(".dist-info").to_string();
    let data = format!("{stem}.data/");
    let find = |n: &str| ms.iter().find(|m| m.name == format!("{di}/{n}"));
    let wheel_meta = match find("WHEEL") {
        Some(m) => String::from_utf8_lossy(&read_member(&mut zip, m.index)?).into_owned(),
        None => bail!("wheel {filename} has no {di}/WHEEL"),
    };
    match wheel_meta
        .lines()
        .find_map(|l| l.strip_prefix("Wheel-Version:"))
    {
        Some(v) if v.trim().starts_with("1.") => {}
        v => bail!(
            "wheel {filename}: Wheel-Version {:?} is not supported (1.x is)",
            v.map(str::trim)
        ),
    }
    let metadata = match find("METADATA") {
        Some(m) => String::from_utf8_lossy(&read_member(&mut zip, m.index)?).into_owned(),
        None => {
            bail!("wheel {filename} has no {di}/METADATA (PEP 427 requires it); rebuild the wheel")
        }
    };
    check_metadata(&metadata, &wn, filename, &di, &target.version)?;
    let rows: BTreeMap<String, Row> = match find("RECORD") {
        Some(m) => record::parse(&String::from_utf8_lossy(&read_member(&mut zip, m.index)?))
            .map_err(|e| anyhow!("wheel {filename}: {e}"))?
            .into_iter()
            .map(|r| (r.path.clone(), r))
            .collect(),
        None => bail!("wheel {filename} has no {di}/RECORD"),
    };
    let entry_points = match find("entry_points.txt") {
        Some(m) => Some(String::from_utf8_lossy(&read_member(&mut zip, m.index)?).into_owned()),
        None => None,
    };
    let archive = Arc::new(archive.to_path_buf());
    let (uid, gid) = owner;
    let site = target.site_dir.clone();
    let mut entries = Vec::new();
    let mut record_rows = Vec::new();
    let mut dirs = BTreeSet::new();
    let mut push = |entries: &mut Vec<Entry>, abs: String, body: Body, mode: u32| {
        let mut d = abs.as_str();
        while let Some(i) = d.rfind('/') {
            d = &d[..i];
            if d.len() <= site.len() || !d.starts_with(&site) {
                break;
            }
            dirs.insert(d.to_string());
        }
        entries.push(Entry {
            path: rel(&abs),
            body,
            mode,
            uid,
            gid,
        });
    };
    let skip: BTreeSet<String> = ["RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER"]
        .iter()
        .map(|n| format!("{di}/{n}"))
        .collect();
    for m in &ms {
        if skip.contains(&m.name) {
            continue;
        }
        let (dest, is_script) = match m.name.strip_prefix(&data) {
            Some(rest) => {
                let (key, sub) = rest
                    .split_once('/')
                    .ok_or_else(|| anyhow!("wheel {filename}: unexpected file {}", m.name))?;
                let dir = scheme_dir(target, key, &wn.dist).ok_or_else(|| {
                    anyhow!("wheel {filename}: {} is in an unknown scheme `{key}` (expected purelib, platlib, scripts, data or headers)", m.name)
                })?;
                (format!("{dir}/{sub}"), key == "scripts")
            }
            None => (format!("{site}/{}", m.name), false),
        };
        let exec = m.mode.is_some_and(|mode| mode & 0o111 != 0);
        if is_script {
            let bytes = read_member(&mut zip, m.index)?;
            let bytes = scripts::fix_shebang(bytes, &target.interpreter);
            let body = generated(&site, &dest, bytes, &mut record_rows);
            push(&mut entries, dest, body, 0o755);
            continue;
        }
        let row = rows.get(&m.name).ok_or_else(|| {
            anyhow!(
                "wheel {filename}: {} is not listed in the wheel's RECORD; refusing the wheel",
                m.name
            )
        })?;
        match &row.sha256 {
            Some(sha) => record_rows.push(Row::new(relative(&site, &dest), sha, m.size)),
            None if record::is_bytecode(&m.name) => {
                record_rows.push(Row::bare(relative(&site, &dest)))
            }
            None => bail!(
                "wheel {filename}: {} has no sha256 in the wheel's RECORD",
                m.name
            ),
        }
        let body = Body::File {
            src: Source::Zip {
                archive: archive.clone(),
                index: m.index,
            },
            size: m.size,
        };
        push(&mut entries, dest, body, if exec { 0o755 } else { 0o644 });
    }
    let have: BTreeSet<Vec<u8>> = entries.iter().map(|e| e.path.clone()).collect();
    if let Some(text) = &entry_points {
        for s in scripts::parse_entry_points(text)
            .map_err(|e| anyhow!("wheel {filename}: entry_points.txt: {e}"))?
        {
            let dest = format!("{}/{}", target.scripts_dir, s.name);
            if have.contains(&rel(&dest)) {
                continue; // the wheel ships this script itself
            }
            let bytes = s.render(&target.interpreter).into_bytes();
            let body = generated(&site, &dest, bytes, &mut record_rows);
            push(&mut entries, dest, body, 0o755);
        }
    }
    let inst_path = format!("{site}/{di}/INSTALLER");
    let body = generated(&site, &inst_path, b"imgbuild\n".to_vec(), &mut record_rows);
    push(&mut entries, inst_path, body, 0o644);
    let rec_path = format!("{site}/{di}/RECORD");
    record_rows.push(Row::bare(relative(&site, &rec_path)));
    let text = record::write(&record_rows).into_bytes();
    push(
        &mut entries,
        rec_path,
        Body::File {
            size: text.len() as u64,
            src: Source::Bytes(text.into()),
        },
        0o644,
    );
    let by_row: BTreeMap<&str, &Row> = record_rows.iter().map(|r| (r.path.as_str(), r)).collect();
    let mut files = BTreeMap::new();
    for e in &entries {
        let abs = format!("/{}", String::from_utf8_lossy(&e.path));
        let row = relative(&site, &abs);
        let sha256 = by_row.get(row.as_str()).and_then(|r| r.sha256.clone());
        files.insert(e.path.clone(), Claim { sha256, row });
    }
    for d in dirs {
        entries.push(Entry {
            path: rel(&d),
            body: Body::Dir,
            mode: 0o755,
            uid,
            gid,
        });
    }
    Ok(Installed {
        label: format!("{} {}", wn.dist, wn.version),
        dist_info: format!("{site}/{di}"),
        entries,
        name: super::filename::normalize(&wn.dist),
        files,
    })
}

/// The path of a wheel blob in the store, for `Source::Zip`.
pub fn blob(store: &crate::store::Store, sha256: &str) -> Result<PathBuf> {
    let d = crate::digest::Digest::parse(&format!("sha256:{sha256}")).map_err(|e| anyhow!(e))?;
    Ok(store.blob_path(&d))
}

#[cfg(test)]
mod tests;

/// What [`merge`] made of several wheels' entries.
#[derive(Debug)]
pub struct Merged {
    pub entries: Vec<Entry>,
    /// Stray files left out (see [`is_stray`]), one line each for a warning.
    pub left_out: Vec<String>,
}

/// A file directly in the site directory (`site`, relative, no slashes at either end) that no
/// import can reach: not a module (`.py`, `.pyi`, `.pyc`), not an extension (`.so`, `.pyd`), not
/// a `.pth` — the `LICENSE`, `README.md` or `CHANGELOG` a badly configured build backend puts
/// at the top of site-packages.
fn is_stray(path: &[u8], site: &[u8]) -> bool {
    let Some(name) = path
        .strip_prefix(site)
        .and_then(|r| r.strip_prefix(b"/".as_slice()))
    else {
        return false;
    };
    if name.is_empty() || name.contains(&b'/') {
        return false;
    }
    let name = String::from_utf8_lossy(name);
    ![".py", ".pyi", ".pyc", ".so", ".pyd", ".pth"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Joins the entries of several wheels. A file that several distributions install with the
/// same bytes and mode is installed once (every RECORD keeps its row); where `prefer` says
/// (winner → loser, normalised names), the winner's file is kept and the row leaves the
/// loser's RECORD. A stray top-level file ([`is_stray`]) that several distributions install
/// with different contents is left out of the layer, its row leaving every RECORD, and said in
/// [`Merged::left_out`] (pip and uv let the last install overwrite it; which one that is depends
/// on the install order, and no import reads it). Any other shared file is an error naming the
/// path, the distributions and the ways out (all such paths are listed).
pub fn merge(installed: Vec<Installed>, prefer: &BTreeMap<String, String>) -> Result<Merged> {
    // The site directories (relative), from each `.dist-info` directory's parent.
    let sites: BTreeSet<Vec<u8>> = installed
        .iter()
        .filter_map(|i| {
            Path::new(i.dist_info.trim_start_matches('/'))
                .parent()
                .map(|p| p.to_string_lossy().as_bytes().to_vec())
        })
        .collect();
    let mut left_out = Vec::new();
    // Every claim on each path, in install order: (wheel, entry index).
    let mut claims: BTreeMap<Vec<u8>, Vec<(usize, usize)>> = BTreeMap::new();
    for (w, inst) in installed.iter().enumerate() {
        for (i, e) in inst.entries.iter().enumerate() {
            claims.entry(e.path.clone()).or_default().push((w, i));
        }
    }
    let mut keep: BTreeSet<(usize, usize)> = BTreeSet::new();
    // Rows to drop from each wheel's RECORD (files another distribution was preferred for).
    let mut dropped: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut clashes = Vec::new();
    let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, mut cs) in claims {
        let is_dir = |&(w, i): &(usize, usize)| matches!(installed[w].entries[i].body, Body::Dir);
        if cs.len() == 1 || cs.iter().all(is_dir) {
            keep.insert(cs[0]);
            continue;
        }
        let names: BTreeSet<&str> = cs
            .iter()
            .map(|&(w, _)| installed[w].name.as_str())
            .collect();
        cs.retain(|&(w, _)| {
            let me = &installed[w].name;
            let beaten = prefer
                .iter()
                .any(|(win, lose)| lose == me && names.contains(win.as_str()));
            if beaten {
                if let Some(c) = installed[w].files.get(&path) {
                    dropped.entry(w).or_default().insert(c.row.clone());
                }
            }
            !beaten
        });
        if cs.len() == 1 {
            keep.insert(cs[0]);
            continue;
        }
        let same = |&(w, i): &(usize, usize)| {
            let e = &installed[w].entries[i];
            (
                installed[w].files.get(&path).and_then(|c| c.sha256.clone()),
                e.mode,
                matches!(e.body, Body::File { .. }),
            )
        };
        let first = same(&cs[0]);
        if first.0.is_some() && first.2 && cs.iter().all(|c| same(c) == first) {
            keep.insert(cs[0]);
            continue;
        }
        if sites.iter().any(|s| is_stray(&path, s)) {
            for &(w, _) in &cs {
                if let Some(c) = installed[w].files.get(&path) {
                    dropped.entry(w).or_default().insert(c.row.clone());
                }
            }
            let labels: Vec<&str> = cs
                .iter()
                .map(|&(w, _)| installed[w].label.as_str())
                .collect();
            left_out.push(format!(
                "/{} is installed by {} with different contents; no import can reach a file at the top of the site directory, so it is left out of the layer (and out of their RECORDs)",
                String::from_utf8_lossy(&path),
                labels.join(" and ")
            ));
            continue;
        }
        let labels: Vec<&str> = cs
            .iter()
            .map(|&(w, _)| installed[w].label.as_str())
            .collect();
        let shown = format!("/{}", String::from_utf8_lossy(&path));
        clashes.push(format!(
            "{shown} is in both {} with different contents",
            labels.join(" and ")
        ));
        if let [(a, _), (b, _), ..] = cs[..] {
            pairs.insert((installed[a].name.clone(), installed[b].name.clone()));
        }
    }
    if !clashes.is_empty() {
        let ways: Vec<String> = pairs
            .iter()
            .map(|(a, b)| format!("`prefer = {{ \"{a}\" = \"{b}\" }}` keeps {a}'s files where the two collide (or the reverse), `exclude = [\"{b}\"]` leaves {b} out"))
            .collect();
        bail!(
            "two distributions install the same file ({} collision{}): {}; in the layer's `python` table, {}",
            clashes.len(),
            if clashes.len() == 1 { "" } else { "s" },
            clashes.join("; "),
            ways.join("; ")
        );
    }
    let mut out = Vec::new();
    for (w, inst) in installed.into_iter().enumerate() {
        let rec = rel(&format!("{}/RECORD", inst.dist_info));
        let drop = dropped.remove(&w);
        for (i, mut e) in inst.entries.into_iter().enumerate() {
            if !keep.contains(&(w, i)) {
                continue;
            }
            if let (Some(drop), true) = (&drop, e.path == rec) {
                e.body = without_rows(&e.body, drop)?;
            }
            out.push(e);
        }
    }
    Ok(Merged {
        entries: out,
        left_out,
    })
}

/// A generated RECORD without the rows in `drop`.
fn without_rows(body: &Body, drop: &BTreeSet<String>) -> Result<Body> {
    let Body::File {
        src: Source::Bytes(b),
        ..
    } = body
    else {
        bail!("a generated RECORD is not in memory");
    };
    let rows = record::parse(&String::from_utf8_lossy(b)).map_err(|e| anyhow!(e))?;
    let rows: Vec<Row> = rows
        .into_iter()
        .filter(|r| !drop.contains(&r.path))
        .collect();
    let text = record::write(&rows).into_bytes();
    Ok(Body::File {
        size: text.len() as u64,
        src: Source::Bytes(text.into()),
    })
}
