//! The reader on this machine's own binaries (Debian: coreutils, libc, busybox-static).

use super::*;

fn stream(bytes: &[u8], chunk: usize) -> Info {
    let mut s = Stream::default();
    for c in bytes.chunks(chunk) {
        s.feed(c);
    }
    s.finish()
}

#[test]
fn a_dynamic_executable() {
    let ls = std::fs::read("/bin/ls").unwrap();
    let i = read(&ls).unwrap();
    assert_eq!(i.machine, 62, "this machine is x86_64");
    assert!(i.class64 && i.complete, "{i:?}");
    assert!(i.interp.as_deref().unwrap().contains("ld-linux"), "{i:?}");
    assert!(i.needed.iter().any(|n| n == "libc.so.6"), "{i:?}");
    // The same however the stream is cut.
    for chunk in [1 << 16, 4093, 512, 64 * 1024 + 1] {
        assert_eq!(stream(&ls, chunk), i, "chunks of {chunk}");
    }
}

#[test]
fn a_shared_library_names_itself_and_its_needs() {
    let dir = "/lib/x86_64-linux-gnu";
    let lib = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libz.so.") || n.starts_with("libtinfo.so."))
                && p.is_file()
        })
        .expect("a libz or libtinfo in /lib/x86_64-linux-gnu");
    let bytes = std::fs::read(&lib).unwrap();
    let i = stream(&bytes, 8192);
    assert!(i.complete, "{i:?}");
    let soname = i.soname.clone().expect("a soname");
    assert!(
        lib.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&soname),
        "{soname} {lib:?}"
    );
    assert!(i.needed.iter().any(|n| n == "libc.so.6"), "{i:?}");
    assert_eq!(i.interp, None);
    assert_eq!(Info::decode(&i.encode()), Some(i));
}

#[test]
fn a_static_executable_needs_nothing() {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let i = stream(&bb, 65536);
    assert_eq!(i.interp, None);
    assert!(i.needed.is_empty() && i.complete, "{i:?}");
    assert_eq!(i.encode(), "\u{7f}ELF\nm62/64");
}

#[test]
fn a_cut_file_keeps_what_it_has_and_says_it_is_incomplete() {
    let ls = std::fs::read("/bin/ls").unwrap();
    let i = read(&ls[..4096]).unwrap();
    assert!(i.interp.is_some() && !i.complete, "{i:?}");
    let i = read(b"\x7fELF").unwrap();
    assert_eq!((i.machine, i.complete), (0, false));
    assert_eq!(Info::decode(&i.encode()), Some(i));
    assert_eq!(read(b"#!/bin/sh\n"), None);
}

#[test]
fn old_listings_decode_to_their_interpreter() {
    let i = Info::decode("\u{7f}ELF /lib64/ld-linux-x86-64.so.2").unwrap();
    assert_eq!(i.interp.as_deref(), Some("/lib64/ld-linux-x86-64.so.2"));
    assert!(!i.complete);
    assert_eq!(Info::decode("#!/bin/sh"), None);
}
