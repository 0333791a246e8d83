//! deb822 control data (Debian Policy §5.1): paragraphs of `Field: value` lines with
//! continuation lines, as in `Packages` indexes, `InRelease`, a `.deb`'s `control` file and
//! dpkg's `status` database; and the dependency fields (`Depends`, `Pre-Depends`, `Provides`)
//! parsed into relations (§7.1).

use super::version::Relation;

/// One paragraph, its fields in the order written. Values keep their continuation lines
/// (each `\n` followed by the line as written, leading space included).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Paragraph {
    pub fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The value of `name` (field names are case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` (replacing it in place, else after the field `after`, else at the end).
    pub fn set(&mut self, name: &str, value: &str, after: Option<&str>) {
        if let Some(f) = self
            .fields
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            f.1 = value.to_string();
            return;
        }
        let at = after
            .and_then(|a| {
                self.fields
                    .iter()
                    .position(|(k, _)| k.eq_ignore_ascii_case(a))
            })
            .map(|i| i + 1)
            .unwrap_or(self.fields.len());
        self.fields
            .insert(at, (name.to_string(), value.to_string()));
    }

    /// The paragraph as written, ending in a newline (no blank line).
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.fields {
            s.push_str(k);
            s.push(':');
            if !v.is_empty() && !v.starts_with('\n') {
                s.push(' ');
            }
            s.push_str(v);
            s.push('\n');
        }
        s
    }
}

/// Parses paragraphs. `Err` names the line (1-based) that is neither a field, a continuation
/// nor blank.
pub fn parse(text: &str) -> Result<Vec<Paragraph>, String> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            match cur.fields.last_mut() {
                Some((_, v)) => {
                    v.push('\n');
                    v.push_str(line);
                }
                None => return Err(format!("line {}: continuation line without a field", n + 1)),
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(format!(
                "line {}: `{line}` is not a `Field: value` line",
                n + 1
            ));
        };
        cur.fields
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// One possible way to satisfy a dependency: `name[:arch] [(REL version)]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Atom {
    pub name: String,
    pub version: Option<(Relation, String)>,
}

impl std::fmt::Display for Atom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some((r, v)) => write!(f, "{} ({} {v})", self.name, r.as_str()),
            None => write!(f, "{}", self.name),
        }
    }
}

/// A dependency: alternatives (`a | b`), satisfied by any one.
pub type Clause = Vec<Atom>;

/// Parses a relationship field (`Depends`, `Pre-Depends`, `Provides`): comma-separated
/// clauses of `|`-separated atoms. Architecture qualifiers (`:any`, `:native`) are dropped;
/// architecture restrictions (`[amd64]`) and build profiles (`<!nocheck>`) are kept out of the
/// binary fields by Policy and ignored here.
pub fn relations(field: &str) -> Result<Vec<Clause>, String> {
    let mut out = Vec::new();
    for clause in field.split(',') {
        let clause = clause.trim();
        if clause.is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for atom in clause.split('|') {
            alts.push(atom_of(atom.trim()).map_err(|e| format!("`{clause}`: {e}"))?);
        }
        out.push(alts);
    }
    Ok(out)
}

fn atom_of(s: &str) -> Result<Atom, String> {
    let s = match s.find(['[', '<']) {
        Some(i) if !s[..i].contains('(') || s[..i].contains(')') => s[..i].trim(),
        _ => s,
    };
    let (name, version) = match s.split_once('(') {
        Some((n, rest)) => {
            let inner = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("`{s}` has no closing parenthesis"))?
                .trim();
            let split = inner
                .find(|c: char| !matches!(c, '<' | '>' | '='))
                .unwrap_or(inner.len());
            let (rel, ver) = inner.split_at(split);
            let rel = Relation::parse(rel.trim())
                .ok_or_else(|| format!("`{rel}` is not a version relation"))?;
            (n.trim(), Some((rel, ver.trim().to_string())))
        }
        None => (s.trim(), None),
    };
    let name = name.split(':').next().unwrap_or(name);
    if name.is_empty() {
        return Err("empty package name".into());
    }
    Ok(Atom {
        name: name.to_string(),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paragraphs_with_continuations_and_renders_them_back() {
        let text = "Package: libpq5\nVersion: 15.8-0+deb12u1\nDescription: PostgreSQL C client library\n libpq is a C library\n .\n more\n\n\nPackage: b\nEssential: yes\n";
        let ps = parse(text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("package"), Some("libpq5"));
        assert_eq!(
            ps[0].get("Description"),
            Some("PostgreSQL C client library\n libpq is a C library\n .\n more")
        );
        assert_eq!(ps[1].get("Essential"), Some("yes"));
        assert_eq!(
            ps[0].render(),
            "Package: libpq5\nVersion: 15.8-0+deb12u1\nDescription: PostgreSQL C client library\n libpq is a C library\n .\n more\n"
        );
        let e = parse("Package: a\nnot a field\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn parses_relations_with_versions_alternatives_and_qualifiers() {
        let r = relations("libc6 (>= 2.34), libgssapi-krb5-2 (>= 1.17), debconf (>= 0.5) | debconf-2.0, python3:any (<< 3.12)").unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0][0].name, "libc6");
        assert_eq!(r[0][0].version, Some((Relation::Ge, "2.34".into())));
        assert_eq!(r[2].len(), 2);
        assert_eq!(r[2][1].name, "debconf-2.0");
        assert_eq!(r[3][0].name, "python3");
        assert_eq!(r[3][0].version, Some((Relation::Lt, "3.12".into())));
        assert_eq!(r[3][0].to_string(), "python3 (<< 3.12)");
        assert_eq!(
            relations("awk (= 1:1.3), mawk").unwrap()[0][0]
                .version
                .as_ref()
                .unwrap()
                .1,
            "1:1.3"
        );
        assert!(relations("a (>= 1").is_err());
    }
}
