//! `imgbuild sample`: an embedded sample project (the job-agent frontend and API sources),
//! written to a directory and built there — the first thing to run on a new machine.

use crate::usage;
use anyhow::{Context, Result};
use std::fs;
use std::path::Path;

const TOML: &str = r#"# A sample imgbuild project, written by `imgbuild sample`.
# Build again with `imgbuild frontend` or `imgbuild app` in this directory.

[defaults]
compression = "gzip"
platform = "linux/amd64"

[images.frontend]
repository = "registry.example.com/acme/job-agent-frontend"
base = "scratch"                  # use a Node base (e.g. an `oci:` layout) to run it
workdir = "/app"
cmd = ["node", "server.js"]
start_check = false               # scratch has no node: with a Node base, drop this line
env = { NODE_ENV = "production" }
ports = ["3000/tcp"]

[[images.frontend.layers]]
name = "frontend"
preset = "nextjs-standalone"      # .next/standalone → /app, .next/static, public/ (always present)
root = "frontend"                 # frontend/public does not exist: the preset guarantees /app/public

[images.app]
repository = "registry.example.com/acme/job-agent-api"
base = "scratch"
workdir = "/app"
cmd = ["uvicorn", "src.main:app", "--host", "0.0.0.0", "--port", "8000"]
start_check = false               # scratch has no uvicorn: with a Python base and deps layer, drop this

[[images.app.layers]]
name = "app"
files = [{ from = "src", to = "/app/src" }, { from = "alembic", to = "/app/alembic" }, { from = "alembic.ini", to = "/app/alembic.ini" }]
exclude = ["**/__pycache__", "**/*.pyc"]
expect = ["/app/src/main.py"]
"#;

macro_rules! files {
    ($($p:literal),* $(,)?) => { &[$(($p, include_bytes!(concat!("../fixtures/job-agent/", $p)) as &[u8])),*] };
}

const FILES: &[(&str, &[u8])] = files![
    "frontend/package.json",
    "frontend/.next/standalone/server.js",
    "frontend/.next/standalone/package.json",
    "frontend/.next/static/chunks/main-abc123.js",
    "frontend/.next/static/css/app-4f1e2d.css",
    "src/__init__.py",
    "src/main.py",
    "src/db.py",
    "src/models.py",
    "src/worker.py",
    "alembic.ini",
    "alembic/env.py",
    "alembic/script.py.mako",
    "alembic/versions/0001_create_jobs.py",
];

/// Writes the sample project into `dir`, which must not exist or be empty.
pub fn write(dir: &Path) -> Result<()> {
    if dir.exists()
        && fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        if dir.join("imgbuild.toml").is_file()
            && fs::read_to_string(dir.join("imgbuild.toml"))
                .ok()
                .as_deref()
                == Some(TOML)
        {
            return Ok(()); // already the sample: build it again
        }
        return Err(usage!(
            "{} exists and is not empty; choose a new directory for the sample",
            dir.display()
        ));
    }
    for (path, bytes) in FILES
        .iter()
        .copied()
        .chain([("imgbuild.toml", TOML.as_bytes())])
    {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap())
            .with_context(|| format!("creating {}", dir.display()))?;
        fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
