//! The registry subsystem's typed errors: the failures callers branch on (a retry, a restart of
//! an upload, a missing blob, an unexpected status). Everything else stays `anyhow` with context.
//!
//! A registry that refuses the credentials (401/403) or a refused plain-HTTP request is a usage
//! error (`crate::error::UsageError`, exit code 2) and stays one: `crate::error::exit_code`
//! recognises only that type in the chain. [`is_final`] is the test callers use for it.

use reqwest::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered `what` with an unexpected status; `detail` is its error document
    /// (see `transport::registry_error`), shown after the status when the site reads it.
    #[error("{what}: the registry answered {status}{}", detail_suffix(.detail))]
    Status {
        what: String,
        status: StatusCode,
        detail: Option<String>,
    },
    /// A blob the registry does not have (404) where one was required.
    #[error("{what}: the registry does not have it (404)")]
    NotFound { what: String },
    /// A failure worth one more try: a body cut short, bytes that do not match.
    #[error("{0}")]
    Transient(String),
    /// An interrupted upload the registry will not resume (distribution cancels a session whose
    /// state does not match what it received); the caller starts the blob again.
    #[error("{0}")]
    SessionGone(String),
}

fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!(" {d}"),
        None => String::new(),
    }
}

impl RegistryError {
    /// The first registry error in `e`'s chain.
    pub fn find(e: &anyhow::Error) -> Option<&RegistryError> {
        e.chain().find_map(|c| c.downcast_ref::<RegistryError>())
    }

    /// Whether `e` is worth one more try of the same request.
    pub fn is_transient(e: &anyhow::Error) -> bool {
        matches!(Self::find(e), Some(RegistryError::Transient(_)))
    }
}

/// A failure no retry or restart can mend: refused credentials or permissions (401/403), a
/// refused plain-HTTP request, or another usage error.
pub fn is_final(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<crate::error::UsageError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_ones_the_sites_wrote() {
        let s = |detail: Option<&str>| {
            RegistryError::Status {
                what: "checking blob x".into(),
                status: StatusCode::BAD_GATEWAY,
                detail: detail.map(String::from),
            }
            .to_string()
        };
        assert_eq!(
            s(None),
            "checking blob x: the registry answered 502 Bad Gateway"
        );
        assert_eq!(
            s(Some("")),
            "checking blob x: the registry answered 502 Bad Gateway "
        );
        assert_eq!(
            s(Some("BLOB_UNKNOWN: gone")),
            "checking blob x: the registry answered 502 Bad Gateway BLOB_UNKNOWN: gone"
        );
        let e = anyhow::Error::new(RegistryError::NotFound {
            what: "downloading blob y".into(),
        });
        assert_eq!(
            e.to_string(),
            "downloading blob y: the registry does not have it (404)"
        );
        let t = anyhow::Error::new(RegistryError::Transient("cut short".into())).context("outer");
        assert!(RegistryError::is_transient(&t));
        let g = anyhow::Error::new(RegistryError::SessionGone("dropped".into()));
        assert!(matches!(
            RegistryError::find(&g),
            Some(RegistryError::SessionGone(_))
        ));
        assert!(!RegistryError::is_transient(&g));
        assert!(!is_final(&t));
        assert!(is_final(&crate::usage!("refused").context("pushing")));
    }
}
