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

/// One client for the whole process, made on first use: parallel downloads from one host share
/// its connection pool instead of opening a pool (and a TLS handshake) per file.
pub fn shared() -> Result<&'static reqwest::blocking::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let c = client()?;
    Ok(CLIENT.get_or_init(|| c))
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

/// How many times a request is tried, and the pause before the first retry (tripled each time).
const ATTEMPTS: u32 = 5;
const FIRST_PAUSE: Duration = Duration::from_millis(300);

/// Whether a failed request may succeed when sent again: no connection, a timeout, a request
/// or body cut off (a mirror or index resetting connections under parallel downloads).
fn transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// Whether an answer's status says "try again": 429 and the 5xx family.
fn transient_status(s: reqwest::StatusCode) -> bool {
    s == reqwest::StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// Sends the request `send` makes, again after 0.3, 0.9, 2.7 and 8.1 s while it fails in a way a
/// retry can mend (see `transient`) or is answered 429 or 5xx. The last answer or error is
/// returned; the caller judges the status. (The registry client has its own policy, with
/// Retry-After, in `registry::transport`.)
pub fn send_retrying(
    send: impl Fn() -> reqwest::Result<reqwest::blocking::Response>,
) -> reqwest::Result<reqwest::blocking::Response> {
    let mut pause = FIRST_PAUSE;
    for _ in 1..ATTEMPTS {
        match send() {
            Err(e) if transient(&e) => {}
            Ok(r) if transient_status(r.status()) => {}
            r => return r,
        }
        std::thread::sleep(pause);
        pause *= 3;
    }
    send()
}

/// Runs a whole download `f` (request and body), again after 0.3, 0.9, 2.7 and 8.1 s while it fails
/// with a transient HTTP error or an I/O error reading the body. An error of another kind (a
/// hash that does not match, a 404) is returned at once.
pub fn download_retrying<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut pause = FIRST_PAUSE;
    for _ in 1..ATTEMPTS {
        match f() {
            Err(e) if download_error_is_transient(&e) => {}
            r => return r,
        }
        std::thread::sleep(pause);
        pause *= 3;
    }
    f()
}

fn download_error_is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            return transient(r);
        }
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            use std::io::ErrorKind::*;
            matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | UnexpectedEof | TimedOut | BrokenPipe
            ) || io
                .get_ref()
                .and_then(|i| i.downcast_ref::<reqwest::Error>())
                .is_some_and(transient)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_body_is_retried_and_a_wrong_hash_is_not() {
        let cut = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
            .context("downloading x.deb");
        assert!(download_error_is_transient(&cut));
        let wrong = anyhow::anyhow!("x.deb has sha256:aa, but imgbuild.lock pins sha256:bb");
        assert!(!download_error_is_transient(&wrong));
        let mut tries = 0;
        let r: Result<()> = download_retrying(|| {
            tries += 1;
            Err(anyhow::anyhow!("a wrong hash"))
        });
        assert!(r.is_err());
        assert_eq!(tries, 1);
    }

    /// A server on 127.0.0.1 that closes the first `drop` connections without answering, then
    /// answers 200 "ok"; returns its URL and a count of the connections it took.
    fn flaky_server(drop: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", l.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = seen.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let mut c = c.unwrap();
                let n = count.fetch_add(1, SeqCst);
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                if n >= drop {
                    let _ = c.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    );
                }
            }
        });
        (url, seen)
    }

    #[test]
    fn a_dropped_connection_is_sent_again_until_it_is_answered() {
        let (url, seen) = flaky_server(2);
        let c = client().unwrap();
        let r = send_retrying(|| c.get(&url).send()).unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().unwrap(), "ok");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
