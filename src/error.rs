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
