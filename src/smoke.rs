//! `imgbuild test IMAGE`: unpack the last build into a temporary root filesystem and run the
//! image's `smoke` commands in it with runc the way `docker run IMAGE sh -c LINE` runs them:
//! the image's entrypoint in front (unless a line opts out), its env, workdir and user, `HOME`
//! from the user's passwd entry (else `/`), docker's default capabilities and open-file limits,
//! a writable root (`read_only = true`: read-only, like `--read-only`), and no network. Then the
//! healthcheck's test, once.
//!
//! Differences from docker that remain: no seccomp or AppArmor profile (runc runs without one
//! here), no cgroup limits, `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` are the image's
//! own (docker bind-mounts generated ones), and the network namespace has only loopback (like
//! `--network none`).

use crate::error::Hint;
use crate::image::{ImageConfig, Manifest};
use crate::progress::Progress;
use crate::project::Project;
use crate::store::Store;
use crate::usage;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;

/// Result of running the smoke commands (on one platform of an index: `platform`).
pub struct Outcome {
    pub passed: usize,
    pub failed: Vec<(String, String)>,
    pub platform: Option<crate::image::Platform>,
}

/// Platforms not run here, each with why.
pub type Skipped = Vec<(crate::image::Platform, String)>;

/// The smoke commands on every platform of the last build that this machine can run
/// (natively or through a binfmt_misc emulator), those `asked` for when given. Returns the
/// outcomes and the platforms skipped with why; no platform run is `NoRuntime`.
pub fn run_platforms(
    project: &Project,
    name: &str,
    asked: &[crate::image::Platform],
    progress: &Progress,
) -> Result<(Vec<Outcome>, Skipped)> {
    require_smoke(project, name)?;
    let (_, built) = crate::record::last_build(project, name)?;
    let store = project.store()?;
    // Each platform asked for must be the image's (one of its index's).
    for a in asked {
        built.for_platform(a, &store)?;
    }
    let images: Vec<(Option<crate::image::Platform>, crate::image::Built)> = if built.is_index() {
        built
            .platforms
            .iter()
            .filter(|(p, _)| asked.is_empty() || asked.iter().any(|a| p.matches(a)))
            .map(|(p, b)| (Some(p.clone()), b.clone()))
            .collect()
    } else {
        vec![(None, built)]
    };
    let mut outs = Vec::new();
    let mut skipped = Vec::new();
    for (p, b) in images {
        let config: ImageConfig = serde_json::from_slice(&store.read(&b.manifest.config.digest)?)?;
        if let Err(why) = crate::runtime::can_run(
            &config.architecture,
            &crate::image::Platform::host().architecture,
        ) {
            let p = p.unwrap_or_else(|| crate::image::Platform {
                architecture: config.architecture.clone(),
                os: config.os.clone(),
                variant: config.variant.clone(),
            });
            progress.note(&format!("{name} ({p}): skipped: {why}"));
            skipped.push((p, why));
            continue;
        }
        if let Some(p) = &p {
            progress.note(&format!("{name} ({p}):"));
        }
        let mut o = run_image(project, name, &b, &store, progress)?;
        o.platform = p;
        outs.push(o);
    }
    if outs.is_empty() {
        let why: Vec<String> = skipped.iter().map(|(p, w)| format!("{p}: {w}")).collect();
        bail!(NoRuntime(format!(
            "no platform of `{name}` can run here ({})",
            why.join("; ")
        )));
    }
    Ok((outs, skipped))
}

/// Why the commands could not run here at all (exit 2, never a pass).
#[derive(Debug, thiserror::Error)]
#[error("no OCI runtime can run the image here: {0}")]
pub struct NoRuntime(pub String);

pub fn run(project: &Project, name: &str, progress: &Progress) -> Result<Outcome> {
    require_smoke(project, name)?;
    let (_, built) = crate::record::last_build(project, name)?;
    let store = project.store()?;
    let built = if built.is_index() {
        built
            .for_platform(&crate::image::Platform::host(), &store)?
            .clone()
    } else {
        built
    };
    run_image(project, name, &built, &store, progress)
}

/// A usage error when image `name` has no smoke commands.
fn require_smoke(project: &Project, name: &str) -> Result<()> {
    let spec = project.spec.image(name, &project.spec_path)?;
    if spec.smoke.is_empty() {
        bail!(usage!(
            "image `{name}` has no `smoke` commands in {}",
            project.spec_path.display()
        )
        .hint("add command lines to the image section, e.g. smoke = [\"python3 -c 'import app'\"] or smoke = [\"test -f /app/server.js\"]"));
    }
    Ok(())
}

/// The smoke commands of image `name` run in `built` (one platform's image).
fn run_image(
    project: &Project,
    name: &str,
    built: &crate::image::Built,
    store: &Store,
    progress: &Progress,
) -> Result<Outcome> {
    let spec = project.spec.image(name, &project.spec_path)?;
    let runc = crate::runtime::runc().ok_or_else(|| {
        anyhow::Error::new(NoRuntime(
            "runc is not on PATH (install the `runc` package)".into(),
        ))
    })?;
    let config: ImageConfig = serde_json::from_slice(&store.read(&built.manifest.config.digest)?)?;
    let tmp = tempfile::Builder::new()
        .prefix("imgbuild-test-")
        .tempdir()?;
    let rootfs = tmp.path().join("rootfs");
    unpack(store, &built.manifest, &rootfs).context("unpacking the image")?;
    let mut out = Outcome {
        passed: 0,
        failed: Vec::new(),
        platform: None,
    };
    let limits = Limits::docker();
    if let Some(note) = &limits.note {
        progress.note(note);
    }
    let mut runs: Vec<(String, Vec<String>)> = spec
        .smoke
        .iter()
        .map(|e| {
            let line = e.line().to_string();
            let argv = argv(&rootfs, &config, &line, e.through_entrypoint());
            (line, argv)
        })
        .collect();
    if let Some(h) = &spec.healthcheck {
        // `CMD-SHELL LINE` runs as `/bin/sh -c LINE`, `CMD ARGV…` as is; never the entrypoint.
        let (shown, argv) = match &h.test {
            crate::spec::HealthTest::Shell(l) => (
                format!("healthcheck: {l}"),
                vec!["/bin/sh".to_string(), "-c".into(), l.clone()],
            ),
            crate::spec::HealthTest::Exec(v) => {
                (format!("healthcheck: {}", v.join(" ")), v.clone())
            }
        };
        runs.push((shown, argv));
    }
    for (i, (cmd, args)) in runs.iter().enumerate() {
        let cmd = &cmd.clone();
        write_config(tmp.path(), &rootfs, &config, args, spec.read_only, &limits)?;
        let id = format!("imgbuild-{}-{i}", std::process::id());
        let res = crate::runtime::run(&runc, tmp.path(), &id)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
        if res.status.success() {
            progress.note(&format!("ok    {cmd}"));
            out.passed += 1;
        } else if runtime_failure(&text) {
            return Err(anyhow::Error::new(NoRuntime(format!(
                "runc could not start a container: {}",
                text.trim()
            ))));
        } else {
            progress.note(&format!(
                "FAIL  {cmd} (exit {})\n{}",
                res.status.code().unwrap_or(-1),
                indent(&text)
            ));
            out.failed.push((cmd.clone(), text));
        }
    }
    Ok(out)
}

/// runc errors that mean "this machine cannot run containers", not "the command failed".
fn runtime_failure(text: &str) -> bool {
    let command_problem = [
        "executable file not found",
        "no such file or directory",
        "permission denied: unknown",
    ];
    let runtime_problem = [
        "cgroup",
        "namespace",
        "operation not permitted",
        "rootless",
        "seccomp",
    ];
    text.contains("runc")
        && !command_problem.iter().any(|p| text.contains(p))
        && runtime_problem
            .iter()
            .any(|p| text.to_lowercase().contains(p))
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Applies every layer of `manifest` in order into `dst` (see `layer::unpack`).
pub fn unpack(store: &Store, manifest: &Manifest, dst: &Path) -> Result<()> {
    crate::layer::unpack::unpack(store, &manifest.layers, dst)
}

/// uid and gid for the image's `User` (numbers, or names looked up in the image's files).
fn user_ids(rootfs: &Path, user: Option<&str>) -> Result<(u32, u32)> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let (u, g) = user
        .split_once(':')
        .map(|(u, g)| (u, Some(g)))
        .unwrap_or((user, None));
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let text = fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| {
                Some((
                    f.get(2)?.parse().ok()?,
                    f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0),
                ))
            })
    };
    let (uid, default_gid) = match u.parse::<u32>() {
        Ok(n) => (n, lookup_uid_gid(rootfs, n).unwrap_or(n)),
        Err(_) => lookup("etc/passwd", u)
            .ok_or_else(|| usage!("user `{u}` of the image is not in its /etc/passwd"))?,
    };
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup("etc/group", g)
                .map(|(id, _)| id)
                .ok_or_else(|| usage!("group `{g}` of the image is not in its /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

fn lookup_uid_gid(rootfs: &Path, uid: u32) -> Option<u32> {
    let text = fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.get(2).and_then(|s| s.parse::<u32>().ok()) == Some(uid))
        .and_then(|f| f.get(3)?.parse().ok())
}

/// docker's default capability set (moby `oci/caps/defaults.go`).
pub const DOCKER_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The open-file limit of a container: docker's (since 25.0, moby#45534: soft 1024, hard
/// 524288), or this host's hard limit when it is lower (a container cannot get more).
pub struct Limits {
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    /// Said once when the host lowered docker's limit.
    pub note: Option<String>,
}

impl Limits {
    pub fn docker() -> Limits {
        const SOFT: u64 = 1024;
        const HARD: u64 = 524288;
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        let host =
            (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } == 0).then_some(l.rlim_max);
        match host {
            Some(h) if h < HARD => Limits {
                nofile_soft: SOFT.min(h),
                nofile_hard: h,
                note: Some(format!(
                    "note: open files limited to {h} (this host's hard limit; docker's default is {HARD})"
                )),
            },
            _ => Limits {
                nofile_soft: SOFT,
                nofile_hard: HARD,
                note: None,
            },
        }
    }
}

/// The argv of one smoke line as `docker run IMAGE /bin/sh -c LINE` joins it: the entrypoint
/// (unless `through_entrypoint` is false), then the shell and the line — or the line split
/// shell-style when the image has no `/bin/sh`.
pub fn argv(
    rootfs: &Path,
    config: &ImageConfig,
    line: &str,
    through_entrypoint: bool,
) -> Vec<String> {
    let has_shell =
        rootfs.join("bin/sh").exists() || fs::symlink_metadata(rootfs.join("bin/sh")).is_ok();
    let cmd = if has_shell {
        vec!["/bin/sh".to_string(), "-c".into(), line.to_string()]
    } else {
        crate::start::split(line)
    };
    let entry = config.config.entrypoint.clone().unwrap_or_default();
    if through_entrypoint && !entry.is_empty() {
        entry.into_iter().chain(cmd).collect()
    } else {
        cmd
    }
}

/// `HOME` as docker sets it: the home directory of the user's passwd entry, else `/`.
fn home_of(rootfs: &Path, uid: u32) -> String {
    fs::read_to_string(rootfs.join("etc/passwd"))
        .ok()
        .and_then(|text| {
            text.lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.get(2).and_then(|s| s.parse::<u32>().ok()) == Some(uid))
                .and_then(|f| f.get(5).map(|h| h.to_string()))
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// An OCI runtime config for one command, as docker would run it (see the module header).
fn write_config(
    bundle: &Path,
    rootfs: &Path,
    config: &ImageConfig,
    args: &[String],
    read_only: bool,
    limits: &Limits,
) -> Result<()> {
    let rc = &config.config;
    let (uid, gid) = user_ids(rootfs, rc.user.as_deref())?;
    let mut env = rc.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", crate::image::DEFAULT_PATH));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(rootfs, uid)));
    }
    let cwd = rc
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    fs::create_dir_all(rootfs.join(cwd.trim_start_matches('/')))?;
    fs::create_dir_all(rootfs.join("tmp"))?;
    let _ = std::os::unix::fs::chown(rootfs.join("tmp"), Some(0), Some(0));
    let _ = fs::set_permissions(
        rootfs.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    );
    let caps: Vec<&str> = DOCKER_CAPS.to_vec();
    crate::runtime::write_config(
        bundle,
        rootfs,
        &crate::runtime::Process {
            args,
            env: &env,
            cwd: &cwd,
            uid,
            gid,
            capabilities: &caps,
            nofile: (limits.nofile_soft, limits.nofile_hard),
            no_new_privileges: false,
        },
        read_only,
        "imgbuild-test",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_handles_quotes_and_escapes() {
        assert_eq!(
            crate::start::split(r#"python3 -c 'import a; print("x y")' "" b\ c"#),
            vec!["python3", "-c", "import a; print(\"x y\")", "", "b c"]
        );
    }
}
