//! Where registry credentials come from, in this order:
//! 1. `IMGBUILD_REGISTRY_USER` / `IMGBUILD_REGISTRY_PASSWORD` — the CI way — for
//!    `IMGBUILD_REGISTRY_HOST` when that is set, else for the registries a build pushes to (or the
//!    registry of a reference named on the command line), never for a base's other registry;
//! 2. containers `auth.json`: `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`,
//!    then `~/.config/containers/auth.json` (keys may be `host`, or `host/path` for one repository);
//! 3. docker `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
//!    `credHelpers[host]`, then `auths[host]` (base64 `auth`, or `username`/`password`,
//!    or `identitytoken`), then `credsStore`, the helpers run as `docker-credential-NAME get`.
//!
//! A small implementation of the docker helper protocol rather than the docker_credential crate:
//! we also need auth.json, repository-scoped keys, `store`/`erase` for `imgbuild login`, and a
//! record of every place looked at for the 401 message. Secrets are never printed: `Credential`'s
//! Debug hides them, and helper output is never echoed.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{Map, Value};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// The key docker uses for Docker Hub in config.json and with helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: String,
    /// The secret is an OAuth2 refresh token (docker's `identitytoken`), not a password.
    pub identity_token: bool,
    /// Where it was found, for messages.
    pub source: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credential {{ username: {:?}, secret: <hidden>, from: {} }}",
            self.username, self.source
        )
    }
}

/// The outcome of a lookup: maybe a credential, and every place that was looked at.
#[derive(Clone, Debug, Default)]
pub struct Lookup {
    pub credential: Option<Credential>,
    pub searched: Vec<String>,
}

impl Lookup {
    pub fn describe_search(&self) -> String {
        self.searched.join("; ")
    }
}

/// Where to look: the process environment by default; tests set their own.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub vars: Option<Vec<(String, String)>>,
    /// Registries `IMGBUILD_REGISTRY_USER`/`PASSWORD` may be sent to when
    /// `IMGBUILD_REGISTRY_HOST` does not say: a build's push targets, so CI's push credentials
    /// never go to a base image's registry. `None`: any (a reference the user named).
    pub env_hosts: Option<Vec<String>>,
}

impl Env {
    fn get(&self, k: &str) -> Option<String> {
        match &self.vars {
            Some(v) => v.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            None => std::env::var(k).ok(),
        }
        .filter(|v| !v.is_empty())
    }

    fn home(&self) -> Option<PathBuf> {
        self.get("HOME").map(PathBuf::from)
    }

    /// containers auth.json files, in the order they are read.
    pub fn auth_json_paths(&self) -> Vec<PathBuf> {
        if let Some(p) = self.get("REGISTRY_AUTH_FILE") {
            return vec![PathBuf::from(p)];
        }
        let mut v = Vec::new();
        if let Some(x) = self.get("XDG_RUNTIME_DIR") {
            v.push(Path::new(&x).join("containers/auth.json"));
        }
        if let Some(h) = self
            .get("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| self.home().map(|h| h.join(".config")))
        {
            v.push(h.join("containers/auth.json"));
        }
        v
    }

    pub fn docker_config_path(&self) -> Option<PathBuf> {
        match self.get("DOCKER_CONFIG") {
            Some(d) => Some(Path::new(&d).join("config.json")),
            None => self.home().map(|h| h.join(".docker/config.json")),
        }
    }
}

/// The key a registry has in config files (`https://index.docker.io/v1/` for Docker Hub).
pub fn config_key(registry: &str) -> String {
    if registry == super::reference::DOCKER_HUB {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// A config key reduced to `host[/path]`: no scheme, no `/v1/`-style API suffix.
fn normalise_key(k: &str) -> String {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    match k.split_once('/') {
        Some((host, path)) => format!("{}/{path}", super::reference::normalise_registry(host)),
        None => super::reference::normalise_registry(k),
    }
}

/// Finds credentials for `registry` (and optionally one `repository` on it).
pub fn lookup(env: &Env, registry: &str, repository: Option<&str>) -> Lookup {
    let mut l = Lookup::default();
    // 1. Environment.
    let host_filter = env.get("IMGBUILD_REGISTRY_HOST");
    match (
        env.get("IMGBUILD_REGISTRY_USER"),
        env.get("IMGBUILD_REGISTRY_PASSWORD"),
    ) {
        (Some(u), Some(p)) => {
            let allowed = match (&host_filter, &env.env_hosts) {
                (Some(h), _) => normalise_key(h) == registry,
                (None, Some(hosts)) => hosts.iter().any(|h| h == registry),
                (None, None) => true,
            };
            if allowed {
                l.credential = Some(Credential {
                    username: u,
                    secret: p,
                    identity_token: false,
                    source: "IMGBUILD_REGISTRY_USER/IMGBUILD_REGISTRY_PASSWORD".into(),
                });
                return l;
            }
            l.searched.push(match host_filter {
                Some(h) => format!(
                    "IMGBUILD_REGISTRY_USER/PASSWORD (set, but only for IMGBUILD_REGISTRY_HOST={h})"
                ),
                None => format!(
                    "IMGBUILD_REGISTRY_USER/PASSWORD (set, but used only for the registries \
                     images are pushed to: {}; set IMGBUILD_REGISTRY_HOST={registry} to use \
                     them here)",
                    env.env_hosts.as_deref().unwrap_or_default().join(", ")
                ),
            });
        }
        (Some(_), None) | (None, Some(_)) => l
            .searched
            .push("IMGBUILD_REGISTRY_USER/PASSWORD (only one of the two is set)".into()),
        (None, None) => l
            .searched
            .push("IMGBUILD_REGISTRY_USER/PASSWORD (not set)".into()),
    }
    // 2. containers auth.json.
    for p in env.auth_json_paths() {
        match read_json(&p) {
            Ok(None) => l.searched.push(format!("{} (absent)", p.display())),
            Err(e) => l
                .searched
                .push(format!("{} (unreadable: {e})", p.display())),
            Ok(Some(doc)) => {
                if take_auths(&mut l, &doc, &p, registry, repository, "") {
                    return l;
                }
            }
        }
    }
    // 3. docker config.json.
    let Some(p) = env.docker_config_path() else {
        l.searched
            .push("docker config.json (no HOME or DOCKER_CONFIG)".into());
        return l;
    };
    let doc = match read_json(&p) {
        Ok(Some(d)) => d,
        Ok(None) => {
            l.searched.push(format!("{} (absent)", p.display()));
            return l;
        }
        Err(e) => {
            l.searched
                .push(format!("{} (unreadable: {e})", p.display()));
            return l;
        }
    };
    let helper_for = |name: &str, l: &mut Lookup, what: &str| -> Option<Credential> {
        match helper_get(env, name, &config_key(registry)) {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                l.searched.push(format!(
                    "{} {what} docker-credential-{name} (no credentials for {registry})",
                    p.display()
                ));
                None
            }
            Err(e) => {
                l.searched.push(format!(
                    "{} {what} docker-credential-{name} ({e:#})",
                    p.display()
                ));
                None
            }
        }
    };
    if let Some(h) = cred_helper_entry(&doc, registry) {
        if let Some(c) = helper_for(h, &mut l, "credHelpers") {
            l.credential = Some(c);
            return l;
        }
    }
    if take_auths(&mut l, &doc, &p, registry, None, "auths ") {
        return l;
    }
    if let Some(s) = doc.get("credsStore").and_then(|v| v.as_str()) {
        if let Some(c) = helper_for(s, &mut l, "credsStore") {
            l.credential = Some(c);
            return l;
        }
    }
    l
}

fn read_json(p: &Path) -> Result<Option<Value>> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).map_err(|e| anyhow::anyhow!("not valid JSON: {e}"))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The `auths` entry for a registry (the most specific `host/path` key for `repository`).
fn auths_entry(
    doc: &Value,
    registry: &str,
    repository: Option<&str>,
) -> Option<Result<Credential, String>> {
    let auths = doc.get("auths")?.as_object()?;
    let full = repository.map(|r| format!("{registry}/{r}"));
    let (_, entry) = auths
        .iter()
        .filter_map(|(k, v)| {
            let nk = normalise_key(k);
            let matches = nk == registry
                || full.as_deref().is_some_and(|f| {
                    f == nk || (f.starts_with(&nk) && f[nk.len()..].starts_with('/'))
                });
            matches.then_some((nk.len(), v))
        })
        .max_by_key(|(n, _)| *n)?;
    let entry = entry.as_object()?;
    Some(parse_entry(entry))
}

fn parse_entry(e: &Map<String, Value>) -> Result<Credential, String> {
    let s = |k: &str| e.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    if let Some(t) = s("identitytoken") {
        return Ok(Credential {
            username: s("username").unwrap_or("<token>").to_string(),
            secret: t.to_string(),
            identity_token: true,
            source: String::new(),
        });
    }
    if let Some(a) = s("auth") {
        let raw = B64
            .decode(a.trim())
            .map_err(|_| "its `auth` value is not valid base64".to_string())?;
        let text =
            String::from_utf8(raw).map_err(|_| "its `auth` value is not UTF-8".to_string())?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| "its `auth` value is not base64 of user:password".to_string())?;
        return Ok(Credential {
            username: u.to_string(),
            secret: p.to_string(),
            identity_token: false,
            source: String::new(),
        });
    }
    if let (Some(u), Some(p)) = (s("username"), s("password")) {
        return Ok(Credential {
            username: u.to_string(),
            secret: p.to_string(),
            identity_token: false,
            source: String::new(),
        });
    }
    Err("its entry has no `auth`, `username`/`password` or `identitytoken`".into())
}

fn helper_program(name: &str) -> String {
    format!("docker-credential-{name}")
}

fn run_helper(env: &Env, name: &str, verb: &str, input: &[u8]) -> Result<(bool, Vec<u8>)> {
    let prog = helper_program(name);
    let mut cmd = Command::new(&prog);
    cmd.arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(vars) = &env.vars {
        if let Some((_, path)) = vars.iter().find(|(k, _)| k == "PATH") {
            cmd.env("PATH", path);
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {prog} (is it installed and on PATH?)"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .with_context(|| format!("writing to {prog}"))?;
    let out = child.wait_with_output()?;
    Ok((out.status.success(), out.stdout))
}

/// `docker-credential-NAME get`: `None` when the helper has nothing for this server.
fn helper_get(env: &Env, name: &str, server: &str) -> Result<Option<Credential>> {
    let (ok, stdout) = run_helper(env, name, "get", server.as_bytes())?;
    if !ok {
        let text = String::from_utf8_lossy(&stdout);
        if text.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // The helper's own output is not shown: it may contain anything.
        bail!("the helper failed");
    }
    let v: Value = serde_json::from_slice(&stdout)
        .map_err(|_| anyhow::anyhow!("the helper's answer is not JSON"))?;
    let user = v.get("Username").and_then(|x| x.as_str()).unwrap_or("");
    let secret = v.get("Secret").and_then(|x| x.as_str()).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential {
        username: user.to_string(),
        secret: secret.to_string(),
        identity_token: user == "<token>",
        source: helper_program(name),
    }))
}

/// Stores credentials the docker way: through the configured helper, else as base64 `auth`
/// in config.json (mode 0600). Returns where they went.
pub fn store(env: &Env, registry: &str, username: &str, secret: &str) -> Result<String> {
    let p = env
        .docker_config_path()
        .ok_or_else(|| anyhow::anyhow!("neither HOME nor DOCKER_CONFIG is set"))?;
    let mut doc = read_json(&p)?.unwrap_or_else(|| Value::Object(Map::new()));
    if !doc.is_object() {
        bail!("{} is not a JSON object", p.display());
    }
    let key = config_key(registry);
    let helper = configured_helper(&doc, registry);
    if let Some(h) = helper {
        let input = serde_json::json!({"ServerURL": key, "Username": username, "Secret": secret});
        let (ok, _) = run_helper(env, &h, "store", input.to_string().as_bytes())?;
        if !ok {
            bail!("{} store failed", helper_program(&h));
        }
        // docker keeps an empty placeholder in auths so the registry is listed.
        let auths = doc
            .as_object_mut()
            .unwrap()
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(a) = auths.as_object_mut() {
            a.insert(key, Value::Object(Map::new()));
        }
        write_config(&p, &doc)?;
        return Ok(helper_program(&h));
    }
    let auths = doc
        .as_object_mut()
        .unwrap()
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(a) = auths.as_object_mut() else {
        bail!("{}: `auths` is not an object", p.display());
    };
    let mut e = Map::new();
    e.insert(
        "auth".into(),
        Value::String(B64.encode(format!("{username}:{secret}"))),
    );
    a.insert(key, Value::Object(e));
    write_config(&p, &doc)?;
    Ok(p.display().to_string())
}

/// Takes the `auths` entry of `doc` (read from `path`) for `registry` into `l`; true when
/// found, else notes what was searched.
fn take_auths(
    l: &mut Lookup,
    doc: &Value,
    path: &Path,
    registry: &str,
    repository: Option<&str>,
    what: &str,
) -> bool {
    match auths_entry(doc, registry, repository) {
        Some(Ok(mut c)) => {
            c.source = path.display().to_string();
            l.credential = Some(c);
            return true;
        }
        Some(Err(e)) => l.searched.push(format!("{} ({e})", path.display())),
        None => l.searched.push(format!(
            "{} {what}(no entry for {registry})",
            path.display()
        )),
    }
    false
}

/// The credential helper docker's config names for `registry` (`credHelpers`, else `credsStore`).
fn configured_helper(doc: &Value, registry: &str) -> Option<String> {
    cred_helper_entry(doc, registry)
        .or_else(|| doc.get("credsStore").and_then(|v| v.as_str()))
        .map(String::from)
}

/// `credHelpers[registry]` of docker's config.
fn cred_helper_entry<'a>(doc: &'a Value, registry: &str) -> Option<&'a str> {
    doc.get("credHelpers")?
        .as_object()?
        .iter()
        .find(|(k, _)| normalise_key(k) == registry)
        .and_then(|(_, v)| v.as_str())
}

/// Removes stored credentials for `registry`; returns whether there were any.
pub fn erase(env: &Env, registry: &str) -> Result<bool> {
    let Some(p) = env.docker_config_path() else {
        return Ok(false);
    };
    let Some(mut doc) = read_json(&p)? else {
        return Ok(false);
    };
    let key = config_key(registry);
    let helper = configured_helper(&doc, registry);
    if let Some(h) = helper {
        let _ = run_helper(env, &h, "erase", key.as_bytes());
    }
    let mut removed = false;
    if let Some(a) = doc.get_mut("auths").and_then(|a| a.as_object_mut()) {
        let keys: Vec<String> = a
            .keys()
            .filter(|k| normalise_key(k) == registry)
            .cloned()
            .collect();
        for k in keys {
            a.remove(&k);
            removed = true;
        }
    }
    if removed {
        write_config(&p, &doc)?;
    }
    Ok(removed)
}

fn write_config(p: &Path, doc: &Value) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = p.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = crate::store::temp_path(dir, "config");
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(doc).expect("JSON"))?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, p)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", p.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(dir: &Path, extra: &[(&str, &str)]) -> Env {
        let mut v = vec![("HOME".to_string(), dir.display().to_string())];
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Env {
            vars: Some(v),
            env_hosts: None,
        }
    }

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn config_keys_normalise_like_references() {
        for (k, want) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("docker.io", "docker.io"),
            ("index.docker.io/acme/api", "docker.io/acme/api"),
            ("http://r.example.com:5000/v2", "r.example.com:5000"),
            ("r.example.com/team/app", "r.example.com/team/app"),
        ] {
            assert_eq!(normalise_key(k), want, "{k}");
        }
    }

    #[test]
    fn environment_variables_come_first_and_can_be_limited_to_one_host() {
        let d = tempfile::tempdir().unwrap();
        let e = env(
            d.path(),
            &[
                ("IMGBUILD_REGISTRY_USER", "ci"),
                ("IMGBUILD_REGISTRY_PASSWORD", "pw"),
            ],
        );
        let l = lookup(&e, "r.example.com", None);
        let c = l.credential.unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("ci", "pw"));
        let e = env(
            d.path(),
            &[
                ("IMGBUILD_REGISTRY_USER", "ci"),
                ("IMGBUILD_REGISTRY_PASSWORD", "pw"),
                ("IMGBUILD_REGISTRY_HOST", "other.example.com"),
            ],
        );
        let l = lookup(&e, "r.example.com", None);
        assert!(l.credential.is_none());
        assert!(l
            .describe_search()
            .contains("only for IMGBUILD_REGISTRY_HOST"));
    }

    #[test]
    fn environment_credentials_go_only_to_push_registries_by_default() {
        let d = tempfile::tempdir().unwrap();
        let mut e = env(
            d.path(),
            &[
                ("IMGBUILD_REGISTRY_USER", "ci"),
                ("IMGBUILD_REGISTRY_PASSWORD", "pw"),
            ],
        );
        e.env_hosts = Some(vec!["push.example.com".into()]);
        assert!(lookup(&e, "push.example.com", None).credential.is_some());
        let l = lookup(&e, "docker.io", None);
        assert!(
            l.credential.is_none(),
            "a base registry does not get CI's push password"
        );
        assert!(
            l.describe_search()
                .contains("IMGBUILD_REGISTRY_HOST=docker.io"),
            "{}",
            l.describe_search()
        );
    }

    #[test]
    fn docker_config_auths_base64_and_hub_key() {
        let d = tempfile::tempdir().unwrap();
        let auth = B64.encode("alice:s3cret:with:colons");
        write(
            &d.path().join(".docker/config.json"),
            &format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"r.example.com:5000":{{"username":"bob","password":"bob-Secret-77"}}}}}}"#
            ),
        );
        let e = env(d.path(), &[]);
        let c = lookup(&e, "docker.io", None).credential.unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.secret, "s3cret:with:colons");
        assert!(c.source.ends_with(".docker/config.json"));
        let c = lookup(&e, "r.example.com:5000", None).credential.unwrap();
        assert_eq!(c.username, "bob");
        let l = lookup(&e, "none.example.com", None);
        assert!(l.credential.is_none());
        let s = l.describe_search();
        assert!(s.contains("no entry for none.example.com"), "{s}");
        assert!(
            s.contains("IMGBUILD_REGISTRY_USER/PASSWORD (not set)"),
            "{s}"
        );
        // The secret never shows in Debug (a distinctive one: temp paths are random text).
        assert!(!format!("{c:?}").contains("bob-Secret-77"));
    }

    #[test]
    fn containers_auth_json_wins_over_docker_and_matches_repository_keys() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("auth.json");
        write(
            &a,
            &format!(
                r#"{{"auths":{{"r.example.com":{{"auth":"{}"}},"r.example.com/team/app":{{"auth":"{}"}}}}}}"#,
                B64.encode("host:1"),
                B64.encode("repo:2")
            ),
        );
        write(
            &d.path().join(".docker/config.json"),
            &format!(
                r#"{{"auths":{{"r.example.com":{{"auth":"{}"}}}}}}"#,
                B64.encode("docker:3")
            ),
        );
        let e = env(d.path(), &[("REGISTRY_AUTH_FILE", a.to_str().unwrap())]);
        assert_eq!(
            lookup(&e, "r.example.com", Some("team/app"))
                .credential
                .unwrap()
                .username,
            "repo"
        );
        assert_eq!(
            lookup(&e, "r.example.com", Some("team/other"))
                .credential
                .unwrap()
                .username,
            "host"
        );
        // XDG_RUNTIME_DIR is the default place.
        let x = d.path().join("run");
        write(
            &x.join("containers/auth.json"),
            &format!(
                r#"{{"auths":{{"q.example.com":{{"auth":"{}"}}}}}}"#,
                B64.encode("xdg:4")
            ),
        );
        let e = env(d.path(), &[("XDG_RUNTIME_DIR", x.to_str().unwrap())]);
        assert_eq!(
            lookup(&e, "q.example.com", None)
                .credential
                .unwrap()
                .username,
            "xdg"
        );
        assert_eq!(
            lookup(&e, "r.example.com", None)
                .credential
                .unwrap()
                .username,
            "docker"
        );
    }

    #[test]
    fn credential_helpers_and_store() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        // A helper that knows one server and records what it is asked to store.
        write(
            &bin.join("docker-credential-test"),
            &format!(
                "#!/bin/sh\ncase \"$1\" in\n get) read s; if [ \"$s\" = h.example.com ]; then echo '{{\"ServerURL\":\"h.example.com\",\"Username\":\"helper\",\"Secret\":\"hs\"}}'; else echo 'credentials not found in native keychain'; exit 1; fi;;\n store) cat > {}/stored;;\n erase) cat > {}/erased;;\nesac\n",
                d.path().display(),
                d.path().display()
            ),
        );
        std::fs::set_permissions(
            bin.join("docker-credential-test"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        write(
            &d.path().join(".docker/config.json"),
            r#"{"credHelpers":{"h.example.com":"test"},"credsStore":"test"}"#,
        );
        let path = format!("{}:/usr/bin:/bin", bin.display());
        let e = env(d.path(), &[("PATH", &path)]);
        let c = lookup(&e, "h.example.com", None).credential.unwrap();
        assert_eq!(
            (c.username.as_str(), c.source.as_str()),
            ("helper", "docker-credential-test")
        );
        let l = lookup(&e, "other.example.com", None);
        assert!(l.credential.is_none());
        assert!(l
            .describe_search()
            .contains("credsStore docker-credential-test (no credentials"));
        assert_eq!(
            store(&e, "h.example.com", "u", "p").unwrap(),
            "docker-credential-test"
        );
        let stored = std::fs::read_to_string(d.path().join("stored")).unwrap();
        assert!(stored.contains("\"Secret\":\"p\""), "{stored}");
    }

    #[test]
    fn store_writes_base64_auth_with_private_mode_and_erase_removes_it() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join(".docker/config.json");
        write(
            &cfg,
            r#"{"auths":{"keep.example.com":{"auth":"eDp5"}},"psFormat":"x"}"#,
        );
        let e = env(d.path(), &[]);
        store(&e, "127.0.0.1:5000", "u", "p@ss").unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
        assert_eq!(doc["auths"]["127.0.0.1:5000"]["auth"], B64.encode("u:p@ss"));
        assert_eq!(doc["psFormat"], "x");
        assert_eq!(
            std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            lookup(&e, "127.0.0.1:5000", None)
                .credential
                .unwrap()
                .secret,
            "p@ss"
        );
        assert!(erase(&e, "127.0.0.1:5000").unwrap());
        assert!(lookup(&e, "127.0.0.1:5000", None).credential.is_none());
        assert!(lookup(&e, "keep.example.com", None).credential.is_some());
    }
}
