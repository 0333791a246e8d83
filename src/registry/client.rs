//! The OCI distribution protocol, spoken directly over `crate::http::client()` (reqwest blocking).
//!
//! Why not oci-client: it is async (a tokio runtime inside a blocking tool), its `push()` never
//! HEADs first, and the flow imgbuild promises — HEAD before each upload, cross-repository mount
//! with a fall back to a plain upload, monolithic or ≤ 4 MiB chunks resumed from the registry's
//! `Range`, retries with backoff that honour `Retry-After`, the manifest last, credentials from
//! docker/containers files, and errors that name registry, scope and credential source — would be
//! orchestrated around it anyway. The protocol itself is a dozen requests; owning them keeps the
//! retry and resume rules in one place and testable against a real registry.
//!
//! The pieces: `transport` (the `Client`: sending, retries, schemes, redaction), `session`
//! (ping, challenges, tokens, the `Authorization` header), `manifests` and `blobs` (the
//! requests on one repository, a `Repo`, defined here), `error` (the typed failures).

use super::auth;
use anyhow::Result;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};

pub use super::blobs::{chunk_size, Start, CHUNK};
pub use super::error::RegistryError;
pub use super::manifests::{Fetched, MANIFEST_ACCEPT};
pub use super::transport::{http_allowed, redact_url, registry_error, Client, Retry};

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

    /// `registry/repository`, for messages.
    pub(super) fn where_(&self) -> String {
        format!("{}/{}", self.client.registry, self.name)
    }
}
