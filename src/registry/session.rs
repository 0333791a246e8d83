//! A `Client`'s authentication session: the `/v2/` ping and the challenge it answers with, the
//! Bearer token exchange and its cache, the `Authorization` header for a request's scopes, a
//! changed challenge on a later 401, and the message for refused credentials. `auth.rs` parses
//! the headers and documents this speaks.

use super::auth::{self, Challenge, TokenResponse};
use super::transport::{redact_url, Client, Retry};
use crate::usage;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::{StatusCode, Url};

impl Client {
    /// Checks that the credential is accepted: Basic on `/v2/`, or a token for no scope.
    pub fn check_login(&self) -> Result<()> {
        self.ensure_pinged()?;
        let ch = self.session.lock().unwrap().challenge.clone();
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

    /// GETs `/v2/` once per client, to learn the challenge (none, Basic or Bearer).
    pub(super) fn ensure_pinged(&self) -> Result<()> {
        if self.session.lock().unwrap().pinged {
            return Ok(());
        }
        let url = self.url("v2/");
        let resp = self.retrying("checking the registry API (/v2/)", Retry::Yes, &|| {
            self.http.get(url.clone())
        })?;
        let mut st = self.session.lock().unwrap();
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

    /// After a 401: true when the registry now challenges differently (a new Bearer challenge,
    /// or another scheme), which is then remembered and worth one fresh try.
    pub(super) fn rechallenged(&self, headers: &HeaderMap) -> bool {
        let ch = challenge_of(headers);
        let mut st = self.session.lock().unwrap();
        let same_basic = matches!(
            (&ch, &st.challenge),
            (Some(Challenge::Basic { .. }), Some(Challenge::Basic { .. }))
        );
        if ch.is_some() && !same_basic {
            st.challenge = ch;
            return true;
        }
        false
    }

    /// The Authorization header for a request needing `scopes`.
    pub(super) fn authorization(&self, scopes: &[String], fresh: bool) -> Result<Option<String>> {
        let mut st = self.session.lock().unwrap();
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

    /// A 401/403 as a usage error (exit code 2): what was refused, for which scope, which
    /// credentials were used or where none were found, and how to log in.
    pub(super) fn denied_error(
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
}

/// The challenge of a response's `WWW-Authenticate` headers (Bearer preferred when both are
/// offered).
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
