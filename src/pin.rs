//! `imgbuild pin`: rewrite the `image:` of compose services to `repository@sha256:…`,
//! changing no other byte of the file (comments, anchors, order and quoting stay).

use crate::error::Hint;
use crate::project::Project;
use crate::record::{self, Summary};
use crate::usage;
use anyhow::{bail, Context, Result};
use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A YAML node with the byte range of each scalar, so it can be replaced in place.
#[derive(Clone, Debug)]
enum Node {
    Scalar {
        value: String,
        style: ScalarStyle,
        start: usize,
        end: usize,
        line: usize,
    },
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
    Alias(usize),
}

impl Node {
    fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(m) => m
                .iter()
                .rev()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A parsed compose file.
pub struct Compose {
    pub path: PathBuf,
    pub text: String,
    root: Node,
    anchors: HashMap<usize, Node>,
}

/// Where a service's effective `image:` is written.
#[derive(Clone, Debug)]
pub struct ImageSite {
    pub file: usize,
    pub value: String,
    pub start: usize,
    pub end: usize,
    pub line: usize,
    style: ScalarStyle,
}

impl Compose {
    pub fn load(path: &Path) -> Result<Compose> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage!("cannot read {}: {e}", path.display()))?;
        Compose::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<Compose> {
        let (root, anchors) = Compose::tree(path, &text)?;
        Ok(Compose {
            path: path.to_path_buf(),
            text,
            root,
            anchors,
        })
    }

    fn tree(path: &Path, text: &str) -> Result<(Node, HashMap<usize, Node>)> {
        let mut p = Parser::new_from_str(text);
        let mut anchors = HashMap::new();
        let byte_of = char_to_byte(text);
        let mut stack: Vec<(Node, usize)> = Vec::new();
        let mut pending_key: Vec<Option<Node>> = Vec::new();
        let mut root = None;
        while let Some(ev) = p.next_event() {
            let (ev, span) = ev.map_err(|e| {
                usage!(
                    "{}:{}:{}: malformed YAML: {}",
                    path.display(),
                    e.marker().line(),
                    e.marker().col() + 1,
                    e.info()
                )
            })?;
            let done: Option<(Node, usize)> = match ev {
                Event::Scalar(v, style, anchor, _) => {
                    let start = byte_of(span.start.index());
                    let end =
                        scalar_end(text, start, &v).unwrap_or_else(|| byte_of(span.end.index()));
                    Some((
                        Node::Scalar {
                            value: v.into_owned(),
                            style,
                            start,
                            end,
                            line: span.start.line(),
                        },
                        anchor,
                    ))
                }
                Event::Alias(id) => Some((Node::Alias(id), 0)),
                Event::MappingStart(anchor, _) => {
                    stack.push((Node::Map(Vec::new()), anchor));
                    pending_key.push(None);
                    None
                }
                Event::SequenceStart(anchor, _) => {
                    stack.push((Node::Seq(Vec::new()), anchor));
                    pending_key.push(None);
                    None
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    pending_key.pop();
                    stack.pop()
                }
                _ => None,
            };
            if let Some((node, anchor)) = done {
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                match stack.last_mut() {
                    Some((Node::Map(m), _)) => {
                        let slot = pending_key.last_mut().unwrap();
                        match slot.take() {
                            None => *slot = Some(node),
                            Some(k) => {
                                // docker compose refuses a key given twice in one mapping.
                                if let Node::Scalar { value, line, .. } = &k {
                                    let first = m.iter().find_map(|(o, _)| match o {
                                        Node::Scalar {
                                            value: v, line: l, ..
                                        } if v == value && v != "<<" => Some(*l),
                                        _ => None,
                                    });
                                    if let Some(first) = first {
                                        return Err(usage!(
                                            "{}:{line}: malformed YAML: key `{value}` is given twice in one mapping (first at line {first})",
                                            path.display()
                                        ));
                                    }
                                }
                                m.push((k, node))
                            }
                        }
                    }
                    Some((Node::Seq(s), _)) => s.push(node),
                    _ => root = root.or(Some(node)),
                }
            }
        }
        let root = root.ok_or_else(|| usage!("{} is empty", path.display()))?;
        Ok((root, anchors))
    }

    fn resolve<'a>(&'a self, n: &'a Node) -> &'a Node {
        match n {
            Node::Alias(id) => self.anchors.get(id).unwrap_or(n),
            _ => n,
        }
    }

    /// Looks `key` up in a service mapping, following `<<` merge keys as compose does.
    fn lookup<'a>(&'a self, map: &'a Node, key: &str) -> Option<&'a Node> {
        if let Some(v) = map.get(key) {
            return Some(v);
        }
        let merge = map.get("<<")?;
        let sources: Vec<&Node> = match self.resolve(merge) {
            Node::Seq(items) => items.iter().map(|i| self.resolve(i)).collect(),
            other => vec![other],
        };
        sources.into_iter().find_map(|s| self.lookup(s, key))
    }

    /// Service name → its image site (if any) and whether it has `build:`.
    pub fn services(&self, file: usize) -> BTreeMap<String, (Option<ImageSite>, bool)> {
        let mut out = BTreeMap::new();
        let Some(Node::Map(services)) = self.root.get("services").map(|n| self.resolve(n)) else {
            return out;
        };
        for (k, v) in services {
            let (Some(name), svc) = (k.as_str(), self.resolve(v)) else {
                continue;
            };
            let site = match self.lookup(svc, "image").map(|n| self.resolve(n)) {
                Some(Node::Scalar {
                    value,
                    style,
                    start,
                    end,
                    line,
                }) => Some(ImageSite {
                    file,
                    value: value.clone(),
                    start: *start,
                    end: *end,
                    line: *line,
                    style: *style,
                }),
                _ => None,
            };
            out.insert(
                name.to_string(),
                (site, self.lookup(svc, "build").is_some()),
            );
        }
        out
    }
}

/// The byte just past a scalar that starts at `start` (quotes included), found in the text
/// itself: the parser's span end can run on into trailing blanks and comments.
fn scalar_end(text: &str, start: usize, value: &str) -> Option<usize> {
    let rest = text.get(start..)?;
    let b = rest.as_bytes();
    match b.first()? {
        b'\'' => {
            let mut i = 1;
            while i < b.len() {
                if b[i] == b'\'' {
                    if b.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    return Some(start + i + 1);
                }
                i += 1;
            }
            None
        }
        b'"' => {
            let mut i = 1;
            while i < b.len() {
                match b[i] {
                    b'\\' => i += 2,
                    b'"' => return Some(start + i + 1),
                    _ => i += 1,
                }
            }
            None
        }
        _ => rest.starts_with(value).then_some(start + value.len()),
    }
}

/// Maps char indexes (what the parser reports) to byte offsets.
fn char_to_byte(text: &str) -> impl Fn(usize) -> usize + '_ {
    let ascii = text.is_ascii();
    let offsets: Vec<usize> = if ascii {
        Vec::new()
    } else {
        text.char_indices().map(|(b, _)| b).collect()
    };
    move |c| {
        if ascii {
            c.min(text.len())
        } else {
            offsets.get(c).copied().unwrap_or(text.len())
        }
    }
}

/// The repository part of an image reference: no tag, no digest; Docker Hub names normalised.
pub fn repository_of(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let (head, last) = match no_digest.rsplit_once('/') {
        Some((h, l)) => (Some(h), l),
        None => (None, no_digest),
    };
    let last = last.split(':').next().unwrap_or(last);
    let repo = match head {
        Some(h) => format!("{h}/{last}"),
        None => last.to_string(),
    };
    normalise_repository(&repo)
}

/// `python` → `docker.io/library/python`, `acme/api` → `docker.io/acme/api`,
/// `index.docker.io/acme/api` → `docker.io/acme/api`: the registry's one naming rule.
pub fn normalise_repository(repo: &str) -> String {
    crate::registry::reference::normalise_repository(repo)
}

/// One planned or reported change.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Pin {
        service: String,
        from: String,
        to: String,
        file: PathBuf,
        line: usize,
    },
    AlreadyPinned {
        service: String,
        image: String,
    },
    Variable {
        service: String,
        image: String,
        var: String,
    },
    NotBuilt {
        service: String,
        image: String,
    },
    BuildOnly {
        service: String,
    },
}

/// A built image's pinned reference, by repository.
pub type Pins = BTreeMap<String, String>;

/// Works out what to change across `files` (later files override earlier ones, as compose merges).
pub fn plan(files: &[Compose], pins: &Pins) -> Vec<(Action, Option<ImageSite>)> {
    let mut effective: BTreeMap<String, (Option<ImageSite>, bool)> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        for (name, (site, build)) in f.services(i) {
            let e = effective.entry(name).or_insert((None, false));
            if site.is_some() {
                e.0 = site;
            }
            e.1 |= build;
        }
    }
    let mut out = Vec::new();
    for (service, (site, build)) in effective {
        let Some(site) = site else {
            if build {
                out.push((Action::BuildOnly { service }, None));
            }
            continue;
        };
        let image = site.value.clone();
        if let Some(var) = variable(&image) {
            out.push((
                Action::Variable {
                    service,
                    image,
                    var,
                },
                Some(site),
            ));
            continue;
        }
        match pins.get(&repository_of(&image)) {
            Some(to) if *to == image => out.push((Action::AlreadyPinned { service, image }, None)),
            Some(to) => {
                let file = files[site.file].path.clone();
                out.push((
                    Action::Pin {
                        service,
                        from: image,
                        to: to.clone(),
                        file,
                        line: site.line,
                    },
                    Some(site),
                ))
            }
            None => out.push((Action::NotBuilt { service, image }, None)),
        }
    }
    out
}

/// `${VAR}`, `${VAR:-default}` or `$VAR` as the whole image (or its start).
fn variable(image: &str) -> Option<String> {
    let rest = image.strip_prefix('$')?;
    let name: String = rest
        .trim_start_matches('{')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Applies the `Pin` actions to the file texts; returns the new texts by file index.
pub fn apply(
    files: &[Compose],
    actions: &[(Action, Option<ImageSite>)],
) -> BTreeMap<usize, String> {
    let mut edits: BTreeMap<usize, Vec<(usize, usize, String)>> = BTreeMap::new();
    for (a, site) in actions {
        if let (Action::Pin { to, .. }, Some(s)) = (a, site) {
            let text = &files[s.file].text[s.start..s.end];
            let quoted = match s.style {
                ScalarStyle::DoubleQuoted => format!("\"{to}\""),
                ScalarStyle::SingleQuoted => format!("'{to}'"),
                _ => to.clone(),
            };
            // The parser's span may or may not include the quotes; keep whatever surrounds the value.
            let replacement = if text.starts_with(['"', '\'']) {
                quoted
            } else {
                to.clone()
            };
            let list = edits.entry(s.file).or_default();
            if !list.iter().any(|(st, _, _)| *st == s.start) {
                list.push((s.start, s.end, replacement));
            }
        }
    }
    edits
        .into_iter()
        .map(|(i, mut list)| {
            list.sort_by_key(|(s, _, _)| std::cmp::Reverse(*s));
            let mut text = files[i].text.clone();
            for (s, e, r) in list {
                text.replace_range(s..e, &r);
            }
            (i, text)
        })
        .collect()
}

/// Sets `VAR=value` lines in an env file, keeping every other line.
pub fn update_env_file(path: &Path, vars: &BTreeMap<String, String>) -> Result<String> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = Vec::new();
    let mut lines: Vec<String> = old
        .lines()
        .map(|l| {
            let key = l
                .split_once('=')
                .map(|(k, _)| k.trim().trim_start_matches("export ").trim());
            match key.and_then(|k| vars.get_key_value(k)) {
                Some((k, v)) => {
                    seen.push(k.clone());
                    format!("{k}={v}")
                }
                None => l.to_string(),
            }
        })
        .collect();
    for (k, v) in vars {
        if !seen.contains(k) {
            lines.push(format!("{k}={v}"));
        }
    }
    let mut s = lines.join("\n");
    s.push('\n');
    Ok(s)
}

/// Checks that the edited text parses and changed only image values.
pub fn check_edit(original: &Compose, new_text: &str) -> Result<()> {
    let again = Compose::parse(&original.path, new_text.to_string())
        .context("the pinned file no longer parses (this is a bug)")?;
    if again.services(0).len() != original.services(0).len() {
        bail!(
            "pinning changed the set of services in {} (this is a bug)",
            original.path.display()
        );
    }
    Ok(())
}

/// What `imgbuild pin` did or would do.
pub struct Outcome {
    pub actions: Vec<Action>,
    /// Files rewritten (or, with `check`, that would be).
    pub changed: Vec<PathBuf>,
}

/// Pins `paths` to `pins`. With `check`, writes nothing and reports what is not pinned.
/// `env_file` receives `VAR=repo@digest` for services whose image is a variable.
pub fn pin_files(
    paths: &[PathBuf],
    pins: &Pins,
    env_file: Option<&Path>,
    check: bool,
) -> Result<Outcome> {
    let files = paths
        .iter()
        .map(|p| Compose::load(p))
        .collect::<Result<Vec<_>>>()?;
    let planned = plan(&files, pins);
    let relevant = planned
        .iter()
        .any(|(a, _)| !matches!(a, Action::NotBuilt { .. } | Action::BuildOnly { .. }));
    if !relevant {
        let seen: Vec<String> = planned
            .iter()
            .filter_map(|(a, _)| match a {
                Action::NotBuilt { service, image } => Some(format!("{service} ({image})")),
                Action::BuildOnly { service } => Some(format!("{service} (`build:` only)")),
                _ => None,
            })
            .collect();
        let known: Vec<&str> = pins.keys().map(|s| s.as_str()).collect();
        let mut e = usage!(
            "no service in {} uses an image imgbuild pushed (services: {}; pushed repositories: {})",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            if seen.is_empty() { "none".into() } else { seen.join(", ") },
            if known.is_empty() { "none — run `imgbuild push IMAGE` first".into() } else { known.join(", ") }
        );
        if let Some(h) = other_host_hint(&planned, pins) {
            e = e.hint(h);
        }
        bail!(e);
    }
    let mut vars = BTreeMap::new();
    for (a, _) in &planned {
        if let Action::Variable { var, .. } = a {
            // A variable image is pinned through the env file when it names one of our repositories
            // by default value (`${VAR:-repo:tag}`) or when exactly one image was pushed.
            if let Some(to) = variable_target(a, pins) {
                vars.insert(var.clone(), to);
            }
        }
    }
    let new = apply(&files, &planned);
    let mut changed: Vec<PathBuf> = new.keys().map(|i| files[*i].path.clone()).collect();
    if let (Some(env), false) = (env_file, vars.is_empty()) {
        let text = update_env_file(env, &vars)?;
        if std::fs::read_to_string(env).ok().as_deref() != Some(text.as_str()) {
            changed.push(env.to_path_buf());
            if !check {
                crate::store::write_atomic(env, text.as_bytes())?;
            }
        }
    }
    if !check {
        for (i, text) in &new {
            check_edit(&files[*i], text)?;
        }
        for (i, text) in &new {
            write_keeping_mode(&files[*i].path, text)?;
        }
    }
    Ok(Outcome {
        actions: planned.into_iter().map(|(a, _)| a).collect(),
        changed,
    })
}

/// A service image with the path of a pushed repository on another registry host: the compose
/// file and `repository` in imgbuild.toml disagree about the registry.
fn other_host_hint(planned: &[(Action, Option<ImageSite>)], pins: &Pins) -> Option<String> {
    let path_of = |repo: &str| repo.split_once('/').map(|(_, p)| p.to_string());
    planned.iter().find_map(|(a, _)| {
        let Action::NotBuilt { service, image } = a else {
            return None;
        };
        let theirs = repository_of(image);
        let p = path_of(&theirs)?;
        let ours = pins.keys().find(|k| path_of(k).as_deref() == Some(p.as_str()))?;
        Some(format!(
            "service `{service}` names {theirs}, but imgbuild pushed {ours}: the same repository on another registry host; make `repository` in imgbuild.toml and the compose file name the same registry"
        ))
    })
}

fn variable_target(a: &Action, pins: &Pins) -> Option<String> {
    let Action::Variable { image, .. } = a else {
        return None;
    };
    if let Some((_, default)) = image
        .trim_start_matches("${")
        .trim_end_matches('}')
        .split_once(":-")
    {
        return pins.get(&repository_of(default)).cloned();
    }
    (pins.len() == 1)
        .then(|| pins.values().next().cloned())
        .flatten()
}

fn write_keeping_mode(path: &Path, text: &str) -> Result<()> {
    let mode = std::fs::metadata(path).map(|m| m.permissions());
    crate::store::write_atomic(path, text.as_bytes())?;
    if let Ok(m) = mode {
        let _ = std::fs::set_permissions(path, m);
    }
    Ok(())
}

/// Where `imgbuild pin` takes its digests from.
pub enum Source<'a> {
    /// `--from-json FILE`: `imgbuild build --json` / `push --json` output (`shown` as written).
    Json { file: PathBuf, shown: &'a Path },
    /// The last builds recorded in the project.
    Records(&'a Project),
}

/// The pins `imgbuild pin` may apply to `files`: the policy that a digest is pinned only once
/// it was pushed. `check` (for `--check`) still compares against builds from `--from-json`
/// that were not pushed.
pub fn gather(source: Source, files: &[PathBuf], check: bool) -> Result<Pins> {
    let mut pins = Pins::new();
    let mut unpushed = Vec::new();
    match source {
        Source::Json { file, shown } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| usage!("cannot read {}: {e}", shown.display()))?;
            for (n, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let s: Summary = serde_json::from_str(line).map_err(|e| {
                    usage!(
                        "{}:{}: not an imgbuild --json summary: {e}",
                        shown.display(),
                        n + 1
                    )
                })?;
                if let (Some(repo), Some(d)) = (s.repository, s.digest) {
                    // A build that was not pushed names a digest the registry may not have: the
                    // server would find out when it pulls. `--check` may still compare against it.
                    let pushed = s.reference.ends_with(&format!("@{d}"))
                        && repository_of(&s.reference) == normalise_repository(&repo);
                    if !pushed && !check {
                        return Err(usage!(
                            "{}:{}: image `{}` was built ({d}) but not pushed (its reference is `{}`); pinning it would name a digest the registry may not have",
                            shown.display(),
                            n + 1,
                            s.image,
                            s.reference
                        )
                        .hint(format!(
                            "pin from the output of `imgbuild build {0} --push --json` or `imgbuild push {0} --json`",
                            s.image
                        )));
                    }
                    pins.insert(normalise_repository(&repo), format!("{repo}@{d}"));
                }
            }
        }
        Source::Records(project) => {
            for name in project.spec.images.keys() {
                // Only the record is needed: the image itself may live in another store.
                let Ok(rec) = record::last_record(project, name) else {
                    continue;
                };
                let Some(repo) = rec.repository.clone() else {
                    continue;
                };
                if rec.pushed.is_empty() {
                    unpushed.push((name.clone(), repo, rec.digest.to_string()));
                } else {
                    pins.insert(
                        normalise_repository(&repo),
                        format!("{repo}@{}", rec.digest),
                    );
                }
            }
        }
    }
    // An image whose last build was not pushed: the compose file would be pinned to an older
    // push (or left on its tag) while the build says otherwise. Refuse, naming the services.
    if !unpushed.is_empty() {
        let composes = files
            .iter()
            .map(|p| Compose::load(p))
            .collect::<Result<Vec<_>>>()?;
        for (name, repo, digest) in &unpushed {
            let want = normalise_repository(repo);
            let mut users: Vec<String> = Vec::new();
            for (i, c) in composes.iter().enumerate() {
                for (service, (site, _)) in c.services(i) {
                    if site.is_some_and(|s| repository_of(&s.value) == want)
                        && !users.contains(&service)
                    {
                        users.push(service);
                    }
                }
            }
            if !users.is_empty() {
                return Err(usage!(
                    "the last build of `{name}` ({digest}) has not been pushed, and {} use{} {repo}; pinning now would not pin that build",
                    users.join(", "),
                    if users.len() == 1 { "s" } else { "" }
                )
                .hint(format!(
                    "run `imgbuild push {name}` (or build with `--push`), then pin"
                )));
            }
        }
    }
    if pins.is_empty() {
        let mut e = usage!("nothing to pin: no image has been pushed yet");
        if !unpushed.is_empty() {
            let list: Vec<String> = unpushed
                .iter()
                .map(|(n, r, _)| format!("{n} ({r})"))
                .collect();
            e = e.hint(format!(
                "built but not pushed: {}; run `imgbuild push IMAGE` first",
                list.join(", ")
            ));
        }
        return Err(e);
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `repository = "index.docker.io/acme/api"` names the image compose files call `acme/api`:
    /// the pin's key goes through the same registry-name rule as references.
    #[test]
    fn index_docker_io_repository_pins_a_short_hub_name() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(
            root.join("imgbuild.toml"),
            "[images.api]\nrepository = \"index.docker.io/acme/api\"\nbase = \"scratch\"\n[[images.api.layers]]\nname = \"a\"\nensure_dirs = [\"/a\"]\n",
        )
        .unwrap();
        let project = Project::load(root, None).unwrap();
        let digest = format!("sha256:{}", "c".repeat(64));
        let rec = record::BuildRecord {
            image: "api".into(),
            repository: Some("index.docker.io/acme/api".into()),
            digest: crate::digest::Digest::parse(&digest).unwrap(),
            pushed: vec![format!("index.docker.io/acme/api@{digest}")],
            referrers: vec![],
        };
        let p = record::record_path(&project, "api");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, serde_json::to_vec(&rec).unwrap()).unwrap();
        let compose = root.join("compose.yml");
        std::fs::write(&compose, "services:\n  api:\n    image: acme/api:latest\n").unwrap();
        let pins = gather(
            Source::Records(&project),
            std::slice::from_ref(&compose),
            false,
        )
        .unwrap();
        let files = [Compose::load(&compose).unwrap()];
        let actions: Vec<Action> = plan(&files, &pins).into_iter().map(|(a, _)| a).collect();
        assert!(
            matches!(&actions[..], [Action::Pin { to, .. }] if to == &format!("index.docker.io/acme/api@{digest}")),
            "{actions:?}"
        );
    }

    const BASE: &str = "x-common: &common\n  image: \"reg.example.com/a/api:latest\"\nservices:\n  api:\n    <<: *common\n  web:\n    image: 'reg.example.com/a/web:1' # keep me\n  db:\n    image: postgres:16\n  tool:\n    build: .\n  env:\n    image: ${API_IMAGE:-x}\n";

    fn pins() -> Pins {
        let mut p = Pins::new();
        p.insert(
            "reg.example.com/a/api".into(),
            format!("reg.example.com/a/api@sha256:{}", "a".repeat(64)),
        );
        p.insert(
            "reg.example.com/a/web".into(),
            format!("reg.example.com/a/web@sha256:{}", "b".repeat(64)),
        );
        p
    }

    #[test]
    fn pins_through_anchors_and_keeps_quotes_and_comments() {
        let c = Compose::parse(Path::new("c.yml"), BASE.into()).unwrap();
        let files = [c];
        let actions = plan(&files, &pins());
        let new = apply(&files, &actions);
        let text = &new[&0];
        let want = BASE
            .replace(
                "\"reg.example.com/a/api:latest\"",
                &format!("\"reg.example.com/a/api@sha256:{}\"", "a".repeat(64)),
            )
            .replace(
                "'reg.example.com/a/web:1'",
                &format!("'reg.example.com/a/web@sha256:{}'", "b".repeat(64)),
            );
        assert_eq!(text, &want);
        assert!(actions
            .iter()
            .any(|(a, _)| matches!(a, Action::Variable { var, .. } if var == "API_IMAGE")));
        assert!(actions
            .iter()
            .any(|(a, _)| matches!(a, Action::BuildOnly { service } if service == "tool")));
        assert!(actions
            .iter()
            .any(|(a, _)| matches!(a, Action::NotBuilt { service, .. } if service == "db")));
    }

    #[test]
    fn later_files_override_earlier_ones() {
        let a = Compose::parse(
            Path::new("a.yml"),
            "services:\n  web:\n    image: reg.example.com/a/web:1\n".into(),
        )
        .unwrap();
        let b = Compose::parse(
            Path::new("b.yml"),
            "services:\n  web:\n    image: reg.example.com/a/web:2\n    ports: []\n".into(),
        )
        .unwrap();
        let files = [a, b];
        let new = apply(&files, &plan(&files, &pins()));
        assert!(
            !new.contains_key(&0),
            "the overridden value in the base file is left alone"
        );
        assert!(new[&1].contains("@sha256:bbbb"));
    }

    #[test]
    fn malformed_yaml_names_the_line() {
        let e = Compose::parse(
            Path::new("c.yml"),
            "services:\n  api:\n    image: [unclosed\n".into(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("c.yml:4") || e.contains("c.yml:3"), "{e}");
    }

    #[test]
    fn repository_of_strips_tag_and_digest_and_normalises_hub_names() {
        assert_eq!(repository_of("postgres:16"), "docker.io/library/postgres");
        assert_eq!(
            repository_of("localhost:5000/a/b:1@sha256:00"),
            "localhost:5000/a/b"
        );
        assert_eq!(repository_of("reg.io:443/a"), "reg.io:443/a");
    }
}
