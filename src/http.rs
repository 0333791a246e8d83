//! The one HTTP client setup: rustls with the ring provider, trusting the system certificate
//! store (and `SSL_CERT_FILE`), as package indexes and registries behind proxies need.

use anyhow::{Context, Result};
use std::sync::Once;
use std::time::Duration;

static PROVIDER: Once = Once::new();

/// Installs the ring crypto provider once per process.
pub fn init_tls() {
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A blocking client with sane timeouts and a user agent naming imgbuild.
pub fn client() -> Result<reqwest::blocking::Client> {
    init_tls();
    reqwest::blocking::Client::builder()
        .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(600))
        .build()
        .context("setting up the HTTP client")
}
