//! PEP 425 compatibility tags of the target interpreter and platform, best first.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The C library of the target, which decides manylinux vs musllinux wheels.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "flavour", rename_all = "lowercase")]
pub enum Libc {
    Glibc { major: u32, minor: u32 },
    Musl { major: u32, minor: u32 },
}

impl std::fmt::Display for Libc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Libc::Glibc { major, minor } => write!(f, "glibc {major}.{minor}"),
            Libc::Musl { major, minor } => write!(f, "musl {major}.{minor}"),
        }
    }
}

/// Platform tags for Linux on `arch` (PEP 600 manylinux, PEP 656 musllinux), best first.
pub fn platforms(libc: &Libc, arch: &str) -> Vec<String> {
    let mut out = Vec::new();
    match *libc {
        Libc::Glibc { major: 2, minor } => {
            let oldest = if arch == "x86_64" || arch == "i686" {
                5
            } else {
                17
            };
            for m in (oldest..=minor).rev() {
                out.push(format!("manylinux_2_{m}_{arch}"));
                let legacy = match m {
                    17 if [
                        "x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x",
                    ]
                    .contains(&arch) =>
                    {
                        Some("manylinux2014")
                    }
                    12 if arch == "x86_64" || arch == "i686" => Some("manylinux2010"),
                    5 if arch == "x86_64" || arch == "i686" => Some("manylinux1"),
                    _ => None,
                };
                if let Some(l) = legacy {
                    out.push(format!("{l}_{arch}"));
                }
            }
        }
        Libc::Glibc { .. } => {}
        Libc::Musl { major, minor } => {
            for m in (0..=minor).rev() {
                out.push(format!("musllinux_{major}_{m}_{arch}"));
            }
        }
    }
    // Locally built wheels (`pip wheel` without auditwheel) carry the plain platform tag.
    out.push(format!("linux_{arch}"));
    out
}

/// Every tag the target accepts, with its preference (lower is better).
#[derive(Clone, Debug)]
pub struct Tags {
    rank: HashMap<String, usize>,
    ordered: Vec<String>,
    platforms: Vec<String>,
    py_minor: u32,
}

impl Tags {
    /// Tags for CPython 3.`py_minor` on Linux with `libc` on `arch`, in the order pip prefers.
    pub fn cpython(py_minor: u32, libc: &Libc, arch: &str) -> Tags {
        let plats = platforms(libc, arch);
        let cp = format!("cp3{py_minor}");
        let mut ordered = Vec::new();
        for abi in [cp.as_str(), "abi3", "none"] {
            for p in &plats {
                ordered.push(format!("{cp}-{abi}-{p}"));
            }
        }
        for m in (2..py_minor).rev() {
            for p in &plats {
                ordered.push(format!("cp3{m}-abi3-{p}"));
            }
        }
        let pys: Vec<String> = std::iter::once(format!("py3{py_minor}"))
            .chain(std::iter::once("py3".to_string()))
            .chain((0..py_minor).rev().map(|m| format!("py3{m}")))
            .collect();
        for py in &pys {
            for p in &plats {
                ordered.push(format!("{py}-none-{p}"));
            }
        }
        ordered.push(format!("{cp}-none-any"));
        for py in &pys {
            ordered.push(format!("{py}-none-any"));
        }
        let rank = ordered
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        Tags {
            rank,
            ordered,
            platforms: plats,
            py_minor,
        }
    }

    /// The preference of one `py-abi-plat` tag, if the target accepts it.
    pub fn rank(&self, tag: &str) -> Option<usize> {
        self.rank.get(tag).copied()
    }

    /// The best preference among a wheel's (expanded) tags.
    pub fn best<'a>(&self, tags: impl IntoIterator<Item = &'a String>) -> Option<usize> {
        tags.into_iter().filter_map(|t| self.rank(t)).min()
    }

    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// A one-line description for error messages.
    pub fn describe(&self) -> String {
        let p = &self.platforms;
        let plats = if p.len() > 3 {
            format!("{} … {}, {}", p[0], p[p.len() - 2], p[p.len() - 1])
        } else {
            p.join(", ")
        };
        format!(
            "{} tags: interpreter cp3{m} (ABIs cp3{m}, abi3, none; py3x-none), platforms {plats} or any; best {}",
            self.len(),
            self.ordered[0],
            m = self.py_minor
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLIBC_236: Libc = Libc::Glibc {
        major: 2,
        minor: 36,
    };

    #[test]
    fn cpython_311_on_debian_bookworm() {
        let t = Tags::cpython(11, &GLIBC_236, "x86_64");
        let r = |s: &str| t.rank(s);
        let order = [
            "cp311-cp311-manylinux_2_36_x86_64",
            "cp311-cp311-manylinux_2_17_x86_64",
            "cp311-cp311-manylinux2014_x86_64",
            "cp311-cp311-manylinux1_x86_64",
            "cp311-cp311-linux_x86_64",
            "cp311-abi3-manylinux_2_28_x86_64",
            "cp310-abi3-manylinux_2_17_x86_64",
            "cp32-abi3-manylinux1_x86_64",
            "py3-none-manylinux_2_17_x86_64",
            "cp311-none-any",
            "py311-none-any",
            "py3-none-any",
            "py30-none-any",
        ];
        for w in order.windows(2) {
            let (a, b) = (r(w[0]).expect(w[0]), r(w[1]).expect(w[1]));
            assert!(a < b, "{} should beat {}", w[0], w[1]);
        }
        for no in [
            "cp312-cp312-manylinux_2_17_x86_64",
            "cp310-cp310-manylinux_2_17_x86_64",
            "cp311-cp311-manylinux_2_37_x86_64",
            "cp311-cp311-musllinux_1_1_x86_64",
            "cp311-cp311-manylinux_2_17_aarch64",
            "cp311-cp311-win_amd64",
            "py2-none-any",
            "cp311-abi3-macosx_11_0_arm64",
        ] {
            assert_eq!(r(no), None, "{no} must not be accepted");
        }
    }

    #[test]
    fn python_313_from_any_host_and_aarch64_has_no_old_manylinux() {
        let t = Tags::cpython(13, &GLIBC_236, "aarch64");
        assert!(t.rank("cp313-cp313-manylinux_2_17_aarch64").is_some());
        assert!(t.rank("cp313-cp313-manylinux2014_aarch64").is_some());
        assert!(t.rank("cp313-cp313-manylinux_2_12_aarch64").is_none());
        assert!(t.rank("cp311-cp311-manylinux_2_17_aarch64").is_none());
        assert!(t.rank("cp311-abi3-manylinux_2_17_aarch64").is_some());
    }

    #[test]
    fn musllinux() {
        let t = Tags::cpython(12, &Libc::Musl { major: 1, minor: 2 }, "x86_64");
        assert!(
            t.rank("cp312-cp312-musllinux_1_2_x86_64").unwrap()
                < t.rank("cp312-cp312-musllinux_1_1_x86_64").unwrap()
        );
        assert!(t.rank("cp312-cp312-manylinux_2_17_x86_64").is_none());
        assert!(t.describe().contains("musllinux_1_2_x86_64"));
    }
}
