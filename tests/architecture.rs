//! The shape of `src/`: no import cycle between modules, and docs/ARCHITECTURE.md names every
//! module there is.
//!
//! The module graph is read from the source the way a reader follows it: a file is a module
//! (`a/mod.rs` is `a`), and it depends on every module it names through a `crate::…`, `super::…`
//! or own-child path (in `use` lines and inline), test code (`#[cfg(test)]` items, `tests.rs`,
//! `testutil.rs`) left out. Declaring a child (`mod x;`) is not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().map(String::as_str) == Some("mod") {
                parts.pop();
            }
            // The binary's main.rs and test-only modules are not part of the library's graph.
            if parts == ["main"]
                || matches!(parts.last().map(String::as_str), Some("tests" | "testutil"))
            {
                continue;
            }
            if parts == ["lib"] {
                parts.clear();
            }
            out.insert(parts, p);
        }
    }
    out
}

/// The source without comments and without `#[cfg(test)]` items.
fn strip(text: &str) -> String {
    let no_comments: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut s = no_comments;
    while let Some(i) = s.find("#[cfg(test)]") {
        let rest = &s[i..];
        let brace = rest.find('{');
        let semi = rest.find(';');
        let end = match (brace, semi) {
            (Some(b), Some(se)) if se < b => i + se + 1,
            (None, Some(se)) => i + se + 1,
            (Some(b), _) => {
                let mut depth = 0;
                let mut end = s.len();
                for (k, c) in s[i + b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = i + b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, None) => s.len(),
        };
        s.replace_range(i..end, "");
    }
    s
}

/// Paths written in `text` starting at byte `at` (after `crate::`, `super::` or a child name):
/// `a::b::{c, d::e}` gives `[a, b]`, `[a, b, c]`, `[a, b, d, e]`.
fn paths_at(text: &str, at: usize) -> Vec<Vec<String>> {
    let b = text.as_bytes();
    let mut i = at;
    let mut segs = Vec::new();
    loop {
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == start {
            break;
        }
        segs.push(text[start..i].to_string());
        if text[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    let mut out = vec![segs.clone()];
    if i < b.len() && b[i] == b'{' {
        if let Some(close) = text[i..].find('}') {
            for item in text[i + 1..i + close].split(',') {
                let item = item.split(" as ").next().unwrap().trim();
                if item.is_empty() || item == "self" {
                    continue;
                }
                let mut p = segs.clone();
                p.extend(item.split("::").map(|x| x.trim().to_string()));
                out.push(p);
            }
        }
    }
    out
}

fn edges(mods: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let resolve = |path: &[String]| -> Option<Module> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| mods.contains_key(m))
    };
    let mut out = BTreeMap::new();
    for (m, file) in mods {
        let text = strip(&std::fs::read_to_string(file).unwrap());
        let parent: Module = m[..m.len().saturating_sub(1)].to_vec();
        let kids: Vec<&Module> = mods
            .keys()
            .filter(|k| k.len() == m.len() + 1 && k[..m.len()] == m[..])
            .collect();
        let mut deps = BTreeSet::new();
        let mut add = |base: &Module, text: &str, at: usize| {
            for p in paths_at(text, at) {
                let mut full = base.clone();
                full.extend(p);
                if let Some(r) = resolve(&full) {
                    if &r != m && !r.is_empty() {
                        deps.insert(r);
                    }
                }
            }
        };
        let bytes = text.as_bytes();
        for (i, _) in text.match_indices("crate::") {
            if i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                add(&Vec::new(), &text, i + "crate::".len());
            }
        }
        for (i, _) in text.match_indices("super::") {
            if i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b':')
            {
                add(&parent, &text, i + "super::".len());
            }
        }
        for k in kids {
            let name = format!("{}::", k.last().unwrap());
            for (i, _) in text.match_indices(&name) {
                let before = &text[..i];
                let prev = before.chars().last();
                let via_self = before.ends_with("self::");
                if via_self
                    || !prev.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                {
                    add(m, &text, i);
                }
            }
        }
        out.insert(m.clone(), deps);
    }
    out
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct T<'a> {
        g: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        n: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Module) {
        t.index.insert(v, t.n);
        t.low.insert(v, t.n);
        t.n += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in &t.g[v] {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        n: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn name(m: &Module) -> String {
    m.join("::")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn src_has_no_import_cycle() {
    let mods = modules(&src());
    assert!(mods.len() > 30, "read only {} modules", mods.len());
    let g = edges(&mods);
    // The reader must see real dependencies, or the check proves nothing.
    let build = g.get(&vec!["build".to_string()]).expect("src/build.rs");
    assert!(
        build.contains(&vec!["plan".to_string()]),
        "build → plan not seen: {build:?}"
    );
    let found = cycles(&g);
    let report: Vec<String> = found
        .iter()
        .map(|c| {
            let members: Vec<String> = c
                .iter()
                .map(|m| {
                    let to: Vec<String> = g[m].iter().filter(|d| c.contains(d)).map(name).collect();
                    format!("{} → {}", name(m), to.join(", "))
                })
                .collect();
            format!("cycle of {}:\n    {}", c.len(), members.join("\n    "))
        })
        .collect();
    assert!(
        report.is_empty(),
        "import cycles in src/:\n  {}",
        report.join("\n  ")
    );
}

#[test]
fn the_checker_finds_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path();
    std::fs::create_dir_all(s.join("a")).unwrap();
    std::fs::write(s.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(s.join("a/mod.rs"), "mod c;\nuse c::Thing;\n").unwrap();
    std::fs::write(s.join("a/c.rs"), "use crate::b::{self, X};\n").unwrap();
    std::fs::write(
        s.join("b.rs"),
        "#[cfg(test)]\nmod tests { use crate::a; }\npub fn f() { crate::a::g() }\n",
    )
    .unwrap();
    let found = cycles(&edges(&modules(s)));
    assert_eq!(found.len(), 1, "{found:?}");
    let names: Vec<String> = found[0].iter().map(name).collect();
    assert_eq!(names, ["a", "a::c", "b"]);
    // Test code is not a dependency.
    std::fs::write(
        s.join("b.rs"),
        "#[cfg(test)]\nmod tests { use crate::a; }\n",
    )
    .unwrap();
    assert!(cycles(&edges(&modules(s))).is_empty());
}

#[test]
fn architecture_page_names_every_module() {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md"))
            .expect("docs/ARCHITECTURE.md");
    let missing: Vec<String> = modules(&src())
        .keys()
        .filter(|m| m.len() == 1)
        .map(name)
        .filter(|n| !page.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md does not name these modules: {missing:?}"
    );
}
