//! Choosing the packages to install: the requested names and, transitively, what their
//! `Pre-Depends` and `Depends` need (Debian Policy §7.2), against what is installed already.
//!
//! A dependency is satisfied by an installed or chosen package of that name whose version
//! fits, or by one that `Provides` the name (a versioned dependency only by a versioned
//! `Provides` that fits, §7.5). An unsatisfied one takes the first of its alternatives the
//! index can satisfy — one whose own dependencies are met already if there is such, else the
//! first — the newest fitting version of a real package before a provider.
//! `Conflicts`, `Breaks` and `Recommends` are not considered.

use super::control::{Atom, Clause};
use super::index::{Index, Package};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Why a request cannot be resolved.
#[derive(Debug, PartialEq)]
pub enum Unresolved {
    /// A requested name the index does not have (nor any package providing it).
    Unknown { name: String, closest: Vec<String> },
    /// A dependency no package can satisfy; `chain` goes from the package that needs it to
    /// the requested one.
    Unsatisfiable {
        need: String,
        have: Vec<String>,
        chain: Vec<String>,
    },
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unresolved::Unknown { name, closest } => {
                write!(f, "no package `{name}`")?;
                if !closest.is_empty() {
                    write!(f, " (closest names: {})", closest.join(", "))?;
                }
                Ok(())
            }
            Unresolved::Unsatisfiable { need, have, chain } => {
                write!(
                    f,
                    "cannot satisfy `{need}`, needed by {}",
                    chain.join(" ← ")
                )?;
                if have.is_empty() {
                    write!(f, ": no package of that name or providing it")
                } else {
                    write!(f, ": the archive has only {}", have.join(", "))
                }
            }
        }
    }
}

/// What is installed or chosen so far: real packages by name, and what they provide.
#[derive(Default)]
struct World {
    real: BTreeMap<String, String>,
    provided: BTreeMap<String, Vec<Option<String>>>,
}

impl World {
    fn add(&mut self, p: &Package) {
        self.real.insert(p.name.clone(), p.version.clone());
        for a in &p.provides {
            self.provided
                .entry(a.name.clone())
                .or_default()
                .push(a.version.as_ref().map(|(_, v)| v.clone()));
        }
    }
    fn satisfies(&self, a: &Atom) -> bool {
        let real = self.real.get(&a.name).is_some_and(|v| fits(a, Some(v)));
        real || self
            .provided
            .get(&a.name)
            .is_some_and(|vs| vs.iter().any(|v| fits(a, v.as_deref())))
    }
}

/// Whether `version` (`None`: an unversioned provide) meets the atom's constraint.
fn fits(a: &Atom, version: Option<&str>) -> bool {
    match (&a.version, version) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some((rel, want)), Some(have)) => rel.holds(have, want),
    }
}

/// Resolves `wanted` against `installed`: the packages to add (sorted by name), without
/// those already installed in a fitting version. `labels` says how each requested name is
/// called in a chain (e.g. "libpq5 (requested)").
pub fn resolve(
    ix: &Index,
    installed: &[Package],
    wanted: &[String],
) -> Result<Vec<Package>, Unresolved> {
    let mut world = World::default();
    for p in installed {
        world.add(p);
    }
    let mut chosen: BTreeMap<String, Package> = BTreeMap::new();
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for w in wanted {
        let atom = Atom {
            name: w.clone(),
            version: None,
        };
        if world.satisfies(&atom) || chosen.contains_key(w) {
            continue;
        }
        let Some(p) = candidate(ix, &atom) else {
            return Err(Unresolved::Unknown {
                name: w.clone(),
                closest: ix.closest(w, 4),
            });
        };
        if chosen.contains_key(&p.name) {
            continue;
        }
        world.add(&p);
        queue.push_back(p.name.clone());
        chosen.insert(p.name.clone(), p);
    }
    let mut seen = BTreeSet::new();
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let deps: Vec<Clause> = {
            let p = &chosen[&name];
            p.pre_depends.iter().chain(&p.depends).cloned().collect()
        };
        for clause in deps {
            if clause.iter().any(|a| world.satisfies(a)) {
                continue;
            }
            // The first alternative whose own dependencies are met already (as debootstrap
            // takes `usr-is-merged` over `usrmerge` and its perl), else the first there is.
            let options: Vec<Package> = clause.iter().filter_map(|a| candidate(ix, a)).collect();
            let settled = options.iter().position(|p| {
                p.pre_depends
                    .iter()
                    .chain(&p.depends)
                    .all(|c| c.iter().any(|a| world.satisfies(a)))
            });
            let Some(p) = options.get(settled.unwrap_or(0)).cloned() else {
                let mut chain = vec![name.clone()];
                let mut at = name.clone();
                while let Some(up) = parent.get(&at) {
                    chain.push(up.clone());
                    at = up.clone();
                }
                let last = chain.pop().unwrap_or_default();
                chain.push(format!("{last} (requested)"));
                let have = clause
                    .iter()
                    .flat_map(|a| ix.by_name.get(&a.name).into_iter().flatten())
                    .map(|p| p.label())
                    .collect();
                return Err(Unresolved::Unsatisfiable {
                    need: clause
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(" | "),
                    have,
                    chain,
                });
            };
            parent.insert(p.name.clone(), name.clone());
            world.add(&p);
            queue.push_back(p.name.clone());
            chosen.insert(p.name.clone(), p);
        }
    }
    Ok(chosen.into_values().collect())
}

/// The package the index offers for `a`: the newest fitting version of that name, else the
/// first package providing it in a fitting version.
fn candidate(ix: &Index, a: &Atom) -> Option<Package> {
    if let Some(p) = ix
        .by_name
        .get(&a.name)
        .and_then(|v| v.iter().find(|p| fits(a, Some(&p.version))))
    {
        return Some(p.clone());
    }
    ix.providers.get(&a.name)?.iter().find_map(|(name, v)| {
        fits(a, v.as_deref())
            .then(|| ix.newest(name).cloned())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ix() -> Index {
        Index::parse(
            "Package: app\nVersion: 1\nArchitecture: all\nDepends: libx (>= 2), awk, debconf (>= 0.5) | debconf-2.0, usrmerge | usr-is-merged\nPre-Depends: libc6 (>= 2.34)\n\n\
Package: usrmerge\nVersion: 1\nArchitecture: all\nDepends: perl\n\n\
Package: perl\nVersion: 5\nArchitecture: amd64\n\n\
Package: usr-is-merged\nVersion: 1\nArchitecture: all\n\n\
Package: libx\nVersion: 2.1\nArchitecture: amd64\nDepends: libc6\n\n\
Package: libx\nVersion: 1.9\nArchitecture: amd64\n\n\
Package: mawk\nVersion: 1.3\nArchitecture: amd64\nProvides: awk\n\n\
Package: cdebconf\nVersion: 0.2\nArchitecture: amd64\nProvides: debconf-2.0\n\n\
Package: libc6\nVersion: 2.36-9\nArchitecture: amd64\n\n\
Package: needsnew\nVersion: 1\nArchitecture: amd64\nDepends: libx (>= 3)\n\n\
Package: top\nVersion: 1\nArchitecture: amd64\nDepends: needsnew\n",
            "amd64",
        )
        .unwrap()
    }

    fn names(v: &[Package]) -> Vec<String> {
        v.iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect()
    }

    #[test]
    fn takes_versions_alternatives_and_providers_leaving_out_what_is_installed() {
        let installed = Index::parse(
            "Package: libc6\nVersion: 2.36-9\nArchitecture: amd64\n",
            "amd64",
        )
        .unwrap()
        .newest("libc6")
        .cloned()
        .unwrap();
        let got = resolve(&ix(), &[installed], &["app".into()]).unwrap();
        assert_eq!(
            names(&got),
            [
                "app 1",
                "cdebconf 0.2",
                "libx 2.1",
                "mawk 1.3",
                "usr-is-merged 1"
            ]
        );
        // Without the base's libc6 it is chosen too.
        let got = resolve(&ix(), &[], &["app".into()]).unwrap();
        assert!(names(&got).contains(&"libc6 2.36-9".to_string()));
        // Already installed: nothing to add.
        let all = resolve(&ix(), &[], &["app".into()]).unwrap();
        assert_eq!(resolve(&ix(), &all, &["app".into()]).unwrap(), vec![]);
    }

    #[test]
    fn names_the_unknown_package_and_the_unsatisfiable_chain() {
        let e = resolve(&ix(), &[], &["lib".into()]).unwrap_err();
        assert!(
            matches!(&e, Unresolved::Unknown { closest, .. } if closest.contains(&"libx".to_string())),
            "{e:?}"
        );
        let e = resolve(&ix(), &[], &["top".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot satisfy `libx (>= 3)`, needed by needsnew ← top (requested): the archive has only libx 2.1, libx 1.9"
        );
    }
}
