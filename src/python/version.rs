//! PEP 440 versions and specifiers, as far as markers and `requires-python` need them.

use std::cmp::Ordering;

/// A parsed PEP 440 version.
#[derive(Clone, Debug)]
pub struct Version {
    pub epoch: u64,
    pub release: Vec<u64>,
    /// (0 = a, 1 = b, 2 = rc, number)
    pub pre: Option<(u8, u64)>,
    pub post: Option<u64>,
    pub dev: Option<u64>,
    pub local: Vec<Local>,
}

/// A local version segment; numbers sort after strings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Local {
    Str(String),
    Num(u64),
}

/// Splits `s` at the first character that is not an ASCII digit.
fn digits(s: &str) -> (&str, &str) {
    let i = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(i)
}

/// Strips one optional separator.
fn sep(s: &str) -> &str {
    s.strip_prefix(['.', '-', '_']).unwrap_or(s)
}

/// An optional number after an optional separator (implicit 0).
fn number(s: &str) -> (u64, &str) {
    let t = sep(s);
    let (d, rest) = digits(t);
    if d.is_empty() {
        (0, s)
    } else {
        (d.parse().unwrap_or(u64::MAX), rest)
    }
}

impl Version {
    pub fn parse(input: &str) -> Option<Version> {
        let lower = input.trim().to_ascii_lowercase();
        let mut s = lower.strip_prefix('v').unwrap_or(&lower);
        let (public, local) = match s.split_once('+') {
            Some((p, l)) => (p, Some(l)),
            None => (s, None),
        };
        s = public;
        let mut epoch = 0;
        if let Some((e, rest)) = s.split_once('!') {
            epoch = e.parse().ok()?;
            s = rest;
        }
        let mut release = Vec::new();
        loop {
            let (d, rest) = digits(s);
            if d.is_empty() {
                return None;
            }
            release.push(d.parse().ok()?);
            s = rest;
            match s.strip_prefix('.') {
                Some(r) if r.starts_with(|c: char| c.is_ascii_digit()) => s = r,
                _ => break,
            }
        }
        let mut pre = None;
        let t = sep(s);
        for (word, kind) in [
            ("alpha", 0),
            ("a", 0),
            ("beta", 1),
            ("b", 1),
            ("rc", 2),
            ("c", 2),
            ("preview", 2),
            ("pre", 2),
        ] {
            if let Some(rest) = t.strip_prefix(word) {
                let (n, rest) = number(rest);
                pre = Some((kind, n));
                s = rest;
                break;
            }
        }
        let mut post = None;
        if let Some(rest) = s
            .strip_prefix('-')
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        {
            let (d, rest) = digits(rest);
            post = Some(d.parse().ok()?);
            s = rest;
        } else {
            let t = sep(s);
            for word in ["post", "rev", "r"] {
                if let Some(rest) = t.strip_prefix(word) {
                    let (n, rest) = number(rest);
                    post = Some(n);
                    s = rest;
                    break;
                }
            }
        }
        let mut dev = None;
        if let Some(rest) = sep(s).strip_prefix("dev") {
            let (n, rest) = number(rest);
            dev = Some(n);
            s = rest;
        }
        if !s.is_empty() {
            return None;
        }
        let local = match local {
            None => Vec::new(),
            Some("") => return None,
            Some(l) => l
                .split(['.', '-', '_'])
                .map(|p| match p.parse() {
                    Ok(n) => Some(Local::Num(n)),
                    Err(_) if !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()) => {
                        Some(Local::Str(p.to_string()))
                    }
                    Err(_) => None,
                })
                .collect::<Option<_>>()?,
        };
        Some(Version {
            epoch,
            release,
            pre,
            post,
            dev,
            local,
        })
    }

    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some() || self.dev.is_some()
    }

    fn key(&self) -> impl Ord + '_ {
        let mut rel = self.release.as_slice();
        while let [head @ .., 0] = rel {
            rel = head;
        }
        let pre: (i8, u64) = match (self.pre, self.post, self.dev) {
            (None, None, Some(_)) => (-1, 0),
            (None, _, _) => (3, 0),
            (Some((k, n)), _, _) => (k as i8, n),
        };
        let dev = match self.dev {
            Some(n) => (0, n),
            None => (1, 0),
        };
        let local = (!self.local.is_empty()).then_some(&self.local);
        (self.epoch, rel, pre, self.post, dev, local)
    }

    /// The version without its local part.
    pub fn public(&self) -> Version {
        Version {
            local: Vec::new(),
            ..self.clone()
        }
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// Whether `v` satisfies one `op version` clause. `None` when `spec` is not a version.
pub fn compare(v: &Version, op: &str, spec: &str) -> Option<bool> {
    if op == "===" {
        return None;
    }
    let (spec, wildcard) = match spec.trim().strip_suffix(".*") {
        Some(s) => (s, true),
        None => (spec.trim(), false),
    };
    let s = Version::parse(spec)?;
    let cand = if s.local.is_empty() {
        v.public()
    } else {
        v.clone()
    };
    Some(match op {
        "==" | "!=" => {
            let eq = if wildcard {
                let mut rel = cand.release.clone();
                rel.resize(rel.len().max(s.release.len()), 0);
                cand.epoch == s.epoch && rel[..s.release.len()] == s.release[..]
            } else {
                cand == s
            };
            eq == (op == "==")
        }
        "<" => cand < s && !(cand.is_prerelease() && !s.is_prerelease() && same_release(&cand, &s)),
        "<=" => cand <= s,
        ">" => cand > s && !(cand.post.is_some() && s.post.is_none() && same_release(&cand, &s)),
        ">=" => cand >= s,
        "~=" => {
            if s.release.len() < 2 || wildcard {
                return None;
            }
            let prefix = s.release[..s.release.len() - 1]
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(".");
            cand >= s && compare(v, "==", &format!("{prefix}.*"))?
        }
        _ => return None,
    })
}

fn same_release(a: &Version, b: &Version) -> bool {
    let n = a.release.len().max(b.release.len());
    let pad = |r: &[u64]| {
        let mut r = r.to_vec();
        r.resize(n, 0);
        r
    };
    a.epoch == b.epoch && pad(&a.release) == pad(&b.release)
}

/// Whether `v` satisfies a comma-separated specifier set such as `>=3.8,!=3.9.*`.
/// Unparsable clauses count as satisfied (the lock's resolver already accepted them).
pub fn satisfies(v: &Version, specs: &str) -> bool {
    specs
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .all(|c| {
            let i = c.find(|ch: char| !"<>=!~".contains(ch)).unwrap_or(c.len());
            let (op, rest) = c.split_at(i);
            compare(v, op, rest).unwrap_or(true)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn ordering_follows_pep_440() {
        let order = [
            "1.0.dev0",
            "1.0a1",
            "1.0a2.dev1",
            "1.0a2",
            "1.0b1",
            "1.0rc1",
            "1.0",
            "1.0+local",
            "1.0.post1.dev0",
            "1.0.post1",
            "1.1",
            "2!0.1",
        ];
        for w in order.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.0"), v("1.0.0"));
        assert_eq!(v("1.0-1"), v("1.0.post1"));
        assert_eq!(v("V1.0RC1"), v("1.0rc1"));
        assert!(Version::parse("1.0-foo").is_none());
    }

    #[test]
    fn specifiers() {
        assert_eq!(compare(&v("3.11.2"), "<", "3.12"), Some(true));
        assert_eq!(compare(&v("3.11.2"), ">=", "3.11"), Some(true));
        assert_eq!(compare(&v("3.11.2"), "==", "3.11.*"), Some(true));
        assert_eq!(compare(&v("3.12.0"), "==", "3.11.*"), Some(false));
        assert_eq!(compare(&v("3.11.2"), "~=", "3.10"), Some(true));
        assert_eq!(compare(&v("4.0"), "~=", "3.10"), Some(false));
        assert_eq!(compare(&v("3.13.0rc1"), "<", "3.13"), Some(false));
        assert!(satisfies(&v("3.11.2"), ">=3.8, !=3.9.*"));
        assert!(!satisfies(&v("3.11.2"), ">=3.12"));
        assert_eq!(compare(&v("1.0"), "<", "linux"), None);
    }
}
