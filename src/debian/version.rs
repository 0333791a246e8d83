//! Debian package versions, compared as Debian Policy §5.6.12 says: `[epoch:]upstream[-revision]`,
//! epoch numerically, then upstream and revision by alternating non-digit and digit parts,
//! where letters sort before non-letters and `~` before everything, even the end of the part.

use std::cmp::Ordering;

/// Compares two version strings by Debian's rules.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

/// `(epoch, upstream, revision)`; a missing epoch is 0, a missing revision empty.
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.bytes().all(|b| b.is_ascii_digit()) && !e.is_empty() => {
            (e.parse().unwrap_or(0), r)
        }
        _ => (0, v),
    };
    match rest.rfind('-') {
        Some(i) => (epoch, &rest[..i], &rest[i + 1..]),
        None => (epoch, rest, ""),
    }
}

/// The sort weight of one byte of a non-digit part (policy: `~` lowest, then the end, then
/// letters, then everything else).
fn weight(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // The non-digit prefix, byte by byte.
        loop {
            let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
            let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            match weight(ca).cmp(&weight(cb)) {
                Ordering::Equal => {}
                o => return o,
            }
            a = &a[ca.is_some() as usize..];
            b = &b[cb.is_some() as usize..];
        }
        // The digit run, numerically (leading zeros ignored).
        let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let (da, db) = (trim_zeros(&a[..na]), trim_zeros(&b[..nb]));
        match da.len().cmp(&db.len()).then_with(|| da.cmp(db)) {
            Ordering::Equal => {}
            o => return o,
        }
        a = &a[na..];
        b = &b[nb..];
    }
    Ordering::Equal
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|&&c| c == b'0').count();
    &d[n..]
}

/// A relation of a dependency: `<<`, `<=`, `=`, `>=`, `>>` (and the obsolete `<`, `>`,
/// which mean `<=` and `>=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Relation {
    pub fn parse(s: &str) -> Option<Relation> {
        Some(match s {
            "<<" => Relation::Lt,
            "<=" | "<" => Relation::Le,
            "=" => Relation::Eq,
            ">=" | ">" => Relation::Ge,
            ">>" => Relation::Gt,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Lt => "<<",
            Relation::Le => "<=",
            Relation::Eq => "=",
            Relation::Ge => ">=",
            Relation::Gt => ">>",
        }
    }
    /// Whether `have REL want` holds.
    pub fn holds(self, have: &str, want: &str) -> bool {
        let o = compare(have, want);
        match self {
            Relation::Lt => o == Ordering::Less,
            Relation::Le => o != Ordering::Greater,
            Relation::Eq => o == Ordering::Equal,
            Relation::Ge => o != Ordering::Less,
            Relation::Gt => o == Ordering::Greater,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_as_dpkg_does() {
        // Pairs checked with `dpkg --compare-versions` (and the examples of Debian Policy).
        for (a, b, o) in [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0-0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0", "1.0+b1", Less),
            ("1.0a", "1.0+", Less),
            ("1:0.1", "2.0", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
            ("2.36-9+deb12u4", "2.34", Greater),
            ("15.8-0+deb12u1", "15.10-0+deb12u1", Less),
            ("1.2.3-1", "1.2.3-1.1", Less),
            ("001", "1", Equal),
            ("1.0-1~bpo12+1", "1.0-1", Less),
            ("7.88.1-10+deb12u5", "7.88.1-10", Greater),
            ("a", "b", Less),
            ("1.0.0", "1.0", Greater),
        ] {
            assert_eq!(compare(a, b), o, "{a} vs {b}");
            assert_eq!(compare(b, a), o.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn relations_hold_as_in_dependencies() {
        assert!(Relation::Ge.holds("2.36-9", "2.34"));
        assert!(!Relation::Lt.holds("2.36", "2.36"));
        assert!(Relation::Le.holds("2.36", "2.36"));
        assert!(Relation::Gt.holds("2:1", "1:9"));
        assert!(Relation::Eq.holds("1.0-0", "1.0"));
        assert_eq!(Relation::parse(">"), Some(Relation::Ge));
    }
}
