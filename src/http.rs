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
    // The client's I/O runs on a thread it spawns now; that thread inherits a blocked SIGPIPE,
    // so a server closing a connection mid-request is an EPIPE error (retried), not the death
    // of the process (`main` restores SIGPIPE's default for `imgbuild … | head`).
    with_sigpipe_blocked(|| {
        reqwest::blocking::Client::builder()
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .timeout(timeout(Duration::from_secs(600)))
            .build()
    })
    .context("setting up the HTTP client")
}

/// `default`, unless `IMGBUILD_HTTP_TIMEOUT` (seconds) caps every request: a stalled server
/// then fails the request (and the retry logic takes over) instead of hanging the build.
pub fn timeout(default: Duration) -> Duration {
    std::env::var("IMGBUILD_HTTP_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(default)
}

/// Runs `f` with SIGPIPE blocked in this thread; threads `f` spawns keep it blocked.
fn with_sigpipe_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain signal-mask calls on this thread with initialised sigset_t values.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}
