//! Which Debian mirror to read: `debian_mirror` in `[defaults]` of imgbuild.toml, else
//! `IMGBUILD_DEBIAN_MIRROR`, else the host's apt sources (`/etc/apt/sources.list.d/*.sources`
//! in deb822 form, then `/etc/apt/sources.list` and `*.list` one-line entries): the first
//! `deb` URI that lists the release among its suites, else the first signed by the Debian
//! archive keyring; security archives (`…-security`) are skipped.

use crate::error::Hint;
use crate::usage;
use anyhow::Result;
use std::path::Path;

/// The mirror to use for `release`.
pub fn choose(configured: Option<&str>, release: &str) -> Result<String> {
    if let Some(m) = configured.filter(|m| !m.is_empty()) {
        return checked(m, "`debian_mirror` in imgbuild.toml");
    }
    if let Ok(m) = std::env::var("IMGBUILD_DEBIAN_MIRROR") {
        if !m.is_empty() {
            return checked(&m, "IMGBUILD_DEBIAN_MIRROR");
        }
    }
    from_apt(Path::new("/etc/apt"), release).ok_or_else(|| {
        usage!("no Debian mirror: none is configured and the host's apt sources name none")
            .hint("set `debian_mirror = \"http://MIRROR/debian\"` in [defaults] of imgbuild.toml, or IMGBUILD_DEBIAN_MIRROR")
    })
}

fn checked(m: &str, from: &str) -> Result<String> {
    if !(m.starts_with("http://") || m.starts_with("https://")) {
        return Err(usage!(
            "Debian mirror `{m}` (from {from}) is not an http:// or https:// URL"
        ));
    }
    Ok(m.trim_end_matches('/').to_string())
}

/// One `deb` source of the apt configuration.
struct Source {
    uris: Vec<String>,
    suites: Vec<String>,
    debian_keyring: bool,
}

fn sources(etc_apt: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "sources"))
    {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let Ok(paras) = super::control::parse(&text) else {
            continue;
        };
        for p in paras {
            let words = |k: &str| -> Vec<String> {
                p.get(k)
                    .unwrap_or("")
                    .split_whitespace()
                    .map(String::from)
                    .collect()
            };
            if !words("Types").iter().any(|t| t == "deb") || p.get("Enabled") == Some("no") {
                continue;
            }
            out.push(Source {
                uris: words("URIs"),
                suites: words("Suites"),
                debian_keyring: p
                    .get("Signed-By")
                    .is_some_and(|s| s.contains("debian-archive")),
            });
        }
    }
    let lists = std::iter::once(etc_apt.join("sources.list")).chain(
        files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|x| x == "list")),
    );
    for f in lists {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut opts = String::new();
            let line = match (line.find('['), line.find(']')) {
                (Some(a), Some(b)) if a < b => {
                    opts = line[a..b].to_string();
                    format!("{}{}", &line[..a], &line[b + 1..])
                }
                _ => line.to_string(),
            };
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() >= 3 && w[0] == "deb" {
                out.push(Source {
                    uris: vec![w[1].to_string()],
                    suites: vec![w[2].to_string()],
                    debian_keyring: opts.contains("debian-archive"),
                });
            }
        }
    }
    out
}

/// The mirror the apt configuration under `etc_apt` uses for `release`.
pub fn from_apt(etc_apt: &Path, release: &str) -> Option<String> {
    let all = sources(etc_apt);
    let usable = |s: &&Source| {
        s.uris
            .iter()
            .any(|u| u.starts_with("http://") || u.starts_with("https://"))
            && !s.suites.iter().all(|x| x.ends_with("-security"))
    };
    let pick = all
        .iter()
        .filter(usable)
        .find(|s| s.suites.iter().any(|x| x == release))
        .or_else(|| all.iter().filter(usable).find(|s| s.debian_keyring))?;
    pick.uris
        .iter()
        .find(|u| !u.contains("-security"))
        .map(|u| u.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deb822_and_one_line_sources_skipping_security_and_others() {
        let d = tempfile::tempdir().unwrap();
        let sl = d.path().join("sources.list.d");
        std::fs::create_dir_all(&sl).unwrap();
        std::fs::write(
            sl.join("a-other.sources"),
            "Types: deb\nURIs: https://example.invalid/node\nSuites: nodistro\nComponents: main\n",
        )
        .unwrap();
        std::fs::write(
            sl.join("debian.sources"),
            "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://mirror.invalid/debian/\nSuites: bookworm bookworm-updates\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .unwrap();
        assert_eq!(
            from_apt(d.path(), "bookworm").as_deref(),
            Some("http://mirror.invalid/debian")
        );
        // Another release: the mirror signed by the Debian keyring.
        assert_eq!(
            from_apt(d.path(), "trixie").as_deref(),
            Some("http://mirror.invalid/debian")
        );
        let e = tempfile::tempdir().unwrap();
        std::fs::write(
            e.path().join("sources.list"),
            "# c\ndeb [arch=amd64] http://one.invalid/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            from_apt(e.path(), "bookworm").as_deref(),
            Some("http://one.invalid/debian")
        );
        assert!(checked("ftp://x", "test").is_err());
    }
}
