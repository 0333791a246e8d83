//! Settings for talking to registries: plain-HTTP hosts, where credentials come from, whether
//! locked tags are re-resolved.

use super::credentials;

/// Settings for talking to registries.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Hosts reached over plain HTTP although not loopback (`--insecure`, `insecure_registries`).
    pub insecure: Vec<String>,
    /// Where credentials are looked up (the process environment by default).
    pub env: credentials::Env,
    /// Re-resolve tags even when `imgbuild.lock` pins them (`imgbuild lock --update`).
    pub update_lock: bool,
}
