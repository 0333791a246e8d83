//! The `Client` for one registry host: its base URL and scheme (HTTPS, plain HTTP only for
//! loopback or listed hosts), authenticated sending (the session in `session.rs` supplies the
//! `Authorization` header), retries with backoff that honour `Retry-After`, URL redaction and
//! the mapping of transport failures and registry error documents to messages.

use super::auth::Session;
use super::credentials::{self, Lookup};
use super::options::Options;
use super::reference;
use crate::usage;
use anyhow::{anyhow, Result};
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION};
use reqwest::{StatusCode, Url};
use std::sync::Mutex;
use std::time::Duration;

const MAX_ATTEMPTS: u32 = 5;

/// One registry host: its base URL, credentials and authentication state.
pub struct Client {
    /// The registry as in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    pub(super) base: Url,
    pub(super) http: Http,
    pub(super) creds: Lookup,
    allow_http: Vec<String>,
    pub(super) session: Mutex<Session>,
}

/// Retry transient failures (5xx, 429, dropped connections) or send once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Yes,
    No,
}

/// Whether plain HTTP may be used for `registry`: loopback, or listed as insecure.
pub fn http_allowed(registry: &str, insecure: &[String]) -> bool {
    reference::is_loopback(registry)
        || insecure.iter().any(|h| {
            let h = h
                .trim()
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            h == registry || h == reference::host_only(registry)
        })
}

impl Client {
    pub fn new(registry: &str, opts: &Options) -> Result<Client> {
        let api = reference::api_host(registry);
        let scheme = if http_allowed(registry, &opts.insecure) {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!("{scheme}://{api}/"))
            .map_err(|e| usage!("registry `{registry}`: {e}"))?;
        let creds = credentials::lookup(&opts.env, registry, None);
        Ok(Client {
            registry: registry.to_string(),
            base,
            http: crate::http::client()?,
            creds,
            allow_http: opts.insecure.clone(),
            session: Mutex::new(Session::default()),
        })
    }

    /// Credentials for one repository (containers auth.json may scope them to a path).
    pub fn with_repository_credentials(mut self, repository: &str, opts: &Options) -> Client {
        self.creds = credentials::lookup(&opts.env, &self.registry, Some(repository));
        self
    }

    /// Uses exactly this credential (for `imgbuild login`, before it is stored).
    pub fn with_credential(mut self, c: credentials::Credential) -> Client {
        self.creds = Lookup {
            credential: Some(c),
            searched: vec![],
        };
        self
    }

    pub fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("registry paths are valid")
    }

    /// A `Location` header (absolute or relative) as a URL, refusing a downgrade to plain HTTP.
    pub fn location(&self, headers: &HeaderMap) -> Result<Url> {
        let loc = headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("{}: the registry sent no Location header", self.registry))?;
        let u = self
            .base
            .join(loc)
            .map_err(|e| anyhow!("{}: bad Location `{loc}`: {e}", self.registry))?;
        self.check_scheme(&u)?;
        Ok(u)
    }

    pub(super) fn check_scheme(&self, u: &Url) -> Result<()> {
        if u.scheme() == "https" {
            return Ok(());
        }
        let host = match u.port() {
            Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
            None => u.host_str().unwrap_or("").to_string(),
        };
        if u.scheme() == "http" && http_allowed(&host, &self.allow_http) {
            return Ok(());
        }
        Err(usage!(
            "{}: refusing to send a request over plain HTTP to {host} ({u}); imgbuild uses HTTP \
             only for loopback hosts and hosts listed in `insecure_registries` in imgbuild.toml \
             or with `--insecure {host}`",
            self.registry,
            u = redact_url(u)
        ))
    }

    /// Sends an authenticated request built by `make`, handling 401 challenges once.
    pub fn send(
        &self,
        scopes: &[String],
        what: &str,
        retry: Retry,
        make: &dyn Fn(&Http) -> RequestBuilder,
    ) -> Result<Response> {
        self.ensure_pinged()?;
        let mut fresh = false;
        loop {
            let authz = self.authorization(scopes, fresh)?;
            let resp = self.retrying(what, retry, &|| {
                let rb = make(&self.http);
                match &authz {
                    Some(a) => rb.header(AUTHORIZATION, a),
                    None => rb,
                }
            })?;
            let status = resp.status();
            // A token may have expired, or the registry wants another scheme now.
            if status == StatusCode::UNAUTHORIZED && !fresh && self.rechallenged(resp.headers()) {
                fresh = true;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let detail = registry_error(resp);
                return Err(self.denied_error(status, detail, scopes, what));
            }
            return Ok(resp);
        }
    }

    /// Sends with retries on 5xx, 429 (after `Retry-After`) and dropped connections.
    pub(super) fn retrying(
        &self,
        what: &str,
        retry: Retry,
        build: &dyn Fn() -> RequestBuilder,
    ) -> Result<Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = retry == Retry::No || attempt >= max_attempts();
            match build().send() {
                Ok(r) => {
                    let s = r.status();
                    if !last && (s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS) {
                        let wait = retry_after(r.headers()).unwrap_or_else(|| backoff(attempt));
                        std::thread::sleep(wait);
                        continue;
                    }
                    return Ok(r);
                }
                Err(e) if !last && transient(&e) => {
                    std::thread::sleep(backoff(attempt));
                }
                Err(e) => return Err(self.transport_error(e, what)),
            }
        }
    }

    fn transport_error(&self, e: reqwest::Error, what: &str) -> anyhow::Error {
        let chain = error_chain(&e);
        let mut msg = format!("{}: {what} failed: {chain}", self.registry);
        if self.base.scheme() == "https"
            && (chain.contains("InvalidContentType")
                || chain.contains("corrupt message")
                || chain.contains("wrong version number")
                || chain.contains("received corrupt"))
        {
            msg.push_str(&format!(
                "\nhint: {} does not seem to speak HTTPS; if it is a plain-HTTP registry you \
                 trust, list it in `insecure_registries` in imgbuild.toml or pass `--insecure {}`",
                self.registry, self.registry
            ));
        }
        anyhow!(msg)
    }

    pub fn scheme(&self) -> &str {
        self.base.scheme()
    }
}

/// Attempts per request: 5, or `IMGBUILD_REGISTRY_ATTEMPTS` (at least 1).
pub(super) fn max_attempts() -> u32 {
    std::env::var("IMGBUILD_REGISTRY_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(MAX_ATTEMPTS)
}

/// The pause before attempt `attempt + 1`.
pub(super) fn backoff(attempt: u32) -> Duration {
    // 200 ms, 400 ms, 800 ms, … up to 8 s, with a little jitter.
    let base = 200u64 << (attempt - 1).min(6);
    let jitter = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        % 100) as u64;
    Duration::from_millis(base.min(8000) + jitter)
}

/// `Retry-After` in seconds (a minute at most).
pub(super) fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get("retry-after")?.to_str().ok()?.trim();
    let secs: u64 = v.parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

fn transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A URL without its query (upload URLs carry state; token URLs may carry anything).
pub fn redact_url(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    u.to_string()
}

/// The registry's error document (`{"errors":[{"code","message"}]}`) as one line.
pub fn registry_error(resp: Response) -> Option<String> {
    let bytes = resp.bytes().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let errs = v.get("errors")?.as_array()?;
    let parts: Vec<String> = errs
        .iter()
        .map(|e| {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
            format!("{code}: {msg}")
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_for_loopback_or_listed_hosts() {
        assert!(http_allowed("127.0.0.1:5000", &[]));
        assert!(http_allowed("localhost:5000", &[]));
        assert!(!http_allowed("registry.lan:5000", &[]));
        assert!(http_allowed(
            "registry.lan:5000",
            &["registry.lan:5000".into()]
        ));
        assert!(http_allowed("registry.lan:5000", &["registry.lan".into()]));
        assert!(http_allowed(
            "registry.lan",
            &["http://registry.lan/".into()]
        ));
        assert!(!http_allowed("other.lan", &["registry.lan".into()]));
    }

    #[test]
    fn retry_after_header() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn plain_http_is_refused_for_other_hosts() {
        let opts = Options::default();
        let c = Client::new("registry.example.com", &opts).unwrap();
        assert_eq!(c.scheme(), "https");
        let mut h = HeaderMap::new();
        h.insert(
            LOCATION,
            "http://registry.example.com/v2/x/blobs/uploads/1?_state=secret"
                .parse()
                .unwrap(),
        );
        let e = c.location(&h).unwrap_err().to_string();
        assert!(
            e.contains("refusing to send a request over plain HTTP"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
        let c = Client::new("127.0.0.1:5000", &opts).unwrap();
        assert_eq!(c.scheme(), "http");
    }
}
