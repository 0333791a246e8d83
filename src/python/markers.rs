//! PEP 508 environment markers, evaluated for the target image (never for this machine).

use super::version::{compare, Version};
use std::collections::{BTreeMap, BTreeSet};

/// The marker environment of the target interpreter and platform.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<&'static str, String>,
    /// Active extras (PEP 685 normalised), for `extra == "x"` and `"x" in extras`.
    pub extras: BTreeSet<String>,
    /// Active dependency groups, for `"x" in dependency_groups` (PEP 751).
    pub groups: BTreeSet<String>,
}

impl Env {
    /// CPython `full_version` on Linux for `machine` (x86_64, aarch64, ...).
    pub fn linux_cpython(full_version: &str, machine: &str) -> Env {
        let short: Vec<&str> = full_version.split('.').take(2).collect();
        let mut vars = BTreeMap::new();
        for (k, v) in [
            ("python_version", short.join(".")),
            ("python_full_version", full_version.to_string()),
            ("implementation_version", full_version.to_string()),
            ("os_name", "posix".into()),
            ("sys_platform", "linux".into()),
            ("platform_system", "Linux".into()),
            ("platform_machine", machine.to_string()),
            ("platform_python_implementation", "CPython".into()),
            ("implementation_name", "cpython".into()),
            ("platform_release", String::new()),
            ("platform_version", String::new()),
        ] {
            vars.insert(k, v);
        }
        Env {
            vars,
            ..Default::default()
        }
    }

    pub fn with_extras(&self, extras: &BTreeSet<String>) -> Env {
        Env {
            extras: extras.clone(),
            ..self.clone()
        }
    }

    pub fn get(&self, var: &str) -> Option<&str> {
        self.vars.get(var).map(|s| s.as_str())
    }
}

/// PEP 685 normalisation of extra and group names.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
        } else {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Var(String),
    Str(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Marker {
    And(Vec<Marker>),
    Or(Vec<Marker>),
    Cmp(Value, String, Value),
}

#[derive(Debug, PartialEq)]
enum Tok {
    Str(String),
    Word(String),
    Op(String),
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' || c == ')' {
            out.push(if c == '(' { Tok::Open } else { Tok::Close });
            i += 1;
        } else if c == '\'' || c == '"' {
            let end = b[i + 1..]
                .iter()
                .position(|&x| x == c)
                .ok_or("unterminated string")?;
            out.push(Tok::Str(b[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if "<>=!~".contains(c) {
            let start = i;
            while i < b.len() && "<>=!~".contains(b[i]) {
                i += 1;
            }
            out.push(Tok::Op(b[start..i].iter().collect()));
        } else if c.is_alphanumeric() || c == '_' || c == '.' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '.') {
                i += 1;
            }
            out.push(Tok::Word(b[start..i].iter().collect()));
        } else {
            return Err(format!("unexpected character `{c}`"));
        }
    }
    Ok(out)
}

const VARS: &[&str] = &[
    "python_version",
    "python_full_version",
    "os_name",
    "sys_platform",
    "platform_release",
    "platform_system",
    "platform_version",
    "platform_machine",
    "platform_python_implementation",
    "implementation_name",
    "implementation_version",
    "extra",
    "extras",
    "dependency_groups",
];

fn canonical_var(w: &str) -> Option<&'static str> {
    let w = match w {
        "os.name" => "os_name",
        "sys.platform" => "sys_platform",
        "platform.version" => "platform_version",
        "platform.machine" => "platform_machine",
        "platform.python_implementation" | "python_implementation" => {
            "platform_python_implementation"
        }
        w => w,
    };
    VARS.iter().find(|v| **v == w).copied()
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(x)) if x == w)
    }
    fn or(&mut self) -> Result<Marker, String> {
        let mut v = vec![self.and()?];
        while self.peek_word("or") {
            self.pos += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap()
        } else {
            Marker::Or(v)
        })
    }
    fn and(&mut self) -> Result<Marker, String> {
        let mut v = vec![self.atom()?];
        while self.peek_word("and") {
            self.pos += 1;
            v.push(self.atom()?);
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap()
        } else {
            Marker::And(v)
        })
    }
    fn atom(&mut self) -> Result<Marker, String> {
        if self.toks.get(self.pos) == Some(&Tok::Open) {
            self.pos += 1;
            let m = self.or()?;
            if self.toks.get(self.pos) != Some(&Tok::Close) {
                return Err("missing `)`".into());
            }
            self.pos += 1;
            return Ok(m);
        }
        let l = self.value()?;
        let op = match self.toks.get(self.pos) {
            Some(Tok::Op(o))
                if ["<", "<=", "==", "!=", ">", ">=", "~=", "==="].contains(&o.as_str()) =>
            {
                o.clone()
            }
            Some(Tok::Word(w)) if w == "in" => "in".into(),
            Some(Tok::Word(w)) if w == "not" => {
                self.pos += 1;
                if !self.peek_word("in") {
                    return Err("expected `in` after `not`".into());
                }
                "not in".into()
            }
            other => return Err(format!("expected a comparison operator, found {other:?}")),
        };
        self.pos += 1;
        let r = self.value()?;
        Ok(Marker::Cmp(l, op, r))
    }
    fn value(&mut self) -> Result<Value, String> {
        let t = self.toks.get(self.pos).ok_or("unexpected end of marker")?;
        self.pos += 1;
        match t {
            Tok::Str(s) => Ok(Value::Str(s.clone())),
            Tok::Word(w) => canonical_var(w)
                .map(|v| Value::Var(v.to_string()))
                .ok_or_else(|| format!("unknown marker variable `{w}`")),
            other => Err(format!("expected a value, found {other:?}")),
        }
    }
}

impl Marker {
    pub fn parse(s: &str) -> Result<Marker, String> {
        let mut p = Parser {
            toks: lex(s)?,
            pos: 0,
        };
        let m = p.or()?;
        if p.pos != p.toks.len() {
            return Err(format!("unexpected {:?}", p.toks[p.pos]));
        }
        Ok(m)
    }

    pub fn eval(&self, env: &Env) -> bool {
        match self {
            Marker::And(v) => v.iter().all(|m| m.eval(env)),
            Marker::Or(v) => v.iter().any(|m| m.eval(env)),
            Marker::Cmp(l, op, r) => cmp(env, l, op, r),
        }
    }
}

/// Parses and evaluates; an empty marker is true.
pub fn evaluate(marker: &str, env: &Env) -> Result<bool, String> {
    if marker.trim().is_empty() {
        return Ok(true);
    }
    Ok(Marker::parse(marker)
        .map_err(|e| format!("invalid marker `{marker}`: {e}"))?
        .eval(env))
}

fn set_of<'a>(env: &'a Env, v: &Value) -> Option<&'a BTreeSet<String>> {
    match v {
        Value::Var(n) if n == "extras" || n == "extra" => Some(&env.extras),
        Value::Var(n) if n == "dependency_groups" => Some(&env.groups),
        _ => None,
    }
}

fn cmp(env: &Env, l: &Value, op: &str, r: &Value) -> bool {
    // `extra == "x"`, `"x" in extras`, `"x" in dependency_groups`: membership tests.
    let member = |set: &BTreeSet<String>, other: &Value| match other {
        Value::Str(s) => set.contains(&normalize(s)),
        _ => false,
    };
    match (l, op, r) {
        (Value::Var(n), "==" | "!=", other) | (other, "==" | "!=", Value::Var(n))
            if n == "extra" =>
        {
            return member(&env.extras, other) == (op == "==");
        }
        (other, "in" | "not in", set)
            if set_of(env, set).is_some() && matches!(set, Value::Var(n) if n != "extra") =>
        {
            return member(set_of(env, set).unwrap(), other) == (op == "in");
        }
        _ => {}
    }
    let text = |v: &Value| match v {
        Value::Str(s) => s.clone(),
        Value::Var(n) => env.get(n).unwrap_or("").to_string(),
    };
    let (a, b) = (text(l), text(r));
    match op {
        "in" => return b.contains(&a),
        "not in" => return !b.contains(&a),
        "===" => return a == b,
        _ => {}
    }
    if let Some(va) = Version::parse(&a) {
        if let Some(res) = compare(&va, op, &b) {
            return res;
        }
    }
    match op {
        "==" => a == b,
        "!=" => a != b,
        "<" => a < b,
        "<=" => a <= b,
        ">" => a > b,
        ">=" => a >= b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::linux_cpython("3.13.1", "aarch64")
    }

    #[test]
    fn markers_are_evaluated_for_the_target() {
        let e = env();
        let t = |m: &str| evaluate(m, &e).unwrap();
        assert!(t("python_version >= '3.12'"));
        assert!(t(
            "python_full_version >= '3.13.1' and sys_platform == 'linux'"
        ));
        assert!(!t("sys_platform == 'win32'"));
        assert!(t(
            "platform_machine == 'aarch64' or platform_machine == 'x86_64'"
        ));
        assert!(!t("python_version < '3.12' and (sys_platform == 'linux')"));
        assert!(t("platform_python_implementation != 'PyPy'"));
        assert!(t("'linux' in sys_platform"));
        assert!(t("implementation_name == \"cpython\""));
        assert!(t(""));
        assert!(t("os.name == 'posix'"));
    }

    #[test]
    fn extras_and_groups() {
        let mut e = env();
        e.extras.insert("binary".into());
        e.groups.insert("dev".into());
        let t = |m: &str| evaluate(m, &e).unwrap();
        assert!(t("extra == 'Binary'"));
        assert!(!t("extra == 'pool'"));
        assert!(t("'binary' in extras"));
        assert!(t(
            "'dev' in dependency_groups and 'x' not in dependency_groups"
        ));
    }

    #[test]
    fn bad_markers_are_errors() {
        assert!(evaluate("python_version >", &env()).is_err());
        assert!(evaluate("pyhton_version == '3'", &env())
            .unwrap_err()
            .contains("unknown marker variable `pyhton_version`"));
    }
}
