//! Usage errors with a hint, for the python modules (here so that they need not reach into
//! `python`'s own module file for it).

/// A usage error (exit 2) with a hint on what to do.
pub(crate) fn hinted(msg: String, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(crate::error::UsageError::new(msg).hint(hint))
}
