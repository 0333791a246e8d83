//! Debian packages as image content: `debian = { packages = [...] }` layers (and, through
//! `base`, bases built from the archive). One noun per file: `version` (Policy version
//! order), `control` (deb822 paragraphs, relationship fields), `release` (the signed
//! `InRelease`), `index` (`Packages`, dpkg `status`), `resolve` (dependencies), `mirror`
//! (which mirror), `archive` (fetching, verified, into the store), `deb` (reading a `.deb`),
//! `status` (dpkg's database in the image), `unpack` (packages → layer entries) and `layer`
//! (the recipe).
//!
//! Maintainer scripts are not run. What is reproduced: the packages' files, dpkg's status
//! and `info/` files. Library packages need nothing more (the dynamic loader searches the
//! multiarch directories without `ld.so.cache`); packages with `preinst`/`postinst` scripts
//! are named in a note after the build.

pub mod archive;
pub mod bootstrap;
pub mod contents;
pub mod control;
pub mod deb;
pub mod index;
pub mod layer;
pub mod mirror;
pub mod release;
pub mod resolve;
pub mod status;
pub mod unpack;
pub mod version;

use crate::image::Platform;
use crate::usage;
use anyhow::Result;

/// Debian's name for the architecture of `p`.
pub fn architecture(p: &Platform) -> Result<String> {
    Ok(match (p.architecture.as_str(), p.variant.as_deref()) {
        ("amd64", _) => "amd64",
        ("arm64", _) => "arm64",
        ("arm", Some("v7")) | ("arm", None) => "armhf",
        ("arm", Some("v5")) => "armel",
        ("386", _) => "i386",
        ("ppc64le", _) => "ppc64el",
        ("s390x", _) => "s390x",
        ("mips64le", _) => "mips64el",
        _ => return Err(usage!("platform {p} has no Debian architecture")),
    }
    .to_string())
}

/// The release a Debian `/etc/os-release` names (`VERSION_CODENAME`), or why it is not one.
pub fn release_of(os_release: &str) -> Result<String, String> {
    let field = |k: &str| {
        os_release.lines().find_map(|l| {
            l.strip_prefix(k)
                .and_then(|r| r.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    };
    let id = field("ID").unwrap_or_default();
    if id != "debian" {
        return Err(format!(
            "its /etc/os-release says ID={}",
            if id.is_empty() { "(none)" } else { &id }
        ));
    }
    field("VERSION_CODENAME")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            "its /etc/os-release has no VERSION_CODENAME (a testing or sid image?)".into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_release_of_a_debian_os_release() {
        let deb = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(release_of(deb).unwrap(), "bookworm");
        let alpine = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.0\n";
        assert_eq!(
            release_of(alpine).unwrap_err(),
            "its /etc/os-release says ID=alpine"
        );
    }
}
