//! Registry authentication: `WWW-Authenticate` challenges (Basic, Bearer) and the Bearer token
//! exchange (docker's token protocol: `GET realm?service=…&scope=…` with Basic credentials, or an
//! OAuth2 refresh-token POST for identity tokens). Tokens are kept per scope set until they expire.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        error: Option<String>,
    },
}

/// `repository:NAME:ACTIONS`, e.g. `repository:acme/api:pull,push`.
pub fn scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

/// Parses a `WWW-Authenticate` header into its challenges (unknown schemes are left out).
pub fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    for (scheme, params) in split_challenges(header) {
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => out.push(Challenge::Basic {
                realm: get("realm"),
            }),
            "bearer" => {
                if let Some(realm) = get("realm") {
                    out.push(Challenge::Bearer {
                        realm,
                        service: get("service"),
                        scope: get("scope"),
                        error: get("error"),
                    })
                }
            }
            _ => {}
        }
    }
    out
}

/// RFC 7235 challenges: `scheme param=value, param="quoted, value", scheme2 …`.
fn split_challenges(h: &str) -> Vec<(String, Vec<(String, String)>)> {
    let b = h.as_bytes();
    let mut i = 0;
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b',' | b'=' | b'"') {
            *i += 1;
        }
        h[s..*i].to_string()
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let t = token(&mut i);
        if t.is_empty() {
            i += 1;
            continue;
        }
        // Look ahead past spaces: `=` means a parameter of the current challenge.
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let v = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let c = h[i..].chars().next().unwrap();
                    v.push(c);
                    i += c.len_utf8();
                }
                i += 1;
                v
            } else {
                token(&mut i)
            };
            out.last_mut().unwrap().1.push((t, v));
        } else {
            out.push((t, Vec::new()));
        }
    }
    out
}

/// Tokens by scope set, each with the instant it stops being used.
#[derive(Default, Debug)]
pub struct TokenCache {
    tokens: HashMap<String, (String, Instant)>,
}

impl TokenCache {
    pub fn key(scopes: &[String]) -> String {
        let mut s: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        s.sort();
        s.dedup();
        s.join(" ")
    }
    pub fn get(&self, scopes: &[String]) -> Option<String> {
        let (t, until) = self.tokens.get(&Self::key(scopes))?;
        (Instant::now() < *until).then(|| t.clone())
    }
    /// Keeps a token until shortly before it expires (registries default to 60 s).
    pub fn put(&mut self, scopes: &[String], token: String, expires_in: Option<u64>) {
        let life = Duration::from_secs(expires_in.unwrap_or(60).max(10));
        let margin = Duration::from_secs(5).min(life / 4);
        self.tokens
            .insert(Self::key(scopes), (token, Instant::now() + life - margin));
    }
    pub fn forget(&mut self, scopes: &[String]) {
        self.tokens.remove(&Self::key(scopes));
    }
}

/// The token endpoint's answer.
#[derive(serde::Deserialize, Debug)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

/// What a client knows about the registry's authentication.
#[derive(Default)]
pub struct Session {
    pub pinged: bool,
    pub challenge: Option<Challenge>,
    pub tokens: TokenCache,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
                error: None,
            }]
        );
    }

    #[test]
    fn parses_basic_several_challenges_quotes_and_errors() {
        let c = parse_www_authenticate(r#"Basic realm="imgbuild-test""#);
        assert_eq!(
            c,
            vec![Challenge::Basic {
                realm: Some("imgbuild-test".into())
            }]
        );
        let c = parse_www_authenticate(
            r#"Basic realm="a, \"b\"", Bearer realm=https://t.example/token, service=reg, error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0],
            Challenge::Basic {
                realm: Some("a, \"b\"".into())
            }
        );
        assert_eq!(
            c[1],
            Challenge::Bearer {
                realm: "https://t.example/token".into(),
                service: Some("reg".into()),
                scope: None,
                error: Some("insufficient_scope".into()),
            }
        );
        assert!(parse_www_authenticate("Negotiate").is_empty());
        assert!(
            parse_www_authenticate("Bearer service=x").is_empty(),
            "no realm"
        );
        assert!(parse_www_authenticate("").is_empty());
    }

    #[test]
    fn tokens_are_reused_per_scope_set_until_expiry() {
        let mut c = TokenCache::default();
        let a = vec![scope("x", "pull,push"), scope("y", "pull")];
        let b = vec![scope("y", "pull"), scope("x", "pull,push")];
        c.put(&a, "t1".into(), Some(300));
        assert_eq!(c.get(&b).as_deref(), Some("t1"), "order does not matter");
        assert_eq!(c.get(&[scope("x", "pull")]), None);
        c.put(&[scope("z", "pull")], "t2".into(), Some(0));
        assert!(c.get(&[scope("z", "pull")]).is_some(), "at least 10 s");
        c.forget(&a);
        assert_eq!(c.get(&a), None);
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"at","expires_in":120}"#).unwrap();
        assert_eq!(r.token().as_deref(), Some("at"));
    }
}
