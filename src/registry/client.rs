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
//! requests on one repository, a `repo::Repo`), `error` (the typed failures).

pub use super::blobs::{chunk_size, Start, CHUNK};
pub use super::error::RegistryError;
pub use super::manifests::{Fetched, MANIFEST_ACCEPT};
pub use super::repo::Repo;
pub use super::transport::{http_allowed, redact_url, registry_error, Client, Retry};
