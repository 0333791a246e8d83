//! `imgbuild login HOST` and `imgbuild logout HOST`: credentials in docker's config.json or its
//! credential helper, checked against the registry before they are stored.

use super::global::Global;
use crate::registry;
use crate::usage;
use anyhow::{Context, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry host, e.g. registry.example.com or 127.0.0.1:5000
    host: String,
    /// User name (default: $IMGBUILD_REGISTRY_USER)
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// Read the password (or token) from standard input
    #[arg(long)]
    password_stdin: bool,
}

pub fn login(g: &Global, a: &LoginArgs) -> Result<i32> {
    use std::io::Read;
    let registry = registry::reference::login_host(&a.host)?;
    let username = a
        .username
        .clone()
        .or_else(|| std::env::var("IMGBUILD_REGISTRY_USER").ok())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            usage!("imgbuild login needs --username USER (or IMGBUILD_REGISTRY_USER)")
        })?;
    if !a.password_stdin {
        return Err(usage!(
            "pass the password on standard input with --password-stdin, e.g. \
             `echo \"$PASSWORD\" | imgbuild login {registry} --username {username} --password-stdin`"
        ));
    }
    let mut secret = String::new();
    std::io::stdin()
        .read_to_string(&mut secret)
        .context("reading the password from standard input")?;
    let secret = secret.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(usage!("no password on standard input"));
    }
    let opts = registry::options_for(&[], &g.insecure);
    let cred = registry::credentials::Credential {
        username: username.clone(),
        secret: secret.clone(),
        identity_token: false,
        source: "--password-stdin".into(),
    };
    registry::client::Client::new(&registry, &opts)?
        .with_credential(cred)
        .check_login()?;
    let env = registry::credentials::Env::default();
    let place = registry::credentials::store(&env, &registry, &username, &secret)?;
    g.progress.note(&format!(
        "logged in to {registry} as {username}; credentials stored in {place}"
    ));
    Ok(0)
}

pub fn logout(g: &Global, host: &str) -> Result<i32> {
    let registry = registry::reference::login_host(host)?;
    let env = registry::credentials::Env::default();
    if registry::credentials::erase(&env, &registry)? {
        g.progress
            .note(&format!("removed the stored credentials for {registry}"));
    } else {
        g.progress
            .note(&format!("no stored credentials for {registry}"));
    }
    Ok(0)
}
