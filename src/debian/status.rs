//! dpkg's database in the image (`/var/lib/dpkg`): the `status` file with an entry per
//! installed package (its control paragraph with `Status: install ok installed` after
//! `Package`, as dpkg writes it), sorted by name as dpkg sorts it, and the `info/PKG.list`
//! (every path the package installed) and the package's other control members
//! (`md5sums`, `conffiles`, maintainer scripts, `triggers`…) beside it. `dpkg -l`,
//! `dpkg-query --admindir` and image scanners read these.

use super::control::{self, Paragraph};

pub const STATUS: &str = "var/lib/dpkg/status";
pub const INFO: &str = "var/lib/dpkg/info";

/// The status entry of a package from its control paragraph.
pub fn entry(control: &Paragraph) -> Paragraph {
    let mut p = control.clone();
    p.fields.retain(|(k, _)| !k.eq_ignore_ascii_case("Status"));
    p.set("Status", "install ok installed", Some("Package"));
    p
}

/// The name dpkg gives a package's files under `info/`: `NAME`, or `NAME:ARCH` for a
/// `Multi-Arch: same` package.
pub fn info_name(control: &Paragraph) -> String {
    let name = control.get("Package").unwrap_or("");
    match (control.get("Multi-Arch"), control.get("Architecture")) {
        (Some("same"), Some(arch)) => format!("{name}:{arch}"),
        _ => name.to_string(),
    }
}

/// The status file after adding `added` to `base` (an existing status file's text, or
/// empty): an entry of `base` for a package of `added` is replaced.
pub fn merged(base: &str, added: &[Paragraph]) -> Result<String, String> {
    let key = |p: &Paragraph| {
        (
            p.get("Package").unwrap_or("").to_string(),
            p.get("Architecture").unwrap_or("").to_string(),
        )
    };
    let new: std::collections::BTreeSet<String> = added
        .iter()
        .map(|p| p.get("Package").unwrap_or("").to_string())
        .collect();
    let mut all: Vec<Paragraph> = control::parse(base)?
        .into_iter()
        .filter(|p| !new.contains(p.get("Package").unwrap_or("")))
        .collect();
    all.extend(added.iter().cloned());
    all.sort_by_key(key);
    Ok(all
        .iter()
        .map(|p| p.render())
        .collect::<Vec<_>>()
        .join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_entries_sorted_replacing_the_old_ones() {
        let base = "Package: zlib1g\nStatus: install ok installed\nVersion: 1\n\nPackage: libc6\nStatus: install ok installed\nVersion: 2.36\n";
        let c = control::parse("Package: libpq5\nVersion: 15\nArchitecture: amd64\nMulti-Arch: same\n\nPackage: libc6\nVersion: 2.37\n").unwrap();
        let added: Vec<_> = c.iter().map(entry).collect();
        let out = merged(base, &added).unwrap();
        assert_eq!(
            out,
            "Package: libc6\nStatus: install ok installed\nVersion: 2.37\n\nPackage: libpq5\nStatus: install ok installed\nVersion: 15\nArchitecture: amd64\nMulti-Arch: same\n\nPackage: zlib1g\nStatus: install ok installed\nVersion: 1\n"
        );
        assert_eq!(info_name(&c[0]), "libpq5:amd64");
        assert_eq!(info_name(&c[1]), "libc6");
    }
}
