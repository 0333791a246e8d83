//! `imgbuild pin COMPOSE_FILE...`: set compose services' `image:` to the pushed digests.

use super::global::Global;
use crate::pin::{self, Action, Source};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PinArgs {
    /// Compose files, in `docker compose -f` order (later ones override earlier ones)
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Write `VAR=repo@sha256:…` here for services whose image is `${VAR}`
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// Change nothing; exit 1 when a service is not pinned to the current digest (for CI)
    #[arg(long)]
    check: bool,
    /// Take digests from `imgbuild build --json` / `push --json` output instead of the last pushes
    #[arg(long, value_name = "FILE")]
    from_json: Option<PathBuf>,
}

pub fn run(g: &Global, a: &PinArgs) -> Result<i32> {
    let files: Vec<PathBuf> = a.files.iter().map(|f| g.cwd.join(f)).collect();
    let project;
    let source = match &a.from_json {
        Some(j) => Source::Json {
            file: g.cwd.join(j),
            shown: j,
        },
        None => {
            project = g.project()?;
            Source::Records(&project)
        }
    };
    let pins = pin::gather(source, &files, a.check)?;
    let out = pin::pin_files(
        &files,
        &pins,
        a.env_file.as_ref().map(|f| g.cwd.join(f)).as_deref(),
        a.check,
    )?;
    // Paths as the user named them (relative to the working directory).
    let shown = |f: &std::path::Path| f.strip_prefix(&g.cwd).unwrap_or(f).display().to_string();
    let mut stale = 0;
    for act in &out.actions {
        match act {
            Action::Pin {
                service,
                from,
                to,
                file,
                line,
            } => {
                stale += 1;
                let verb = if a.check { "not pinned" } else { "pinned" };
                g.progress.note(&format!(
                    "{verb}: {service} ({}:{line}) {from} → {to}",
                    shown(file)
                ));
            }
            Action::AlreadyPinned { service, .. } => {
                g.progress.note(&format!("up to date: {service}"))
            }
            Action::Variable {
                service,
                image,
                var,
            } => g.progress.note(&format!(
                "variable: {service} uses `{image}`; {}",
                if a.env_file.is_some() {
                    format!("{var} set in the env file")
                } else {
                    format!("pass --env-file FILE to set {var}")
                }
            )),
            Action::NotBuilt { service, image } => g.progress.note(&format!(
                "skipped: {service} ({image}) is not an image imgbuild pushed"
            )),
            Action::BuildOnly { service } => g.progress.note(&format!(
                "skipped: {service} has only `build:`, no image to pin"
            )),
        }
    }
    if a.check && (stale > 0 || !out.changed.is_empty()) {
        let files: Vec<String> = out.changed.iter().map(|f| shown(f)).collect();
        let files = if files.is_empty() {
            "the compose files".to_string()
        } else {
            files.join(", ")
        };
        let what = if stale > 0 {
            format!("{stale} service(s) in {files} are")
        } else {
            format!("{files} is")
        };
        g.progress.note(&format!(
            "{what} not pinned to the current digests; run `imgbuild pin` without --check"
        ));
        return Ok(1);
    }
    Ok(0)
}
