//! What running a file in the image needs, and the image's start command checked with it.
//!
//! A container starts by `execve` of the first word of `entrypoint` + `cmd` (docker's
//! joining), found through the config's `PATH` when it has no `/`. That file must exist in the
//! merged filesystem and be executable, and what the kernel runs for it must exist too: the
//! interpreter of a `#!` line (and, for `#!/usr/bin/env prog`, `prog` on PATH), or the program
//! interpreter (`PT_INTERP`, the dynamic loader) of an ELF file. A command that is a shell
//! string (`sh -c "…"`) is checked through the shell, and the string's first command with it.

use crate::image::ImageConfig;
use crate::rootfs::{Kind, Rootfs};

/// Where start-command problems are reported (in place of a layer name).
pub const PLACE: &str = "image config";

/// The PATH directories of an image config (docker's default when it sets none).
pub fn path_dirs(config: &ImageConfig) -> Vec<String> {
    let v = config
        .config
        .env_var("PATH")
        .unwrap_or(crate::image::DEFAULT_PATH);
    v.split(':')
        .filter(|s| s.starts_with('/'))
        .map(|s| s.trim_end_matches('/').to_string())
        .collect()
}

/// Whether `p` is an executable file (or hard link to one) in `fs`, symlinks followed.
pub fn is_executable(fs: &Rootfs, p: &str) -> bool {
    fs.resolve(p)
        .is_some_and(|(_, n)| matches!(n.kind, Kind::File | Kind::Link) && n.mode & 0o111 != 0)
}

/// What is missing for the kernel to run the file whose captured head is `captured` (see
/// `rootfs::Listing::captured`): `None` when nothing is.
pub fn exec_problem(fs: &Rootfs, path: &[String], captured: &str) -> Option<String> {
    if let Some(info) = crate::elf::Info::decode(captured) {
        let interp = info.interp.as_deref().filter(|i| !i.is_empty())?;
        if is_executable(fs, interp) || fs.resolve(interp).is_some() {
            return None;
        }
        return Some(format!(
            "it is an ELF executable whose loader {interp} does not exist in the image (built for another libc?)"
        ));
    }
    let mut words = captured.trim_start_matches("#!").split_whitespace();
    let interp = words.next()?;
    if !is_executable(fs, interp) {
        return Some(format!(
            "its shebang names {interp}, which does not exist in the image"
        ));
    }
    if interp.ends_with("/env") {
        let prog = words.find(|w| !w.starts_with('-'))?;
        if !path
            .iter()
            .any(|d| is_executable(fs, &format!("{d}/{prog}")))
        {
            return Some(format!(
                "its shebang runs `{prog}` through env, and no PATH directory of the image has it"
            ));
        }
    }
    None
}

/// The problems of the image's start command (empty when it has none, or it can start).
pub fn check(fs: &Rootfs, config: &ImageConfig) -> Vec<String> {
    let rc = &config.config;
    let entry = rc.entrypoint.clone().unwrap_or_default();
    let cmd = rc.cmd.clone().unwrap_or_default();
    let (label, argv): (&str, Vec<String>) = if !entry.is_empty() {
        ("entrypoint", entry.iter().chain(&cmd).cloned().collect())
    } else {
        ("cmd", cmd)
    };
    let Some(first) = argv.first() else {
        return vec![];
    };
    let path = path_dirs(config);
    let workdir = rc.working_dir.clone().unwrap_or_else(|| "/".into());
    let mut out = Vec::new();
    if let Err(why) = runnable(fs, &path, &workdir, first) {
        out.push(format!("{label} `{first}` {why}"));
        return out;
    }
    // `sh -c "SCRIPT"`: the script's first command must exist too.
    let shell = first.rsplit('/').next().unwrap_or(first);
    if matches!(shell, "sh" | "bash" | "dash" | "ash" | "zsh" | "ksh") {
        if let Some(i) = argv.iter().position(|a| a == "-c") {
            if let Some(word) = argv.get(i + 1).and_then(|s| first_command(s)) {
                if let Err(why) = runnable(fs, &path, &workdir, &word) {
                    out.push(format!(
                        "{label} runs `{word}` through {first} -c, and `{word}` {why}"
                    ));
                }
            }
        }
    }
    out
}

/// Whether `word` (as exec would find it: through PATH when it has no `/`, else relative to
/// `workdir`) is a file the image can run; else why not.
fn runnable(fs: &Rootfs, path: &[String], workdir: &str, word: &str) -> Result<(), String> {
    let found = if word.contains('/') {
        let p = if word.starts_with('/') {
            word.to_string()
        } else {
            format!("{}/{word}", workdir.trim_end_matches('/'))
        };
        if fs.resolve(&p).is_none() {
            return Err("does not exist in the image".into());
        }
        p
    } else {
        match path
            .iter()
            .map(|d| format!("{d}/{word}"))
            .find(|p| fs.resolve(p).is_some_and(|(_, n)| n.kind != Kind::Dir))
        {
            Some(p) => p,
            None => {
                return Err(format!(
                    "is not in any PATH directory of the image (PATH={})",
                    path.join(":")
                ))
            }
        }
    };
    let (real, node) = fs.resolve(&found).expect("found above");
    if !matches!(node.kind, Kind::File | Kind::Link) {
        return Err(format!("({found}) is not a regular file"));
    }
    if node.mode & 0o111 == 0 {
        return Err(format!("({found}) is not executable"));
    }
    let real = match node.kind {
        Kind::Link => node.target.clone().unwrap_or(real),
        _ => real,
    };
    if let Some(head) = fs.captured.get(&real) {
        if let Some(why) = exec_problem(fs, path, head) {
            return Err(format!("({found}): {why}"));
        }
    }
    Ok(())
}

/// The first command word of a shell script line: assignments, `exec` and `env` skipped; none
/// for shell syntax imgbuild does not follow (builtins, expansions, compound commands).
fn first_command(script: &str) -> Option<String> {
    let words = split(script);
    let mut it = words.into_iter().peekable();
    while let Some(w) = it.peek() {
        if w.contains('=') && !w.starts_with('=') && !w.contains('/') || w == "exec" || w == "env" {
            it.next();
        } else {
            break;
        }
    }
    let w = it.next()?;
    let builtin = [
        "cd", "set", "export", "test", "[", "echo", "true", "false", ":", ".", "source", "if",
        "for", "while", "case", "{", "(", "!", "trap", "ulimit", "umask", "printf", "read", "wait",
        "eval", "command", "exit", "shift", "unset",
    ];
    if builtin.contains(&w.as_str()) || w.contains(['$', '`', '(', ')', ';', '&', '|', '<', '>']) {
        return None;
    }
    Some(w)
}

/// Splits a command line shell-style (quotes and backslashes), for images without a shell.
pub fn split(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '\'') | (None, '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::{Capture, Listing, Node};

    /// A rootfs from `(path, mode, content)` files and `(path, target)` symlinks, captured the
    /// way layers are read.
    fn fs(files: &[(&str, u32, &[u8])], links: &[(&str, &str)]) -> Rootfs {
        let mut l = Listing::default();
        for (p, mode, body) in files {
            let mut c = Capture::new(p, *mode, body.len() as u64);
            c.feed(body);
            l.add_file(p, *mode, body.len() as u64, c.finish());
        }
        for (p, t) in links {
            l.nodes.push(Node {
                path: p.to_string(),
                kind: Kind::Symlink,
                mode: 0o777,
                size: 0,
                sha256: None,
                target: Some(t.to_string()),
            });
        }
        let mut r = Rootfs::default();
        r.apply(0, &l);
        r
    }

    fn config(entry: &[&str], cmd: &[&str]) -> ImageConfig {
        let mut c = ImageConfig::default();
        c.config.set_env("PATH", "/usr/local/bin:/usr/bin:/bin");
        if !entry.is_empty() {
            c.config.entrypoint = Some(entry.iter().map(|s| s.to_string()).collect());
        }
        if !cmd.is_empty() {
            c.config.cmd = Some(cmd.iter().map(|s| s.to_string()).collect());
        }
        c
    }

    #[test]
    fn elf_interpreters_of_real_binaries() {
        // This machine's own dynamic and static executables (Debian: coreutils, busybox-static).
        let ls = std::fs::read("/bin/ls").unwrap();
        let i = crate::rootfs::elf_interp(&ls[..4096]).expect("ls is dynamic");
        assert!(i.starts_with('/') && i.contains("ld-"), "{i}");
        let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
        assert_eq!(crate::rootfs::elf_interp(&bb[..4096]), None);
    }

    #[test]
    fn a_missing_command_is_named_with_the_path() {
        let f = fs(&[("usr/bin/python3", 0o755, b"#!/bin/sh\n")], &[]);
        let p = check(&f, &config(&[], &["node", "server.js"]));
        assert_eq!(
            p,
            ["cmd `node` is not in any PATH directory of the image (PATH=/usr/local/bin:/usr/bin:/bin)"]
        );
        let p = check(&f, &config(&["/usr/bin/node"], &[]));
        assert_eq!(
            p,
            ["entrypoint `/usr/bin/node` does not exist in the image"]
        );
        assert!(
            check(&f, &config(&[], &[])).is_empty(),
            "no command: nothing to check"
        );
    }

    #[test]
    fn what_running_the_command_needs_is_checked() {
        let ls = std::fs::read("/bin/ls").unwrap();
        let interp = crate::rootfs::elf_interp(&ls[..4096]).unwrap();
        let f = fs(
            &[
                ("usr/bin/app", 0o755, &ls[..4096]),
                ("usr/bin/tool", 0o755, b"#!/usr/bin/python3.99\nprint()\n"),
                ("usr/bin/data", 0o644, b"x"),
                ("bin/busybox", 0o755, b"#!/no/such\n"),
            ],
            &[("bin/sh", "busybox")],
        );
        let p = check(&f, &config(&[], &["app"]));
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains(&format!("loader {interp} does not exist")),
            "{p:?}"
        );
        let p = check(&f, &config(&[], &["tool"]));
        assert_eq!(
            p,
            ["cmd `tool` (/usr/bin/tool): its shebang names /usr/bin/python3.99, which does not exist in the image"]
        );
        let p = check(&f, &config(&[], &["data"]));
        assert_eq!(p, ["cmd `data` (/usr/bin/data) is not executable"]);
        // With the loader present, the ELF file can start.
        let f2 = fs(
            &[
                ("usr/bin/app", 0o755, &ls[..4096]),
                (interp.trim_start_matches('/'), 0o755, b"\x7fELF"),
            ],
            &[],
        );
        assert!(check(&f2, &config(&["app"], &["--port", "1"])).is_empty());
    }

    #[test]
    fn a_shell_string_is_checked_through_its_shell() {
        let f = fs(
            &[
                ("bin/sh", 0o755, b"\x7fELF"),
                ("usr/bin/uvicorn", 0o755, b"\x7fELF"),
            ],
            &[],
        );
        let p = check(
            &f,
            &config(
                &[],
                &[
                    "/bin/sh",
                    "-c",
                    "A=1 exec alembic upgrade head && uvicorn app",
                ],
            ),
        );
        assert_eq!(
            p,
            ["cmd runs `alembic` through /bin/sh -c, and `alembic` is not in any PATH directory of the image (PATH=/usr/local/bin:/usr/bin:/bin)"]
        );
        assert!(check(&f, &config(&[], &["/bin/sh", "-c", "uvicorn app"])).is_empty());
        assert!(
            check(&f, &config(&[], &["/bin/sh", "-c", "cd /app && x"])).is_empty(),
            "builtins are not followed"
        );
    }
}
