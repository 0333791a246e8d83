//! `.dist-info/RECORD`: the list of a wheel's (and an installed project's) files with their
//! hashes and sizes, read and written as CSV with the `csv` crate.
//!
//! From the spec (packaging.python.org "Recording installed projects", PEP 376 and PEP 627;
//! "Binary distribution format", PEP 427):
//!
//! > The `RECORD` file holds the list of installed files. It is a CSV file containing one
//! > record (line) per installed file. The CSV dialect must be readable with the default
//! > `reader` of Python's `csv` module: field delimiter: `,` (comma), quoting char: `"`
//! > (straight double quote), line terminator: either `\r\n` or `\n`.
//!
//! > Each record is composed of three elements: the file's **path**, the **hash** of the
//! > contents, and its **size**.
//!
//! > The *hash* is either an empty string or the name of a hash algorithm from
//! > `hashlib.algorithms_guaranteed`, followed by the equals character `=` and the digest of
//! > the file's contents, encoded with the urlsafe-base64-nopad encoding
//! > (`base64.urlsafe_b64encode(digest)` with trailing `=` removed).
//!
//! > The *size* is either the empty string, or file's size in bytes, as a base 10 integer.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use csv::{QuoteStyle, ReaderBuilder, StringRecord, Terminator, WriterBuilder};

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

/// Parses a RECORD. Errors name the line.
///
/// Lines are split at `\n` and lose their trailing `\r`s, so a quoted field cannot span lines
/// (paths never hold a line break) and a stray `\r` inside a line is part of its field.
pub fn parse(text: &str) -> Result<Vec<Row>, String> {
    // One `\n` after each line, its `\r`s dropped: the csv reader then ends records at `\n` only.
    // An empty line first, as csv-core drops a UTF-8 BOM at the start of its input, which
    // Python's reader keeps (as part of the first path).
    let mut lines = String::with_capacity(text.len() + 2);
    lines.push('\n');
    for line in text.lines() {
        lines.push_str(line.trim_end_matches('\r'));
        lines.push('\n');
    }
    // "The CSV dialect must be readable with the default `reader` of Python's `csv` module":
    // no header row, `,` between fields, `"` quotes with `""` for a quote inside; rows of any
    // length are read so that a short one is reported here, naming its line. Empty lines are
    // skipped.
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(Terminator::Any(b'\n'))
        .from_reader(lines.as_bytes());
    let mut rows = Vec::new();
    let mut f = StringRecord::new();
    // Reading valid UTF-8 from memory does not fail; an error would still be reported.
    while reader
        .read_record(&mut f)
        .map_err(|e| format!("RECORD: {e}"))?
    {
        // A record's position is where the reader started, before the empty lines it skipped
        // (the first of them the one added above: `n` counts the lines of `text`).
        let (mut at, mut n) = f
            .position()
            .map_or((0, 0), |p| (p.byte() as usize, p.line() as usize - 1));
        while lines[at..].starts_with('\n') {
            at += 1;
            n += 1;
        }
        let line = lines[at..].split('\n').next().unwrap_or_default();
        // A line break inside a field: a quote opened on line `n` and not closed there.
        if f.iter().any(|field| field.contains('\n')) {
            return Err(format!("RECORD line {n}: unterminated quote in `{line}`"));
        }
        // "Each record is composed of three elements: the file's path, the hash of the
        // contents, and its size."
        if f.len() != 3 || f[0].is_empty() {
            return Err(format!(
                "RECORD line {n}: expected `path,hash,size`, got `{line}`"
            ));
        }
        // "The hash is either an empty string or the name of a hash algorithm [...], followed by
        // the equals character `=` and the digest of the file's contents, encoded with the
        // urlsafe-base64-nopad encoding." Only sha256 is trusted; other algorithms are kept to
        // report them.
        let (mut sha256, mut other_hash) = (None, None);
        if !f[1].is_empty() {
            match f[1].split_once('=') {
                Some(("sha256", b64)) => {
                    sha256 = Some(b64_to_hex(b64).ok_or_else(|| {
                        format!("RECORD line {n}: `{}` is not urlsafe base64", &f[1])
                    })?)
                }
                _ => other_hash = Some(f[1].to_string()),
            }
        }
        // "The size is either the empty string, or file's size in bytes, as a base 10 integer."
        let size = if f[2].is_empty() {
            None
        } else {
            Some(
                f[2].parse()
                    .map_err(|_| format!("RECORD line {n}: size `{}` is not a number", &f[2]))?,
            )
        };
        rows.push(Row {
            path: f[0].to_string(),
            sha256,
            other_hash,
            size,
        });
    }
    Ok(rows)
}

/// Writes rows as RECORD text (one `\n`-terminated line each).
///
/// Quoted only where needed: a field holding `,`, `"`, `\r` or `\n` is put in double quotes, a
/// `"` inside doubled, as Python's `csv.writer` does. Only sha256 digests are written; a row
/// without one has an empty hash ("Commonly, entries for `.pyc` files and the `RECORD` file
/// itself have empty *hash* and *size*").
pub fn write(rows: &[Row]) -> String {
    let mut w = WriterBuilder::new()
        .has_headers(false)
        .quote_style(QuoteStyle::Necessary)
        .terminator(Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    for r in rows {
        let hash = r
            .sha256
            .as_deref()
            .map(|h| format!("sha256={}", hex_to_b64(h)))
            .unwrap_or_default();
        let size = r.size.map(|s| s.to_string()).unwrap_or_default();
        w.write_record([r.path.as_str(), &hash, &size])
            .expect("writing to memory");
    }
    let bytes = w.into_inner().expect("writing to memory");
    String::from_utf8(bytes).expect("written from UTF-8 fields")
}

/// urlsafe base64 without padding, as RECORD writes digests
/// (`base64.urlsafe_b64encode(digest).rstrip(b"=")`).
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The sha256 digest (hex) of a RECORD hash value: exactly the urlsafe-base64-nopad form of 32
/// bytes. The standard alphabet's `+` and `/`, `=` padding and non-zero trailing bits are
/// refused: no tool that follows the spec writes them.
pub fn b64_to_hex(s: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
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

    /// The hand-written CSV and base64 this module had before the `csv` and `base64` crates, as
    /// the reference their output is compared with.
    mod before {
        use super::super::Row;

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

        /// The old parser; its lenient base64 is not reproduced (only urlsafe-nopad digests
        /// are fed to both).
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
                            sha256 = Some(super::super::b64_to_hex(b64).ok_or_else(|| {
                                format!("RECORD line {}: `{}` is not urlsafe base64", i + 1, f[1])
                            })?)
                        }
                        _ => other_hash = Some(f[1].clone()),
                    }
                }
                let size = if f[2].is_empty() {
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

        pub fn write(rows: &[Row]) -> String {
            let mut out = String::new();
            for r in rows {
                let hash = r
                    .sha256
                    .as_deref()
                    .map(|h| format!("sha256={}", b64(&hex::decode(h).unwrap_or_default())))
                    .unwrap_or_default();
                let size = r.size.map(|s| s.to_string()).unwrap_or_default();
                out.push_str(&format!("{},{hash},{size}\n", quote(&r.path)));
            }
            out
        }

        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

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
    }

    /// A small deterministic generator (xorshift) for the comparisons below.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[(self.next() % from.len() as u64) as usize]
        }
    }

    #[test]
    fn written_bytes_are_those_of_the_hand_written_csv() {
        let h = hex::encode(Sha256::digest(b"hello"));
        let paths = [
            "pkg/__init__.py",
            "pkg/a,b.txt",
            "pkg/\"quoted\".txt",
            "\"",
            "\"\"",
            "pkg/a\"b,c\"\"d",
            "pkg/with space/x y.txt",
            " leading and trailing ",
            "pkg/naïve/日本語/🐍.py",
            "pkg/carriage\rreturn",
            "pkg/line\nbreak",
            "pkg/back\\slash",
            "#not-a-comment",
            "pkg/tab\there;semi'apos",
            "../../../bin/tool",
            "",
        ];
        let mut rows = Vec::new();
        for p in paths {
            rows.push(Row::new(p, &h, 5));
            rows.push(Row::bare(p));
            rows.push(Row {
                path: p.to_string(),
                sha256: None,
                other_hash: Some("md5=abc".into()),
                size: Some(0),
            });
        }
        assert_eq!(write(&rows), before::write(&rows));
        for r in &rows {
            assert_eq!(
                write(std::slice::from_ref(r)),
                before::write(std::slice::from_ref(r))
            );
        }
        assert_eq!(write(&[]), "");
    }

    #[test]
    fn base64_is_that_of_the_hand_written_encoder() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for len in 0..100 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert_eq!(b64(&bytes), before::b64(&bytes), "{bytes:?}");
        }
    }

    #[test]
    fn parsing_agrees_with_the_hand_written_csv() {
        let good = format!("sha256={}", b64(&Sha256::digest(b"hello")));
        let hashes = [
            "",
            good.as_str(),
            "sha256=!!",
            "sha256=",
            "sha256",
            "md5=abc",
            "\"md5=a,b\"",
        ];
        let sizes = ["", "5", "x", "12", "\"7\"", "-1"];
        let bits = [
            "a", "b/c", ",", "\"", "\"\"", " ", "é", "\r", "=", "x\"y", "🐍", "\u{feff}", "\n",
            "\"\"\"",
        ];
        let ends = ["\n", "\r\n", "\r\r\n", "\n\n", "\r"];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..rng.next() % 6 {
                if rng.next().is_multiple_of(3) {
                    for _ in 0..rng.next() % 8 {
                        text.push_str(rng.pick(&bits));
                    }
                } else {
                    let mut path: String =
                        (0..1 + rng.next() % 4).map(|_| rng.pick(&bits)).collect();
                    if rng.next().is_multiple_of(2) {
                        path = format!("\"{}\"", path.replace('"', "\"\""));
                    }
                    text.push_str(&format!(
                        "{path},{},{}",
                        rng.pick(&hashes),
                        rng.pick(&sizes)
                    ));
                }
                text.push_str(rng.pick(&ends));
            }
            if rng.next().is_multiple_of(4) {
                text.pop();
            }
            assert_eq!(parse(&text), before::parse(&text), "{text:?}");
        }
    }

    #[test]
    fn digests_must_be_urlsafe_base64_without_padding() {
        let digest = Sha256::digest(b"hello");
        let h = hex::encode(digest);
        let urlsafe = b64(&digest);
        assert_eq!(urlsafe, "LPJNul-wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ");
        assert_eq!(b64_to_hex(&urlsafe).unwrap(), h);
        // The standard alphabet, padding, a trailing bit set, a digest of another length.
        let standard = urlsafe.replace('-', "+");
        assert!(b64_to_hex(&standard).is_none());
        assert!(b64_to_hex(&format!("{urlsafe}=")).is_none());
        assert!(b64_to_hex("LPJNul-wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCR").is_none());
        assert!(b64_to_hex(&b64(&[0; 31])).is_none());
        let e = parse(&format!("pkg/a.py,sha256={standard},5\n")).unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("is not urlsafe base64"),
            "{e}"
        );
    }

    #[test]
    fn line_numbers_count_blank_lines_and_crlf() {
        let e = parse("a,,\r\n\r\n\nb,,\r\nc,d\r\n").unwrap_err();
        assert_eq!(e, "RECORD line 5: expected `path,hash,size`, got `c,d`");
        let e = parse("a,,\n\"b,,\nc,,\n").unwrap_err();
        assert_eq!(e, "RECORD line 2: unterminated quote in `\"b,,`");
        let e = parse("a,,\nb,,\"3").unwrap_err();
        assert_eq!(e, "RECORD line 2: unterminated quote in `b,,\"3`");
        // A byte order mark stays part of the first path, as Python's csv reader keeps it.
        assert_eq!(parse("\u{feff}a,,\n").unwrap(), [Row::bare("\u{feff}a")]);
    }
}
