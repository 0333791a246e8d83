//! One repository on a registry, with the scopes every request asks for.

use super::auth;
use super::transport::{Client, Retry};
use anyhow::{bail, Context, Result};
use reqwest::blocking::{Client as Http, RequestBuilder, Response};

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

    /// Sends a request with this repository's scopes.
    pub(super) fn send(
        &self,
        what: &str,
        retry: Retry,
        make: &dyn Fn(&Http) -> RequestBuilder,
    ) -> Result<Response> {
        self.client.send(&self.scopes, what, retry, make)
    }

    /// `send`, then `None` for a 404, the response for a success, else the registry's error.
    pub(super) fn send_found(
        &self,
        what: &str,
        retry: Retry,
        make: &dyn Fn(&Http) -> RequestBuilder,
    ) -> Result<Option<Response>> {
        let resp = self.send(what, retry, make)?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let d = super::transport::registry_error(resp).unwrap_or_default();
            anyhow::bail!(super::error::RegistryError::Status {
                what: what.to_string(),
                status,
                detail: Some(d)
            });
        }
        Ok(Some(resp))
    }

    /// `registry/repository`, for messages.
    pub(super) fn where_(&self) -> String {
        format!("{}/{}", self.client.registry, self.name)
    }
}

impl<'a> Repo<'a> {
    /// The repository's tags; `None` when the repository does not exist.
    pub fn tags(&self) -> Result<Option<Vec<String>>> {
        let url = self.client.url(&format!("v2/{}/tags/list", self.name));
        let what = format!("listing the tags of {}/{}", self.client.registry, self.name);
        let resp = self
            .client
            .send(&self.scopes, &what, Retry::Yes, &|h| h.get(url.clone()))?;
        match resp.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let v: serde_json::Value = resp.json().with_context(|| what.clone())?;
                Ok(Some(
                    v.get("tags")
                        .and_then(|t| t.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                ))
            }
            s => bail!("{what}: the registry answered {s}"),
        }
    }
}
