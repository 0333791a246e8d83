//! Image references as docker writes them: `[host[:port]/]path[:tag][@sha256:…]`.
//!
//! Normalisation follows docker: a first component with a `.` or `:`, `localhost`, or an
//! upper-case letter is a registry host; otherwise the image is on Docker Hub (`docker.io`), and a
//! single-component Hub name gets `library/`. `index.docker.io` is `docker.io`, whose API host is
//! `registry-1.docker.io`.

use crate::digest::Digest;
use std::fmt;

pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port), `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path on that registry, e.g. `library/python`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Reference, String> {
        let bad = |why: String| Err(format!("`{s}` is not a valid image reference: {why}"));
        if s.is_empty() {
            return bad("it is empty".into());
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return bad(format!(
                "references have no scheme (`{scheme}://`); write host/repository:tag — imgbuild \
                 uses HTTPS, and plain HTTP only for loopback hosts or hosts listed in \
                 `insecure_registries` / `--insecure`"
            ));
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => match Digest::parse(d) {
                Ok(d) => (n, Some(d)),
                Err(e) => return bad(e),
            },
            None => (s, None),
        };
        let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                Some(name[last_slash + i + 1..].to_string()),
            ),
            None => (name, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return bad(format!(
                    "tag `{t}` must be 1–128 characters of letters, digits, `_`, `.` and `-`, \
                     not starting with `.` or `-`"
                ));
            }
        }
        let (registry, repository) = split_name(name);
        if !valid_host(&registry) {
            return bad(format!("registry host `{registry}` is malformed"));
        }
        if repository.is_empty() {
            return bad("the repository name is empty".into());
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return bad(format!("repository `{repository}` must be lower case"));
        }
        if let Some(c) = repository.split('/').find(|c| !valid_component(c)) {
            return bad(format!(
                "path component `{c}` must be lower-case letters and digits, separated by \
                 `.`, `_`, `__` or dashes"
            ));
        }
        if registry.len() + 1 + repository.len() > 255 {
            return bad("the name is longer than 255 characters".into());
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host the API is reached at (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository@digest`.
    pub fn with_digest(&self, d: &Digest) -> String {
        format!("{}@{d}", self.name())
    }

    /// What to ask the registry for: the digest if there is one, else the tag (`latest` by default).
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The one registry-name rule: Docker Hub's names (`docker.io`, `index.docker.io`,
/// `registry-1.docker.io`) are `docker.io`; any other host is kept as written (case too: an
/// upper-case letter is what makes `Myhost` in `Myhost/x` a host, as in docker).
pub fn normalise_registry(host: &str) -> String {
    match host {
        DOCKER_HUB | "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

/// A repository name without tag or digest as `registry/path`, with docker's defaults:
/// `python` → `docker.io/library/python`, `acme/api` → `docker.io/acme/api`,
/// `index.docker.io/acme/api` → `docker.io/acme/api`, `127.0.0.1:5000/a` unchanged.
pub fn normalise_repository(repo: &str) -> String {
    let (registry, path) = split_name(repo);
    format!("{registry}/{path}")
}

/// A registry host as given to `imgbuild login` / `logout` (a scheme, a trailing `/` and a
/// `/v1` or `/v2` API suffix allowed), normalised like the registry of a reference.
pub fn login_host(h: &str) -> anyhow::Result<String> {
    let h = h
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let h = h.strip_suffix("/v1").or(h.strip_suffix("/v2")).unwrap_or(h);
    let r = Reference::parse(&format!("{h}/x")).map_err(|_| {
        crate::usage!("`{h}` is not a registry host (expected e.g. registry.example.com:5000)")
    })?;
    // `docker.io` (and its other names) is a host too: its one-part names get `library/`.
    let hub = r.registry == DOCKER_HUB && r.repository == "library/x";
    if r.repository != "x" && !hub {
        return Err(crate::usage!(
            "`{h}` is not a registry host (expected e.g. registry.example.com:5000)"
        ));
    }
    Ok(r.registry)
}

/// Whether the first component of a name is a registry host, as docker decides: it has a `.`
/// or `:`, is `localhost`, or has an upper-case letter.
fn is_host(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

/// A name (no tag or digest) as its normalised registry and repository path (`library/` added
/// to a single-component Docker Hub name). Not validated.
fn split_name(name: &str) -> (String, String) {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if is_host(first) => (normalise_registry(first), rest),
        _ => (DOCKER_HUB.to_string(), name),
    };
    let path = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    (registry, path)
}

pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// The host without its port (and without the brackets of an IPv6 address).
pub fn host_only(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

/// Loopback hosts, the only ones reached over plain HTTP without being listed as insecure.
pub fn is_loopback(registry: &str) -> bool {
    let h = host_only(registry);
    h == "localhost"
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>()
            .map(|a| a.is_loopback())
            .unwrap_or(false)
}

pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_host(h: &str) -> bool {
    if let Some(rest) = h.strip_prefix('[') {
        let Some((ip, port)) = rest.split_once(']') else {
            return false;
        };
        return ip.parse::<std::net::Ipv6Addr>().is_ok()
            && (port.is_empty()
                || port
                    .strip_prefix(':')
                    .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())));
    }
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn docker_hub_short_names_are_normalised() {
        let r = p("python:3.13-slim");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/python");
        assert_eq!(r.tag.as_deref(), Some("3.13-slim"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.to_string(), "docker.io/library/python:3.13-slim");
        let r = p("acme/api");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "acme/api")
        );
        assert_eq!(r.target(), "latest");
        assert_eq!(p("index.docker.io/library/busybox").registry, "docker.io");
        assert_eq!(p("docker.io/busybox").repository, "library/busybox");
    }

    #[test]
    fn hosts_are_recognised_by_dot_colon_localhost_or_upper_case() {
        let r = p("registry.example.com/acme/job-agent-api:1.2");
        assert_eq!(r.registry, "registry.example.com");
        assert_eq!(r.repository, "acme/job-agent-api");
        let r = p("127.0.0.1:5000/busybox:1");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(p("localhost/x").registry, "localhost");
        assert_eq!(p("Myhost/x").registry, "Myhost");
        assert_eq!(p("[::1]:5000/a/b").registry, "[::1]:5000");
        assert_eq!(p("localhost:5000/a").tag, None);
    }

    #[test]
    fn digests_and_tags() {
        let d = Digest::of(b"x");
        let r = p(&format!("127.0.0.1:5000/a/b:t@{d}"));
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.digest.as_ref(), Some(&d));
        assert_eq!(r.target(), d.to_string());
        assert_eq!(r.with_digest(&d), format!("127.0.0.1:5000/a/b@{d}"));
        let r = p(&format!("a/b@{d}"));
        assert_eq!(r.tag, None);
    }

    #[test]
    fn bad_references_say_why() {
        for (s, why) in [
            ("", "empty"),
            ("Host/Repo", "lower case"),
            ("a/b:-x", "tag"),
            ("a/b@sha256:zz", "digest"),
            ("a/b@md5:00", "only sha256"),
            ("http://127.0.0.1/a", "no scheme"),
            ("a//b", "path component"),
            ("a/b-", "path component"),
            ("example.com:99999/a", "malformed"),
        ] {
            let e = Reference::parse(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn registry_names_have_one_rule() {
        for h in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert_eq!(normalise_registry(h), "docker.io", "{h}");
        }
        assert_eq!(normalise_registry("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(normalise_registry("Myhost"), "Myhost");
        assert_eq!(
            normalise_registry("registry.example.com"),
            "registry.example.com"
        );
        // The references' registries follow it.
        assert_eq!(p("registry-1.docker.io/acme/api").registry, "docker.io");
        assert_eq!(
            p("registry-1.docker.io/busybox").name(),
            "docker.io/library/busybox"
        );
    }

    #[test]
    fn repositories_get_dockers_defaults() {
        for (repo, want) in [
            ("python", "docker.io/library/python"),
            ("acme/api", "docker.io/acme/api"),
            ("index.docker.io/acme/api", "docker.io/acme/api"),
            ("registry-1.docker.io/acme/api", "docker.io/acme/api"),
            ("docker.io/acme/api", "docker.io/acme/api"),
            ("docker.io/busybox", "docker.io/library/busybox"),
            ("localhost/x", "localhost/x"),
            ("localhost:5000/a/b", "localhost:5000/a/b"),
            ("reg.io:443/a", "reg.io:443/a"),
            ("Myhost/x", "Myhost/x"),
            ("a/b/c", "docker.io/a/b/c"),
        ] {
            assert_eq!(normalise_repository(repo), want, "{repo}");
        }
        // The same as a parsed reference's name.
        for name in [
            "python",
            "acme/api",
            "index.docker.io/acme/api",
            "[::1]:5000/a/b",
        ] {
            assert_eq!(normalise_repository(name), p(name).name(), "{name}");
        }
    }

    #[test]
    fn login_hosts() {
        assert_eq!(
            login_host("https://registry.example.com:5000/v2/").unwrap(),
            "registry.example.com:5000"
        );
        assert_eq!(login_host(" 127.0.0.1:5000 ").unwrap(), "127.0.0.1:5000");
        assert_eq!(login_host("http://localhost/v1").unwrap(), "localhost");
        // Docker Hub, under each of its names.
        for hub in [
            "docker.io",
            "index.docker.io",
            "https://index.docker.io/v1/",
            "registry-1.docker.io",
        ] {
            assert_eq!(login_host(hub).unwrap(), "docker.io", "{hub}");
        }
        for bad in ["", "a/b", "bad host", "example.com:99999"] {
            let e = login_host(bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2, "{bad}");
            assert!(
                e.to_string().contains("is not a registry host"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(!is_loopback("registry.example.com:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert_eq!(host_only("example.com:443"), "example.com");
    }
}
