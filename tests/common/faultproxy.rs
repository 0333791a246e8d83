//! A fault-injecting HTTP proxy on 127.0.0.1, between imgbuild and a real registry.
//! Each request (one per connection: the proxy always answers `Connection: close`) is either
//! forwarded faithfully or, at the configured rate, answered with one fault.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// An error status: 500, 502, 503, or 429 with `Retry-After: 1`.
    Status(u16),
    /// The response starts, then the connection is reset (RST) mid-body.
    Reset,
    /// Nothing is answered for `stall` (longer than the client's timeout).
    Stall,
    /// Headers promise more bytes than are sent before the connection closes.
    Truncate,
    /// A blob is served with one byte changed (its digest no longer matches).
    Corrupt,
}

pub const ALL: &[Fault] = &[
    Fault::Status(500),
    Fault::Status(502),
    Fault::Status(503),
    Fault::Status(429),
    Fault::Reset,
    Fault::Stall,
    Fault::Truncate,
    Fault::Corrupt,
];

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicUsize,
    pub faults: AtomicUsize,
    pub by_kind: Mutex<std::collections::BTreeMap<String, usize>>,
}

pub struct FaultProxy {
    pub port: u16,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

struct Config {
    upstream: u16,
    rate: f64,
    kinds: Vec<Fault>,
    stall: Duration,
    rng: Mutex<u64>,
}

impl FaultProxy {
    /// Proxies to `127.0.0.1:upstream`, injecting one of `kinds` into `rate` of the requests.
    pub fn start(
        upstream: u16,
        rate: f64,
        kinds: &[Fault],
        stall: Duration,
        seed: u64,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let cfg = Arc::new(Config {
            upstream,
            rate,
            kinds: kinds.to_vec(),
            stall,
            rng: Mutex::new(seed | 1),
        });
        let (st, sp) = (stats.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let (cfg, st) = (cfg.clone(), st.clone());
                std::thread::spawn(move || {
                    let _ = handle(client, &cfg, &st);
                });
            }
        });
        FaultProxy { port, stats, stop }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn roll(cfg: &Config) -> f64 {
    let mut x = cfg.rng.lock().unwrap();
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    (*x >> 11) as f64 / (1u64 << 53) as f64
}

/// A request: its request line, header lines and raw body bytes.
type Request = (String, Vec<String>, Vec<u8>);

/// Reads one request: head lines and raw body bytes (Content-Length or chunked, kept as sent).
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let request_line = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        headers.push(line.trim_end().to_string());
    }
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            h.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            body.extend_from_slice(line.as_bytes());
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
    }
    Ok(Some((request_line, headers, body)))
}

fn handle(client: TcpStream, cfg: &Config, st: &Stats) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(client.try_clone()?);
    let Some((request_line, headers, body)) = read_request(&mut r)? else {
        return Ok(());
    };
    st.requests.fetch_add(1, Ordering::SeqCst);
    let is_blob_get = request_line.starts_with("GET ") && request_line.contains("/blobs/sha256:");
    let fault = if roll(cfg) < cfg.rate {
        let k = cfg.kinds[(roll(cfg) * cfg.kinds.len() as f64) as usize % cfg.kinds.len()];
        // Corruption only makes sense on a blob download; elsewhere it is a plain 502.
        Some(if k == Fault::Corrupt && !is_blob_get {
            Fault::Status(502)
        } else {
            k
        })
    } else {
        None
    };
    let mut client = client;
    if let Some(f) = fault {
        st.faults.fetch_add(1, Ordering::SeqCst);
        *st.by_kind
            .lock()
            .unwrap()
            .entry(format!("{f:?}"))
            .or_default() += 1;
        match f {
            Fault::Status(code) => {
                let extra = if code == 429 {
                    "Retry-After: 1\r\n"
                } else {
                    ""
                };
                write!(client, "HTTP/1.1 {code} Injected\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n")?;
                return Ok(());
            }
            Fault::Stall => {
                std::thread::sleep(cfg.stall);
                return Ok(());
            }
            _ => {}
        }
    }
    // Forward with `Connection: close`, read the whole answer.
    let mut up = TcpStream::connect(("127.0.0.1", cfg.upstream))?;
    let mut head = format!("{request_line}\r\n");
    for h in headers
        .iter()
        .filter(|h| !h.to_ascii_lowercase().starts_with("connection:"))
    {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let body_at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(resp.len());
    match fault {
        Some(Fault::Reset) => {
            client.write_all(&resp[..body_at + (resp.len() - body_at) / 2])?;
            reset(&client);
        }
        Some(Fault::Truncate) => {
            let cut = if resp.len() > body_at {
                body_at + (resp.len() - body_at) / 2
            } else {
                body_at.saturating_sub(2)
            };
            client.write_all(&resp[..cut])?;
        }
        Some(Fault::Corrupt) if resp.len() > body_at => {
            let i = body_at + (resp.len() - body_at) / 2;
            resp[i] ^= 0x55;
            client.write_all(&resp)?;
        }
        _ => client.write_all(&resp)?,
    }
    Ok(())
}

/// Closes with RST instead of FIN (SO_LINGER 0).
fn reset(s: &TcpStream) {
    use std::os::unix::io::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a valid socket with a properly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}
