//! Errors that decide the exit code: usage and configuration errors exit 2, everything else 1.

use std::fmt;

/// A usage or configuration error (exit code 2), with hints on what to do.
#[derive(Debug, Clone)]
pub struct UsageError {
    pub message: String,
    pub context: Vec<String>,
    pub hints: Vec<String>,
}

impl UsageError {
    pub fn new(message: impl Into<String>) -> UsageError {
        UsageError {
            message: message.into(),
            context: Vec::new(),
            hints: Vec::new(),
        }
    }
    pub fn hint(mut self, h: impl Into<String>) -> UsageError {
        self.hints.push(h.into());
        self
    }
    pub fn context(mut self, c: impl Into<String>) -> UsageError {
        self.context.push(c.into());
        self
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        for c in &self.context {
            write!(f, "\n{c}")?;
        }
        for h in &self.hints {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UsageError {}

/// Shorthand: `bail_usage!("...")` returns a `UsageError` wrapped in anyhow.
#[macro_export]
macro_rules! usage {
    ($($t:tt)*) => { anyhow::Error::new($crate::error::UsageError::new(format!($($t)*))) };
}

/// The exit code for an error chain: 2 when any cause is a usage error.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.is::<UsageError>()) {
        2
    } else {
        1
    }
}

/// Adds a hint line to a usage error carried in an `anyhow::Error` (or context to another error).
pub trait Hint {
    fn hint(self, h: impl Into<String>) -> anyhow::Error;
}

impl Hint for anyhow::Error {
    fn hint(self, h: impl Into<String>) -> anyhow::Error {
        match self.downcast::<UsageError>() {
            Ok(u) => anyhow::Error::new(u.hint(h)),
            Err(e) => e.context(h.into()),
        }
    }
}

/// Renders an error chain the way the CLI prints it: the messages joined by `: ` on the first
/// line, then hint and context lines.
pub fn render(e: &anyhow::Error) -> String {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let mut lines = text.lines();
        if let Some(first) = lines.next() {
            if head.last() != Some(&first.to_string()) {
                head.push(first.to_string());
            }
        }
        tail.extend(lines.map(String::from));
        if cause.is::<UsageError>() {
            break; // a usage error is the root cause as far as the user is concerned
        }
    }
    let mut out = head.join(": ");
    for t in tail {
        out.push('\n');
        out.push_str(&t);
    }
    out
}
