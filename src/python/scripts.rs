//! Console and GUI scripts: `entry_points.txt` parsed, launchers generated for the image's
//! interpreter, and `#!python` shebangs of wheel scripts rewritten to it.

/// One `[console_scripts]` or `[gui_scripts]` entry: `name = module:attr`.
#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    pub name: String,
    pub module: String,
    pub attr: String,
}

fn dotted_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|p| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// Parses the script sections of `entry_points.txt`. Anything that is not a plain file name
/// or a dotted `module:attr` is an error (it would end up inside generated code or paths).
pub fn parse_entry_points(text: &str) -> Result<Vec<Script>, String> {
    let mut out = Vec::new();
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        if section != "console_scripts" && section != "gui_scripts" {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected `name = module:attr`", i + 1))?;
        let name = name.trim();
        let value = value.split('[').next().unwrap_or(value).trim();
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains(['/', '\\', '\0'])
            || name.starts_with('-')
        {
            return Err(format!(
                "line {}: `{name}` is not a valid script name",
                i + 1
            ));
        }
        let (module, attr) = match value.split_once(':') {
            Some((m, a)) => (m.trim(), a.trim()),
            None => (value, ""),
        };
        if !dotted_identifier(module) || !(attr.is_empty() || dotted_identifier(attr)) {
            return Err(format!("line {}: `{value}` is not `module:attr`", i + 1));
        }
        out.push(Script {
            name: name.to_string(),
            module: module.to_string(),
            attr: attr.to_string(),
        });
    }
    Ok(out)
}

impl Script {
    /// The launcher pip would write, with `#!interpreter`.
    pub fn render(&self, interpreter: &str) -> String {
        let (import, call) = if self.attr.is_empty() {
            (format!("import {}", self.module), self.module.clone())
        } else {
            let head = self.attr.split('.').next().unwrap_or(&self.attr);
            (
                format!("from {} import {head}", self.module),
                self.attr.clone(),
            )
        };
        format!(
            "#!{interpreter}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n{import}\n\
             if __name__ == \"__main__\":\n    sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n    sys.exit({call}())\n"
        )
    }
}

/// PEP 427: a script whose first line is `#!python` (or `#!pythonw`) gets the interpreter.
pub fn fix_shebang(bytes: Vec<u8>, interpreter: &str) -> Vec<u8> {
    for magic in [&b"#!pythonw"[..], &b"#!python"[..]] {
        if let Some(rest) = bytes.strip_prefix(magic) {
            if rest.first().is_none_or(|c| c.is_ascii_whitespace()) {
                let mut out = format!("#!{interpreter}").into_bytes();
                out.extend_from_slice(rest);
                return out;
            }
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_and_launcher() {
        let text = "[console_scripts]\nalembic = alembic.config:main\ncelery = celery.__main__:main [extra]\n\n[gui_scripts]\nviewer=pkg.gui:App.run\n\n[celery.commands]\nx = y:z\n";
        let s = parse_entry_points(text).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].module, "celery.__main__");
        let l = s[2].render("/usr/bin/python3.11");
        assert!(l.starts_with("#!/usr/bin/python3.11\n"));
        assert!(l.contains("from pkg.gui import App\n"));
        assert!(l.contains("sys.exit(App.run())"));
    }

    #[test]
    fn hostile_entry_points_are_refused() {
        for bad in [
            "[console_scripts]\n../../etc/cron = a:b\n",
            "[console_scripts]\nx = os; import evil:b\n",
            "[console_scripts]\nx = a:b()\n",
        ] {
            assert!(parse_entry_points(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shebangs() {
        let f = |s: &str| {
            String::from_utf8(fix_shebang(s.into(), "/usr/local/bin/python3.13")).unwrap()
        };
        assert_eq!(
            f("#!python\nprint(1)\n"),
            "#!/usr/local/bin/python3.13\nprint(1)\n"
        );
        assert_eq!(f("#!pythonw -u\n"), "#!/usr/local/bin/python3.13 -u\n");
        assert_eq!(f("#!/bin/sh\necho\n"), "#!/bin/sh\necho\n");
        assert_eq!(f("#!python3.9\n"), "#!python3.9\n");
    }
}
