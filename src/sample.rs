//! `imgbuild sample`: an embedded sample project (the job-agent frontend and API sources),
//! written to a directory and built there — the first thing to run on a new machine.

use crate::usage;
use anyhow::{Context, Result};
use std::fs;
use std::path::Path;

const TOML: &str = r#"# A sample imgbuild project, written by `imgbuild sample`.
# Build again with `imgbuild frontend` or `imgbuild app` in this directory; `imgbuild test app`
# runs the smoke lines in the image with runc. Both bases are built from the Debian archive
# (the mirror: `debian_mirror` below, else IMGBUILD_DEBIAN_MIRROR, else this machine's apt
# sources); every package is pinned in imgbuild.lock on the first build.

[defaults]
compression = "gzip"
platform = "linux/amd64"
# debian_mirror = "http://MIRROR/debian"

[images.frontend]
repository = "registry.example.com/acme/job-agent-frontend"
base = { debian = "trixie", packages = ["nodejs"] }
workdir = "/app"
cmd = ["node", "server.js"]
env = { NODE_ENV = "production" }
ports = ["3000/tcp"]
smoke = ["node --check /app/server.js", "test -d /app/public"]

[[images.frontend.layers]]
name = "frontend"
preset = "nextjs-standalone"      # .next/standalone → /app, .next/static, public/ (always present)
root = "frontend"                 # frontend/public does not exist: the preset guarantees /app/public

[images.app]
repository = "registry.example.com/acme/job-agent-api"
base = { debian = "trixie", packages = ["python3"] }
workdir = "/app"
cmd = ["alembic", "upgrade", "head"]
smoke = ["python3 -c 'from alembic.config import Config; import src.models'", "alembic --help", "alembic upgrade head", "alembic current"]

# The API's database layer from Debian's own packages (no package index needed for the sample);
# a real project uses a `python = { lock = "uv.lock" }` layer (see README: Python layers).
[[images.app.layers]]
name = "system"
debian = { packages = ["alembic", "python3-sqlalchemy"] }

[[images.app.layers]]
name = "app"
files = [{ from = "alembic", to = "/app/alembic" }, { from = "alembic.ini", to = "/app/alembic.ini" }, { from = "src/__init__.py", to = "/app/src/__init__.py" }, { from = "src/models.py", to = "/app/src/models.py" }, { from = "src/db.py", to = "/app/src/db.py" }]
exclude = ["**/__pycache__", "**/*.pyc"]
expect = ["/app/src/models.py"]
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
