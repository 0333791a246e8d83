//! A suite's `InRelease` file: its OpenPGP cleartext signature checked against the archive
//! keyring (the host's `debian-archive-keyring`, or a keyring file the layer names), then the
//! signed text read — never the unsigned bytes around it — for the suite's codename and the
//! sha256 and size of every index file it lists.

use super::control;
use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use std::collections::BTreeMap;

/// The keyring apt itself trusts for the Debian archive.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A verified `InRelease`.
#[derive(Clone, Debug)]
pub struct Release {
    pub codename: String,
    pub suite: String,
    /// `Acquire-By-Hash: yes`: index files can be fetched by their sha256.
    pub by_hash: bool,
    /// Index file path (relative to `dists/SUITE/`) → (sha256 hex, size).
    pub sha256: BTreeMap<String, (String, u64)>,
}

/// Reads the public keys of a keyring (binary, as in `/usr/share/keyrings`, or armored).
pub fn keyring(bytes: &[u8]) -> Result<Vec<SignedPublicKey>, String> {
    let keys: Vec<SignedPublicKey> = if bytes.starts_with(b"-----BEGIN") {
        SignedPublicKey::from_armor_many(bytes)
            .map_err(|e| e.to_string())?
            .0
            .filter_map(|k| k.ok())
            .collect()
    } else {
        SignedPublicKey::from_bytes_many(bytes)
            .map_err(|e| e.to_string())?
            .filter_map(|k| k.ok())
            .collect()
    };
    if keys.is_empty() {
        return Err("it holds no OpenPGP public key".into());
    }
    Ok(keys)
}

/// Checks `inrelease`'s signature with `keys` and parses the signed text. `Err` says why
/// (no signature, no key of the keyring made it, a signature that does not verify).
pub fn verify(inrelease: &str, keys: &[SignedPublicKey]) -> Result<Release, String> {
    let (msg, _) = CleartextSignedMessage::from_string(inrelease)
        .map_err(|e| format!("not an OpenPGP cleartext-signed message ({e})"))?;
    let text = msg.signed_text();
    let mut verified = false;
    'keys: for k in keys {
        if msg.verify(k).is_ok() {
            verified = true;
            break;
        }
        for sub in &k.public_subkeys {
            if msg.verify(&sub.key).is_ok() {
                verified = true;
                break 'keys;
            }
        }
    }
    if !verified {
        let issuers: Vec<String> = msg
            .signatures()
            .iter()
            .flat_map(|s| s.issuer_fingerprint().into_iter().map(|f| f.to_string()))
            .collect();
        return Err(format!(
            "its signature does not verify with any key of the keyring (signed by {})",
            if issuers.is_empty() {
                "an unknown key".to_string()
            } else {
                issuers.join(", ")
            }
        ));
    }
    parse(&text.replace("\r\n", "\n"))
}

/// Parses the (already verified) text of a Release file.
pub fn parse(text: &str) -> Result<Release, String> {
    let p = control::parse(text)?
        .into_iter()
        .next()
        .ok_or("the Release file is empty")?;
    let mut sha256 = BTreeMap::new();
    for line in p.get("SHA256").unwrap_or("").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [hash, size, path] = f[..] {
            sha256.insert(
                path.to_string(),
                (hash.to_string(), size.parse().unwrap_or(0)),
            );
        }
    }
    if sha256.is_empty() {
        return Err("the Release file lists no SHA256 sums".into());
    }
    Ok(Release {
        codename: p.get("Codename").unwrap_or("").to_string(),
        suite: p.get("Suite").unwrap_or("").to_string(),
        by_hash: p.get("Acquire-By-Hash") == Some("yes"),
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sha256_table() {
        let r = parse("Origin: Debian\nCodename: bookworm\nAcquire-By-Hash: yes\nSHA256:\n 0123 12 main/binary-amd64/Packages.gz\n abcd 7 main/Contents-amd64\n").unwrap();
        assert_eq!(r.codename, "bookworm");
        assert!(r.by_hash);
        assert_eq!(
            r.sha256["main/binary-amd64/Packages.gz"],
            ("0123".into(), 12)
        );
        assert!(parse("Origin: Debian\n").is_err());
    }

    #[test]
    fn refuses_text_that_is_not_signed() {
        let e = verify("Origin: Debian\nCodename: bookworm\n", &[]).unwrap_err();
        assert!(e.contains("not an OpenPGP cleartext-signed message"), "{e}");
    }
}
