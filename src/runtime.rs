//! One process in an unpacked root filesystem, run with runc — the one OCI runtime config
//! imgbuild writes (for `imgbuild test` and for sdist builds): its own pid, network, ipc, uts
//! and mount namespaces (no network but loopback), `/proc`, a tmpfs `/dev` with `/dev/pts` and
//! `/dev/shm`, a read-only `/sys`, the usual masked and read-only `/proc` paths.

use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// What runs, as whom, with which privileges.
pub struct Process<'a> {
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: &'a str,
    pub uid: u32,
    pub gid: u32,
    /// Bounding, effective and permitted capabilities.
    pub capabilities: &'a [&'a str],
    /// RLIMIT_NOFILE (soft, hard).
    pub nofile: (u64, u64),
    pub no_new_privileges: bool,
}

/// Writes `bundle/config.json` for `p` in `rootfs`.
pub fn write_config(
    bundle: &Path,
    rootfs: &Path,
    p: &Process,
    read_only: bool,
    hostname: &str,
) -> Result<()> {
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": p.uid, "gid": p.gid},
            "args": p.args,
            "env": p.env,
            "cwd": p.cwd,
            "capabilities": {
                "bounding": p.capabilities,
                "effective": p.capabilities,
                "permitted": p.capabilities
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": p.nofile.1, "soft": p.nofile.0}],
            "noNewPrivileges": p.no_new_privileges
        },
        "root": {"path": rootfs, "readonly": read_only},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec)?,
    )?;
    Ok(())
}

/// The `runc` on PATH, if there is one.
pub fn runc() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("runc"))
        .find(|p| p.is_file())
}

/// Runs the bundle's container `id` to its end (no stdin) and deletes it, whatever happened.
pub fn run(runc: &Path, bundle: &Path, id: &str) -> Result<Output> {
    let res = Command::new(runc)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .output();
    let _ = Command::new(runc).args(["delete", "-f", id]).output();
    res.with_context(|| format!("running {}", runc.display()))
}

/// Whether this machine (OCI architecture `host`, `Platform::host`) runs programs of the OCI
/// architecture `arch` (`amd64`, `arm64`, …):
/// natively, or through a registered, enabled binfmt_misc handler (qemu-user-static) with the
/// `F` flag, which opens the emulator when it is registered so that it works inside a
/// container's root filesystem. `Err` says why not and how to fix it.
pub fn can_run(arch: &str, host: &str) -> Result<(), String> {
    if arch == host || (host == "amd64" && arch == "386") {
        return Ok(());
    }
    let qemu = match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        other => return Err(format!("no emulator is known for {other}")),
    };
    let dir = Path::new("/proc/sys/fs/binfmt_misc");
    let how = String::from(
        "register qemu-user-static: `apt-get install qemu-user-static binfmt-support` (Debian/Ubuntu; \
         mount binfmt_misc first if /proc/sys/fs/binfmt_misc is empty: \
         `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc`), or in GitHub Actions \
         `docker/setup-qemu-action`",
    );
    if !dir.join("status").is_file() {
        return Err(format!(
            "binfmt_misc is not mounted, so {arch} programs cannot run on this {host} machine; {how}"
        ));
    }
    let entry = dir.join(format!("qemu-{qemu}"));
    let text = std::fs::read_to_string(&entry).map_err(|_| {
        format!(
            "no binfmt_misc handler for {arch} ({}) is registered on this {host} machine; {how}",
            entry.display()
        )
    })?;
    if text.lines().next().is_none_or(|l| l.trim() != "enabled") {
        return Err(format!("the binfmt_misc handler {} is disabled; enable it with `update-binfmts --enable qemu-{qemu}`", entry.display()));
    }
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap_or("")
        .trim();
    if !flags.contains('F') {
        return Err(format!(
            "the binfmt_misc handler {} lacks the F (fix binary) flag, so its emulator is not found inside a container; register qemu-user-static's handlers (they set F)",
            entry.display()
        ));
    }
    Ok(())
}
