//! `.dist-info/RECORD` (PEP 376/627): rows of `path,algo=urlsafe-b64-digest,size`, as CSV.

/// One RECORD row. `path` is relative to the site directory (it may start with `../`).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub path: String,
    /// The sha256 in hex, when the row has one.
    pub sha256: Option<String>,
    /// A digest with another algorithm (kept to report it, never trusted).
    pub other_hash: Option<String>,
    pub size: Option<u64>,
}

impl Row {
    pub fn new(path: impl Into<String>, sha256_hex: &str, size: u64) -> Row {
        Row {
            path: path.into(),
            sha256: Some(sha256_hex.to_string()),
            other_hash: None,
            size: Some(size),
        }
    }
    /// A row without hash or size (the RECORD itself).
    pub fn bare(path: impl Into<String>) -> Row {
        Row {
            path: path.into(),
            sha256: None,
            other_hash: None,
            size: None,
        }
    }
}

/// Whether a path is compiled bytecode, which RECORDs need not list or hash.
pub fn is_bytecode(path: &str) -> bool {
    path.ends_with(".pyc") || path.ends_with(".pyo") || path.contains("__pycache__/")
}

/// Splits one CSV line into fields (double quotes, `""` escapes).
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' if quoted => quoted = false,
            '"' if cur.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated quote in `{line}`"));
    }
    out.push(cur);
    Ok(out)
}

/// Parses a RECORD. Errors name the line.
pub fn parse(text: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let f = fields(line).map_err(|e| format!("RECORD line {}: {e}", i + 1))?;
        if f.len() != 3 || f[0].is_empty() {
            return Err(format!(
                "RECORD line {}: expected `path,hash,size`, got `{line}`",
                i + 1
            ));
        }
        let (mut sha256, mut other_hash) = (None, None);
        if !f[1].is_empty() {
            match f[1].split_once('=') {
                Some(("sha256", b64)) => {
                    sha256 = Some(b64_to_hex(b64).ok_or_else(|| {
                        format!("RECORD line {}: `{}` is not urlsafe base64", i + 1, f[1])
                    })?)
                }
                _ => other_hash = Some(f[1].clone()),
            }
        }
        let size =
            if f[2].is_empty() {
                None
            } else {
                Some(f[2].parse().map_err(|_| {
                    format!("RECORD line {}: size `{}` is not a number", i + 1, f[2])
                })?)
            };
        rows.push(Row {
            path: f[0].clone(),
            sha256,
            other_hash,
            size,
        });
    }
    Ok(rows)
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Writes rows as RECORD text (one `\n`-terminated line each).
pub fn write(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let hash = r
            .sha256
            .as_deref()
            .map(|h| format!("sha256={}", hex_to_b64(h)))
            .unwrap_or_default();
        let size = r.size.map(|s| s.to_string()).unwrap_or_default();
        out.push_str(&format!("{},{hash},{size}\n", quote(&r.path)));
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// urlsafe base64 without padding, as RECORD writes digests.
pub fn b64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

pub fn b64_to_hex(s: &str) -> Option<String> {
    let bytes = b64_decode(s)?;
    (bytes.len() == 32).then(|| hex::encode(bytes))
}

pub fn hex_to_b64(h: &str) -> String {
    b64(&hex::decode(h).unwrap_or_default())
}

/// Resolves a RECORD path against the site directory (both without leading `/`),
/// folding `..`. `None` when it escapes the root.
pub fn installed_path(site_dir: &str, row_path: &str) -> Option<String> {
    let mut parts: Vec<&str> = site_dir.split('/').filter(|c| !c.is_empty()).collect();
    if row_path.starts_with('/') {
        parts.clear();
    }
    for c in row_path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    #[test]
    fn round_trip_with_quotes_and_bare_rows() {
        let h = hex::encode(Sha256::digest(b"hello"));
        let rows = vec![
            Row::new("pkg/__init__.py", &h, 5),
            Row::new("pkg/a,b \"x\".txt", &h, 5),
            Row::new("../../../bin/tool", &h, 5),
            Row::bare("pkg-1.0.dist-info/RECORD"),
        ];
        let text = write(&rows);
        assert!(
            text.contains("pkg/__init__.py,sha256=LPJNul-wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ,5\n")
        );
        assert!(text.contains("\"pkg/a,b \"\"x\"\".txt\""));
        assert_eq!(parse(&text).unwrap(), rows);
    }

    #[test]
    fn base64_matches_python() {
        // base64.urlsafe_b64encode(hashlib.sha256(b"").digest()).rstrip(b"=")
        let h = hex::encode(Sha256::digest(b""));
        assert_eq!(
            hex_to_b64(&h),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        assert_eq!(
            b64_to_hex("47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU").unwrap(),
            h
        );
        assert_eq!(b64(b"ab"), "YWI");
    }

    #[test]
    fn bad_rows_are_errors_naming_the_line() {
        assert!(parse("a,b\n").unwrap_err().contains("line 1"));
        assert!(parse("ok,,\nx,sha256=!!,3\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse("x,,notanumber\n").is_err());
    }

    #[test]
    fn installed_paths() {
        let site = "usr/local/lib/python3.11/dist-packages";
        assert_eq!(
            installed_path(site, "../../../bin/alembic").unwrap(),
            "usr/local/bin/alembic"
        );
        assert_eq!(
            installed_path(site, "a/b.py").unwrap(),
            format!("{site}/a/b.py")
        );
        assert!(installed_path(site, "../../../../../../x").is_none());
        assert!(is_bytecode("a/__pycache__/b.cpython-311.pyc"));
    }
}
