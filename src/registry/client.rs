//! The OCI distribution protocol, spoken directly over `crate::http::client()` (reqwest blocking).
//!
//! Why not oci-client: it is async (a tokio runtime inside a blocking tool), its `push()` never
//! HEADs first, and the flow imgbuild promises — HEAD before each upload, cross-repository mount
//! with a fall back to a plain upload, monolithic or ≤ 4 MiB chunks resumed from the registry's
//! `Range`, retries with backoff that honour `Retry-After`, the manifest last, credentials from
//! docker/containers files, and errors that name registry, scope and credential source — would be
//! orchestrated around it anyway. The protocol itself is a dozen requests; owning them keeps the
//! retry and resume rules in one place and testable against a real registry.

use super::auth::{self, Challenge, TokenCache, TokenResponse};
use super::credentials::{self, Lookup};
use super::reference;
use super::Options;
use crate::digest::Digest;
use crate::image::{MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_INDEX, MT_MANIFEST};
use crate::store::Store;
use crate::usage;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;
use std::time::Duration;

/// Largest chunk sent in one PATCH (one large registry refuses more), and the size up to
/// which a blob goes up in one PUT.
pub const CHUNK: u64 = 4 * 1024 * 1024;
const MAX_ATTEMPTS: u32 = 5;
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// Blob transfers may take long; the client's default timeout is for small requests.
const BLOB_TIMEOUT: Duration = Duration::from_secs(3600);

pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// One registry host: its base URL, credentials and authentication state.
pub struct Client {
    /// The registry as in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    base: Url,
    http: Http,
    creds: Lookup,
    allow_http: Vec<String>,
    state: Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    pinged: bool,
    challenge: Option<Challenge>,
    tokens: TokenCache,
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
            state: Mutex::new(AuthState::default()),
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

    /// Checks that the credential is accepted: Basic on `/v2/`, or a token for no scope.
    pub fn check_login(&self) -> Result<()> {
        self.ensure_pinged()?;
        let ch = self.state.lock().unwrap().challenge.clone();
        match ch {
            None => Ok(()),
            Some(Challenge::Bearer { realm, service, .. }) => {
                self.fetch_token(&realm, service.as_deref(), &[])?;
                Ok(())
            }
            Some(Challenge::Basic { .. }) => {
                let url = self.url("v2/");
                let r = self.send(&[], "logging in", Retry::Yes, &|h| h.get(url.clone()))?;
                if !r.status().is_success() {
                    bail!(
                        "{}: logging in: /v2/ answered {}",
                        self.registry,
                        r.status()
                    );
                }
                Ok(())
            }
        }
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

    fn check_scheme(&self, u: &Url) -> Result<()> {
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

    fn ensure_pinged(&self) -> Result<()> {
        if self.state.lock().unwrap().pinged {
            return Ok(());
        }
        let url = self.url("v2/");
        let resp = self.retrying("checking the registry API (/v2/)", Retry::Yes, &|| {
            self.http.get(url.clone())
        })?;
        let mut st = self.state.lock().unwrap();
        match resp.status() {
            StatusCode::OK => st.challenge = None,
            StatusCode::UNAUTHORIZED => {
                st.challenge = challenge_of(resp.headers());
                if st.challenge.is_none() {
                    bail!(
                        "{}: /v2/ answered 401 without a Basic or Bearer challenge",
                        self.registry
                    );
                }
            }
            s => bail!(
                "{} does not look like an OCI registry: GET {} answered {s}",
                self.registry,
                url
            ),
        }
        st.pinged = true;
        Ok(())
    }

    /// The Authorization header for a request needing `scopes`.
    fn authorization(&self, scopes: &[String], fresh: bool) -> Result<Option<String>> {
        let mut st = self.state.lock().unwrap();
        match st.challenge.clone() {
            None => Ok(None),
            Some(Challenge::Basic { .. }) => Ok(self.creds.credential.as_ref().map(|c| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{}", c.username, c.secret))
                )
            })),
            Some(Challenge::Bearer { realm, service, .. }) => {
                if fresh {
                    st.tokens.forget(scopes);
                } else if let Some(t) = st.tokens.get(scopes) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let (token, expires) = self.fetch_token(&realm, service.as_deref(), scopes)?;
                st.tokens.put(scopes, token.clone(), expires);
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, Option<u64>)> {
        let mut url = Url::parse(realm)
            .map_err(|e| anyhow!("{}: token realm `{realm}` is not a URL: {e}", self.registry))?;
        self.check_scheme(&url)?;
        let cred = self.creds.credential.as_ref();
        let resp = if let Some(c) = cred.filter(|c| c.identity_token) {
            // application/x-www-form-urlencoded, encoded by the URL parser.
            let mut f = Url::parse("http://form.invalid/").expect("valid");
            {
                let mut q = f.query_pairs_mut();
                q.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", &c.secret)
                    .append_pair("client_id", "imgbuild")
                    .append_pair("scope", &scopes.join(" "));
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
            }
            let form = f.query().unwrap_or("").to_string();
            self.retrying("getting a token", Retry::Yes, &|| {
                self.http
                    .post(url.clone())
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.clone())
            })?
        } else {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scopes {
                    q.append_pair("scope", s);
                }
            }
            self.retrying("getting a token", Retry::Yes, &|| {
                let rb = self.http.get(url.clone());
                match cred {
                    Some(c) => rb.basic_auth(&c.username, Some(&c.secret)),
                    None => rb,
                }
            })?
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.denied_error(status, None, scopes, "issuing a token"));
        }
        if !status.is_success() {
            bail!(
                "{}: the token server {} answered {status}",
                self.registry,
                redact_url(&url)
            );
        }
        let body: TokenResponse = resp
            .json()
            .with_context(|| format!("{}: reading the token server's answer", self.registry))?;
        let expires = body.expires_in;
        let token = body
            .token()
            .ok_or_else(|| anyhow!("{}: the token server sent no token", self.registry))?;
        Ok((token, expires))
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
            if status == StatusCode::UNAUTHORIZED && !fresh {
                // A token may have expired, or the registry wants another scheme now.
                let ch = challenge_of(resp.headers());
                let mut st = self.state.lock().unwrap();
                let same_basic = matches!(
                    (&ch, &st.challenge),
                    (Some(Challenge::Basic { .. }), Some(Challenge::Basic { .. }))
                );
                if ch.is_some() && !same_basic {
                    st.challenge = ch;
                    drop(st);
                    fresh = true;
                    continue;
                }
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let detail = registry_error(resp);
                return Err(self.denied_error(status, detail, scopes, what));
            }
            return Ok(resp);
        }
    }

    fn denied_error(
        &self,
        status: StatusCode,
        detail: Option<String>,
        scopes: &[String],
        what: &str,
    ) -> anyhow::Error {
        let scope = if scopes.is_empty() {
            "registry access".to_string()
        } else {
            scopes.join(" ")
        };
        let mut msg = format!(
            "{} refused {what}: {status}{} (scope `{scope}`)",
            self.registry,
            detail.map(|d| format!(", {d}")).unwrap_or_default()
        );
        match &self.creds.credential {
            Some(c) => msg.push_str(&format!(
                "\nthe credentials for user `{}` from {} were {}",
                c.username,
                c.source,
                if status == StatusCode::FORBIDDEN {
                    "accepted but lack permission for that scope"
                } else {
                    "rejected"
                }
            )),
            None => msg.push_str(&format!(
                "\nno credentials were found for {}; looked in: {}",
                self.registry,
                self.creds.describe_search()
            )),
        }
        let hint = format!(
            "hint: `imgbuild login {} --username USER --password-stdin`, or set \
             IMGBUILD_REGISTRY_USER and IMGBUILD_REGISTRY_PASSWORD",
            self.registry
        );
        usage!("{msg}\n{hint}")
    }

    /// Sends with retries on 5xx, 429 (after `Retry-After`) and dropped connections.
    fn retrying(
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

/// The chunk size: 4 MiB, or `IMGBUILD_REGISTRY_CHUNK_SIZE` bytes (at least 64 KiB) for a
/// registry known to take other sizes.
pub fn chunk_size() -> u64 {
    std::env::var("IMGBUILD_REGISTRY_CHUNK_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(|n: u64| n.max(64 * 1024))
        .unwrap_or(CHUNK)
}

fn max_attempts() -> u32 {
    std::env::var("IMGBUILD_REGISTRY_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(MAX_ATTEMPTS)
}

fn backoff(attempt: u32) -> Duration {
    // 200 ms, 400 ms, 800 ms, … up to 8 s, with a little jitter.
    let base = 200u64 << (attempt - 1).min(6);
    let jitter = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        % 100) as u64;
    Duration::from_millis(base.min(8000) + jitter)
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
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

fn challenge_of(h: &HeaderMap) -> Option<Challenge> {
    let mut all = Vec::new();
    for v in h.get_all("www-authenticate") {
        if let Ok(s) = v.to_str() {
            all.extend(auth::parse_www_authenticate(s));
        }
    }
    // Prefer Bearer when both are offered.
    all.iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or(all.first())
        .cloned()
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

/// A manifest as fetched: bytes, media type and digest (checked).
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl Fetched {
    pub fn is_index(&self) -> bool {
        self.media_type == MT_INDEX || self.media_type == MT_DOCKER_LIST
    }
}

/// An interrupted upload the registry will not resume (distribution cancels a session whose
/// state does not match what it received); the caller starts the blob again.
#[derive(Debug)]
pub struct SessionGone(pub String);

/// A failure worth one more try: a body cut short, bytes that do not match.
#[derive(Debug)]
struct Transient(String);
impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Transient {}

impl std::fmt::Display for SessionGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SessionGone {}

/// What `start_upload` found.
pub enum Start {
    Mounted,
    Upload(Url),
}

/// One repository on a registry, with the scopes every request asks for.
pub struct Repo<'a> {
    pub client: &'a Client,
    pub name: String,
    pub scopes: Vec<String>,
}

impl<'a> Repo<'a> {
    pub fn pull(client: &'a Client, name: &str) -> Repo<'a> {
        Repo {
            client,
            name: name.to_string(),
            scopes: vec![auth::scope(name, "pull")],
        }
    }

    /// Push access to `name`, and pull access to the repositories blobs may be mounted from.
    pub fn push(client: &'a Client, name: &str, mount_from: &[String]) -> Repo<'a> {
        let mut scopes = vec![auth::scope(name, "pull,push")];
        for m in mount_from {
            if m != name {
                scopes.push(auth::scope(m, "pull"));
            }
        }
        Repo {
            client,
            name: name.to_string(),
            scopes,
        }
    }

    fn send(
        &self,
        what: &str,
        retry: Retry,
        make: &dyn Fn(&Http) -> RequestBuilder,
    ) -> Result<Response> {
        self.client.send(&self.scopes, what, retry, make)
    }

    fn where_(&self) -> String {
        format!("{}/{}", self.client.registry, self.name)
    }

    /// GETs a manifest by tag or digest; `None` when the registry does not have it. A body
    /// cut short or bytes that do not match are fetched again, like blobs.
    pub fn get_manifest(&self, reference: &str) -> Result<Option<Fetched>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.get_manifest_once(reference) {
                Err(e) if attempt < max_attempts() && e.chain().any(|c| c.is::<Transient>()) => {
                    std::thread::sleep(backoff(attempt));
                }
                other => return other,
            }
        }
    }

    fn get_manifest_once(&self, reference: &str) -> Result<Option<Fetched>> {
        let url = self
            .client
            .url(&format!("v2/{}/manifests/{reference}", self.name));
        let sep = if reference.contains(':') { '@' } else { ':' };
        let what = format!("reading manifest {}{sep}{reference}", self.where_());
        let resp = self.send(&what, Retry::Yes, &|h| {
            h.get(url.clone()).header(ACCEPT, MANIFEST_ACCEPT)
        })?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let d = registry_error(resp).unwrap_or_default();
            bail!("{what}: the registry answered {status} {d}");
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let mut bytes = Vec::new();
        if let Err(e) = resp.take(MAX_MANIFEST as u64 + 1).read_to_end(&mut bytes) {
            return Err(anyhow::Error::new(Transient(format!("{what}: {e}"))));
        }
        if bytes.len() > MAX_MANIFEST {
            bail!("{what}: the manifest is larger than 4 MiB");
        }
        let digest = Digest::of(&bytes);
        if let Ok(want) = Digest::parse(reference) {
            if digest != want {
                return Err(anyhow::Error::new(Transient(format!(
                    "{what}: the registry sent content that hashes to {digest}, not the \
                     requested {want}"
                ))));
            }
        } else if let Some(h) = header_digest.and_then(|h| Digest::parse(&h).ok()) {
            if h != digest {
                bail!("{what}: Docker-Content-Digest says {h}, but the content hashes to {digest}");
            }
        }
        // Fall back to the document's own mediaType when the header is generic.
        let media_type = if [MT_MANIFEST, MT_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST]
            .contains(&media_type.as_str())
        {
            media_type
        } else {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                })
                .unwrap_or(media_type)
        };
        Ok(Some(Fetched {
            bytes,
            media_type,
            digest,
        }))
    }

    /// HEADs a manifest; the digest it names, when present.
    pub fn head_manifest(&self, reference: &str) -> Result<Option<Option<Digest>>> {
        let url = self
            .client
            .url(&format!("v2/{}/manifests/{reference}", self.name));
        let what = format!("checking manifest {}:{reference}", self.where_());
        let resp = self.send(&what, Retry::Yes, &|h| {
            h.head(url.clone()).header(ACCEPT, MANIFEST_ACCEPT)
        })?;
        match resp.status() {
            StatusCode::OK => Ok(Some(
                resp.headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| Digest::parse(s).ok()),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            s => bail!("{what}: the registry answered {s}"),
        }
    }

    /// PUTs a manifest under `reference` (digest or tag). A registry that does not see a
    /// just-confirmed blob yet (`MANIFEST_BLOB_UNKNOWN`, eventually consistent storage) is asked
    /// again after a pause.
    pub fn put_manifest(&self, reference: &str, bytes: &[u8], media_type: &str) -> Result<()> {
        let url = self
            .client
            .url(&format!("v2/{}/manifests/{reference}", self.name));
        let what = format!("putting manifest {}:{reference}", self.where_());
        let body = bytes::Bytes::copy_from_slice(bytes);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.send(&what, Retry::Yes, &|h| {
                h.put(url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone())
            })?;
            let s = resp.status();
            if s == StatusCode::CREATED || s.is_success() {
                return Ok(());
            }
            let d = registry_error(resp).unwrap_or_default();
            if d.contains("BLOB_UNKNOWN") && attempt < max_attempts() {
                std::thread::sleep(backoff(attempt));
                continue;
            }
            bail!("{what}: the registry answered {s} {d}");
        }
    }

    /// HEADs a blob: its size when present.
    pub fn head_blob(&self, d: &Digest) -> Result<Option<u64>> {
        let url = self.client.url(&format!("v2/{}/blobs/{d}", self.name));
        let what = format!("checking blob {d} in {}", self.where_());
        let resp = self.send(&what, Retry::Yes, &|h| h.head(url.clone()))?;
        match resp.status() {
            StatusCode::OK => Ok(Some(
                resp.headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            s => bail!("{what}: the registry answered {s}"),
        }
    }

    /// Downloads a blob into the store, checking digest and size; retried when the connection
    /// drops or the content is wrong. Returns the bytes downloaded.
    pub fn fetch_blob(&self, d: &Digest, size: u64, store: &Store) -> Result<u64> {
        if store.has(d) {
            return Ok(0);
        }
        let url = self.client.url(&format!("v2/{}/blobs/{d}", self.name));
        let what = format!("downloading blob {d} from {}", self.where_());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.send(&what, Retry::Yes, &|h| {
                h.get(url.clone())
                    .timeout(crate::http::timeout(BLOB_TIMEOUT))
            })?;
            let s = resp.status();
            if s == StatusCode::NOT_FOUND {
                bail!("{what}: the registry does not have it (404)");
            }
            if !s.is_success() {
                let e = registry_error(resp).unwrap_or_default();
                bail!("{what}: the registry answered {s} {e}");
            }
            match store.put_reader(resp, d, Some(size)) {
                Ok(()) => return Ok(size),
                // A dropped connection or bytes that do not match: fetched again (the path may
                // be at fault, not the registry); the same mismatch every time is final.
                Err(_) if attempt < max_attempts() => {
                    std::thread::sleep(backoff(attempt));
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "{what}: the registry sent content that does not match the descriptor"
                    )))
                }
            }
        }
    }

    /// Opens an upload session, or mounts `d` from `from` when given (201 = mounted).
    pub fn start_upload(&self, mount: Option<(&Digest, &str)>) -> Result<Start> {
        let mut url = self.client.url(&format!("v2/{}/blobs/uploads/", self.name));
        if let Some((d, from)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", d.as_str())
                .append_pair("from", from);
        }
        let what = match mount {
            Some((d, from)) => format!("mounting blob {d} from {from} into {}", self.where_()),
            None => format!("starting an upload to {}", self.where_()),
        };
        let resp = self.send(&what, Retry::Yes, &|h| {
            h.post(url.clone()).header(CONTENT_LENGTH, "0")
        })?;
        match resp.status() {
            StatusCode::CREATED if mount.is_some() => Ok(Start::Mounted),
            StatusCode::ACCEPTED => Ok(Start::Upload(self.client.location(resp.headers())?)),
            s => {
                let e = registry_error(resp).unwrap_or_default();
                bail!("{what}: the registry answered {s} {e}")
            }
        }
    }

    /// Uploads a stored blob into an open session: one PUT when it is small, else ≤ 4 MiB
    /// PATCHes in order, resumed from the registry's `Range` after a failure, then the PUT.
    pub fn upload(&self, session: Url, d: &Digest, size: u64, store: &Store) -> Result<()> {
        let what = format!("uploading blob {d} to {}", self.where_());
        let chunk = chunk_size();
        if size <= chunk {
            let bytes = bytes::Bytes::from(store.read(d)?);
            let mut url = session;
            url.query_pairs_mut().append_pair("digest", d.as_str());
            let resp = self.send(&what, Retry::Yes, &|h| {
                h.put(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.clone())
            })?;
            return self.finished(resp, d, &what);
        }
        let mut file = store.open_blob(d)?;
        let mut url = session;
        let mut offset = 0u64;
        let mut failures = 0;
        while offset < size {
            let n = (size - offset).min(chunk) as usize;
            file.seek(SeekFrom::Start(offset))?;
            let mut buf = vec![0u8; n];
            file.read_exact(&mut buf)
                .with_context(|| format!("reading blob {d} from the store"))?;
            // Shared, not copied, by the request builder.
            let body = bytes::Bytes::from(buf);
            let end = offset + n as u64 - 1;
            let res = self.send(&what, Retry::No, &|h| {
                h.patch(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header("content-range", format!("{offset}-{end}"))
                    .header(CONTENT_LENGTH, n.to_string())
                    .body(body.clone())
                    .timeout(crate::http::timeout(BLOB_TIMEOUT))
            });
            match res {
                Ok(r)
                    if r.status() == StatusCode::ACCEPTED
                        || r.status() == StatusCode::NO_CONTENT =>
                {
                    url = self.client.location(r.headers()).unwrap_or(url);
                    offset = match range_end(r.headers()) {
                        Some(e) if e + 1 > offset => e + 1,
                        _ => end + 1,
                    };
                    failures = 0;
                }
                other => {
                    // Auth and usage errors are final; anything else: ask where to resume.
                    if let Err(e) = &other {
                        if e.chain().any(|c| c.is::<crate::error::UsageError>()) {
                            return Err(other.err().unwrap());
                        }
                    }
                    failures += 1;
                    if failures >= max_attempts() {
                        return match other {
                            Ok(r) => {
                                let s = r.status();
                                let e = registry_error(r).unwrap_or_default();
                                bail!("{what}: chunk {offset}-{end}: the registry answered {s} {e}")
                            }
                            Err(e) => Err(e.context(format!("{what}: chunk {offset}-{end}"))),
                        };
                    }
                    if let Ok(r) = &other {
                        if let Some(w) = retry_after(r.headers()) {
                            std::thread::sleep(w);
                        }
                    }
                    std::thread::sleep(backoff(failures));
                    let (u, resume) = self.upload_status(&url, &what)?;
                    url = u;
                    offset = resume;
                }
            }
        }
        let mut put = url;
        put.query_pairs_mut().append_pair("digest", d.as_str());
        let resp = self.send(&what, Retry::Yes, &|h| {
            h.put(put.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, "0")
        })?;
        self.finished(resp, d, &what)
    }

    /// Where an interrupted upload resumes: the session's URL and the next offset.
    fn upload_status(&self, url: &Url, what: &str) -> Result<(Url, u64)> {
        let resp = self.send(what, Retry::Yes, &|h| h.get(url.clone()))?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            let s = resp.status();
            return Err(anyhow::Error::new(SessionGone(format!(
                "{what}: the registry dropped the upload session ({s}) instead of resuming it"
            ))));
        }
        let u = self
            .client
            .location(resp.headers())
            .unwrap_or_else(|_| url.clone());
        Ok((u, range_end(resp.headers()).map(|e| e + 1).unwrap_or(0)))
    }

    fn finished(&self, resp: Response, d: &Digest, what: &str) -> Result<()> {
        let s = resp.status();
        if s != StatusCode::CREATED {
            let e = registry_error(resp).unwrap_or_default();
            bail!("{what}: the registry answered {s} {e}");
        }
        if let Some(h) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if h != d.as_str() {
                bail!("{what}: the registry stored it as {h}");
            }
        }
        Ok(())
    }

    /// DELETE a manifest by digest (used by `imgbuild` tests and tools, not by builds).
    pub fn delete_manifest(&self, d: &Digest) -> Result<()> {
        let url = self.client.url(&format!("v2/{}/manifests/{d}", self.name));
        let what = format!("deleting manifest {d} from {}", self.where_());
        let resp = self.send(&what, Retry::Yes, &|h| {
            h.request(Method::DELETE, url.clone())
        })?;
        if !resp.status().is_success() {
            bail!("{what}: the registry answered {}", resp.status());
        }
        Ok(())
    }
}

/// The last byte the registry has, from `Range: 0-N` (`bytes=0-N` on some registries).
fn range_end(h: &HeaderMap) -> Option<u64> {
    let v = h.get("range")?.to_str().ok()?;
    let v = v.trim().trim_start_matches("bytes=");
    v.split_once('-')?.1.trim().parse().ok()
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
    fn range_header_forms() {
        let mut h = HeaderMap::new();
        h.insert("range", "0-4194303".parse().unwrap());
        assert_eq!(range_end(&h), Some(4194303));
        h.insert("range", "bytes=0-9".parse().unwrap());
        assert_eq!(range_end(&h), Some(9));
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
