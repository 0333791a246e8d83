//! ELF files read as their bytes stream past: the header and program headers from the head,
//! then only the file ranges the checks need — the program interpreter (`PT_INTERP`), the
//! dynamic section (`PT_DYNAMIC`) and the dynamic string table it points to — decoded into
//! `Info` (machine, loader, `DT_NEEDED`, `DT_SONAME`, `DT_RPATH`, `DT_RUNPATH`).
//!
//! Layers are read as streams (a tar read back, a wheel member written), so nothing seeks. The
//! string table usually lies in the first `PT_LOAD` segment, *before* the dynamic section that
//! locates it: that segment's bytes (up to `WINDOW_MAX`) are kept until the dynamic section has
//! passed; a string table that lies after it (patchelf, as auditwheel runs it, appends one at
//! the end) is captured when the stream reaches it. Memory per file stays bounded by those
//! limits; a file whose ranges fall outside them is `complete = false` (needs unknown).
//!
//! The structures are decoded with the `object` crate (read_core + elf: a few seconds of build,
//! no proc macros, typed headers of either class and byte order over any byte slice).

use object::elf::{self, FileHeader32, FileHeader64};
use object::read::elf::{Dyn as _, FileHeader, ProgramHeader as _};
use object::Endianness;

/// The first bytes of every ELF file.
pub const MAGIC: &[u8; 4] = b"\x7fELF";
/// What an encoded `Info` starts with (see `Info::encode`): never a `#!` line.
pub const TEXT_MAGIC: &str = "\u{7f}ELF";

/// Program headers must end within this many bytes of the head.
const HEAD_MAX: usize = 64 << 10;
/// How much of the first `PT_LOAD` segment is kept until the dynamic section is read.
const WINDOW_MAX: usize = 8 << 20;
/// Largest dynamic section and string table read.
const DYNAMIC_MAX: u64 = 64 << 10;
const STRTAB_MAX: u64 = 16 << 20;

/// What the checks need of one ELF file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// `e_machine` (`EM_X86_64` = 62, `EM_AARCH64` = 183, …); 0 when the header is unreadable.
    pub machine: u16,
    pub class64: bool,
    /// The program interpreter (`PT_INTERP`), for dynamic executables.
    pub interp: Option<String>,
    pub soname: Option<String>,
    pub needed: Vec<String>,
    /// Colon-separated search paths, as written (`$ORIGIN` not expanded).
    pub rpath: Option<String>,
    pub runpath: Option<String>,
    /// False when the file has a dynamic section whose names could not be read (truncated, or
    /// outside the limits above): its needs are unknown, not empty.
    pub complete: bool,
}

impl Info {
    /// The compact text kept in a layer listing: `\x7fELF`, then one `\n`-separated line per
    /// field, tagged by its first character: `m62/64` (machine/class), `i` interpreter,
    /// `s` soname, `n` each needed library, `r` rpath, `u` runpath, `?` incomplete.
    pub fn encode(&self) -> String {
        let mut s = String::from(TEXT_MAGIC);
        let mut line = |tag: char, v: &str| {
            s.push('\n');
            s.push(tag);
            s.push_str(&v.replace('\n', "?"));
        };
        if self.machine != 0 {
            line(
                'm',
                &format!("{}/{}", self.machine, if self.class64 { 64 } else { 32 }),
            );
        }
        for (tag, v) in [
            ('i', &self.interp),
            ('s', &self.soname),
            ('r', &self.rpath),
            ('u', &self.runpath),
        ] {
            if let Some(v) = v {
                line(tag, v);
            }
        }
        for n in &self.needed {
            line('n', n);
        }
        if !self.complete {
            line('?', "");
        }
        s
    }

    /// The `Info` of an encoded text; `None` when `text` is not one.
    pub fn decode(text: &str) -> Option<Info> {
        let rest = text.strip_prefix(TEXT_MAGIC)?;
        let mut info = Info {
            complete: true,
            ..Info::default()
        };
        for l in rest.split('\n').filter(|l| !l.is_empty()) {
            let mut cs = l.chars();
            let tag = cs.next()?;
            let v = cs.as_str().to_string();
            match tag {
                'm' => {
                    let (m, c) = v.split_once('/')?;
                    info.machine = m.parse().ok()?;
                    info.class64 = c == "64";
                }
                'i' => info.interp = Some(v),
                's' => info.soname = Some(v),
                'r' => info.rpath = Some(v),
                'u' => info.runpath = Some(v),
                'n' => info.needed.push(v),
                '?' => info.complete = false,
                // Listings of an older kind: `\x7fELF /lib64/ld-…` (the interpreter only).
                ' ' => {
                    info.interp = Some(v.trim().to_string()).filter(|s| !s.is_empty());
                    info.complete = false;
                }
                _ => {}
            }
        }
        Some(info)
    }
}

/// A whole ELF file (or its head) in memory, read as the stream reader would.
pub fn read(bytes: &[u8]) -> Option<Info> {
    if !bytes.starts_with(MAGIC) {
        return None;
    }
    let mut s = Stream::default();
    s.feed(bytes);
    Some(s.finish())
}

/// A file range the reader keeps, filled as the stream passes it.
#[derive(Default)]
struct Piece {
    start: u64,
    end: u64,
    buf: Vec<u8>,
    /// The stream passed part of it before it was asked for.
    lost: bool,
}

impl Piece {
    fn new(start: u64, len: u64) -> Piece {
        Piece {
            start,
            end: start.saturating_add(len),
            ..Piece::default()
        }
    }
    fn full(&self) -> bool {
        !self.lost && self.start + self.buf.len() as u64 == self.end
    }
    /// Takes what it can of the bytes at `[at, at + bytes.len())`.
    fn take(&mut self, at: u64, bytes: &[u8]) {
        let have = self.start + self.buf.len() as u64;
        if self.lost || have >= self.end {
            return;
        }
        let stop = at + bytes.len() as u64;
        if have < at {
            self.lost = true;
        } else if have < stop {
            let n = (self.end.min(stop) - have) as usize;
            let from = (have - at) as usize;
            self.buf.extend_from_slice(&bytes[from..from + n]);
        }
    }
}

/// The program headers the reader uses.
struct Layout {
    le: bool,
    wide: bool,
    /// `PT_LOAD` mappings: (p_vaddr, p_offset, p_filesz).
    loads: Vec<(u64, u64, u64)>,
}

/// Reads one ELF file as its bytes stream past (`feed` them in order, then `finish`).
#[derive(Default)]
pub struct Stream {
    pos: u64,
    /// The bytes from offset 0, kept up to `prefix_max`.
    prefix: Vec<u8>,
    prefix_max: usize,
    layout: Option<Layout>,
    interp: Option<Piece>,
    dynamic: Option<Piece>,
    strtab: Option<Piece>,
    /// Offsets into the string table: (tag, offset).
    names: Vec<(i64, u64)>,
    info: Info,
    /// Nothing more to learn (header unreadable, or everything read).
    done: bool,
}

impl Stream {
    pub fn feed(&mut self, bytes: &[u8]) {
        // The head first, on its own: once it is parsed, the rest of the chunk may be wanted.
        let mut bytes = bytes;
        if self.layout.is_none() && (self.pos as usize) < HEAD_MAX {
            let (a, b) = bytes.split_at((HEAD_MAX - self.pos as usize).min(bytes.len()));
            self.feed_part(a);
            bytes = b;
        }
        if !bytes.is_empty() {
            self.feed_part(bytes);
        }
    }

    fn feed_part(&mut self, bytes: &[u8]) {
        let at = self.pos;
        self.pos += bytes.len() as u64;
        if self.done {
            return;
        }
        if self.layout.is_none() && self.prefix_max == 0 {
            self.prefix_max = HEAD_MAX;
        }
        if self.prefix.len() as u64 == at && self.prefix.len() < self.prefix_max {
            let n = bytes.len().min(self.prefix_max - self.prefix.len());
            self.prefix.extend_from_slice(&bytes[..n]);
        }
        for p in [&mut self.interp, &mut self.dynamic, &mut self.strtab]
            .into_iter()
            .flatten()
        {
            p.take(at, bytes);
        }
        self.advance(at, bytes);
    }

    /// Acts on what the pieces hold after the chunk `bytes` at `at` was taken.
    fn advance(&mut self, at: u64, bytes: &[u8]) {
        if self.layout.is_none() {
            match self.parse_head(at, bytes) {
                Some(true) => {}
                Some(false) => return, // needs more bytes
                None => {
                    self.done = true;
                    return;
                }
            }
        }
        if let Some(p) = &self.interp {
            if p.full() {
                let raw = &p.buf;
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                self.info.interp = Some(String::from_utf8_lossy(&raw[..end]).into_owned());
                self.interp = None;
            }
        }
        if self.dynamic.as_ref().is_some_and(Piece::full) {
            let d = self.dynamic.take().unwrap();
            self.read_dynamic(&d.buf, at, bytes);
        }
        if self.strtab.as_ref().is_some_and(Piece::full) {
            let s = self.strtab.take().unwrap();
            self.read_names(&s.buf);
        }
        if self.interp.is_none() && self.dynamic.is_none() && self.strtab.is_none() {
            self.done = true;
            self.prefix = Vec::new();
        }
    }

    /// Parses the header and program headers from the prefix: `Some(false)` when more bytes
    /// are needed, `None` when this is not an ELF file the reader understands.
    fn parse_head(&mut self, at: u64, bytes: &[u8]) -> Option<bool> {
        let head = &self.prefix;
        if head.len() < 64 {
            // Not enough for a 64-bit header yet (a 32-bit one is 52 bytes; real files are
            // longer than 64).
            return Some(false);
        }
        let wide = head.get(4) == Some(&2);
        let parsed = if wide {
            headers::<FileHeader64<Endianness>>(head)
        } else {
            headers::<FileHeader32<Endianness>>(head)
        };
        let (machine, le, end, loads, interp, dynamic) = match parsed {
            Ok(p) => p,
            Err(need) if need <= HEAD_MAX && need > head.len() => return Some(false),
            Err(_) => return None,
        };
        self.info.machine = machine;
        self.info.class64 = wide;
        // The first segment is kept until the dynamic section has been read.
        let first = loads
            .iter()
            .find(|l| l.1 == 0)
            .map(|l| l.2 as usize)
            .unwrap_or(0);
        let dyn_off = dynamic.map(|d| d.0 as usize).unwrap_or(0);
        self.prefix_max = end.max(first.min(dyn_off).min(WINDOW_MAX));
        self.layout = Some(Layout { le, wide, loads });
        let fill = |p: &mut Piece, prefix: &[u8]| {
            p.take(0, prefix);
            p.take(at, bytes);
        };
        if let Some((off, size)) = interp {
            let mut p = Piece::new(off, size.min(4096));
            fill(&mut p, &self.prefix);
            self.interp = Some(p);
        }
        match dynamic {
            Some((off, size)) => {
                let mut p = Piece::new(off, size.min(DYNAMIC_MAX));
                fill(&mut p, &self.prefix);
                self.dynamic = Some(p);
            }
            None => self.info.complete = true, // static: needs nothing
        }
        Some(true)
    }

    fn read_dynamic(&mut self, section: &[u8], at: u64, bytes: &[u8]) {
        let layout = self.layout.as_ref().expect("parsed");
        let endian = if layout.le {
            Endianness::Little
        } else {
            Endianness::Big
        };
        let entries: Vec<(i64, u64)> = if layout.wide {
            dyn_entries::<FileHeader64<Endianness>>(section, endian)
        } else {
            dyn_entries::<FileHeader32<Endianness>>(section, endian)
        };
        let (mut strtab, mut strsz) = (None, 0u64);
        for (tag, val) in entries {
            match elf::DynamicTag(tag) {
                elf::DT_NULL => break,
                elf::DT_STRTAB => strtab = Some(val),
                elf::DT_STRSZ => strsz = val,
                elf::DT_NEEDED | elf::DT_SONAME | elf::DT_RPATH | elf::DT_RUNPATH => {
                    self.names.push((tag, val))
                }
                _ => {}
            }
        }
        if self.names.is_empty() {
            self.info.complete = true;
            return;
        }
        // DT_STRTAB is an address: the PT_LOAD mapping it gives the file offset.
        let Some(off) = strtab.and_then(|a| {
            layout
                .loads
                .iter()
                .find(|(va, _, sz)| a >= *va && a < va + sz)
                .map(|(va, off, _)| off + (a - va))
        }) else {
            return;
        };
        if strsz == 0 || strsz > STRTAB_MAX {
            return;
        }
        let mut p = Piece::new(off, strsz);
        p.take(0, &self.prefix);
        p.take(at, bytes);
        self.prefix = Vec::new();
        self.prefix_max = 0;
        if p.lost {
            return; // passed already, outside the kept window
        }
        self.strtab = Some(p);
    }

    fn read_names(&mut self, table: &[u8]) {
        let s = |off: u64| -> Option<String> {
            let raw = table.get(usize::try_from(off).ok()?..)?;
            let end = raw.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&raw[..end]).into_owned())
        };
        let mut complete = true;
        for (tag, off) in std::mem::take(&mut self.names) {
            let Some(v) = s(off) else {
                complete = false;
                continue;
            };
            match elf::DynamicTag(tag) {
                elf::DT_NEEDED => self.info.needed.push(v),
                elf::DT_SONAME => self.info.soname = Some(v),
                elf::DT_RPATH => self.info.rpath = Some(v),
                _ => self.info.runpath = Some(v),
            }
        }
        self.info.complete = complete;
    }

    /// What was learnt; `complete` is false when the stream ended before the ranges needed.
    pub fn finish(self) -> Info {
        self.info
    }
}

/// Machine, byte order, end of the program headers, `PT_LOAD`s, `PT_INTERP` and `PT_DYNAMIC`
/// ranges; `Err(n)` when the first `n` bytes are needed (or the file is not understood).
#[allow(clippy::type_complexity)]
fn headers<H: FileHeader<Endian = Endianness>>(
    head: &[u8],
) -> Result<
    (
        u16,
        bool,
        usize,
        Vec<(u64, u64, u64)>,
        Option<(u64, u64)>,
        Option<(u64, u64)>,
    ),
    usize,
> {
    let h = H::parse(head).map_err(|_| usize::MAX)?;
    let endian = h.endian().map_err(|_| usize::MAX)?;
    let phoff: u64 = h.e_phoff(endian).into();
    let end = phoff as usize + h.e_phnum(endian) as usize * h.e_phentsize(endian) as usize;
    if end > head.len() {
        return Err(end);
    }
    let phs = h.program_headers(endian, head).map_err(|_| usize::MAX)?;
    let (mut loads, mut interp, mut dynamic) = (Vec::new(), None, None);
    for ph in phs {
        let (off, size) = ph.file_range(endian);
        match ph.p_type(endian) {
            elf::PT_LOAD => loads.push((ph.p_vaddr(endian).into(), off, size)),
            elf::PT_INTERP => interp = Some((off, size)),
            elf::PT_DYNAMIC => dynamic = Some((off, size)),
            _ => {}
        }
    }
    Ok((
        h.e_machine(endian).0,
        endian == Endianness::Little,
        end,
        loads,
        interp,
        dynamic,
    ))
}

/// The (tag, value) pairs of a dynamic section.
fn dyn_entries<H: FileHeader<Endian = Endianness>>(
    bytes: &[u8],
    endian: Endianness,
) -> Vec<(i64, u64)> {
    let n = bytes.len() / std::mem::size_of::<H::Dyn>();
    match object::pod::slice_from_bytes::<H::Dyn>(bytes, n) {
        Ok((d, _)) => d.iter().map(|d| (d.tag(endian).0, d.val(endian))).collect(),
        Err(_) => vec![],
    }
}

#[cfg(test)]
mod tests;
