//! One block of the parallel gzip stream: up to 1 MiB deflated by libdeflate, then turned into a
//! piece that the next block can follow inside the same deflate stream (one gzip member).
//!
//! libdeflate compresses whole buffers only, and its output always ends with a final block
//! (RFC 1951 §3.2.3: "Each block of compressed data begins with 3 header bits containing the
//! following data: first bit BFINAL, next 2 bits BTYPE … BFINAL is set if and only if this is
//! the last block of the data set"). pigz instead sync-flushes one zlib stream per block. So
//! every block but the stream's last is inflated once with `Z_BLOCK`, which stops at each block boundary and tells how many
//! bits of the last byte read are unused: that gives the bit where the final block's header
//! starts. Its BFINAL bit is cleared and an empty stored block follows, to the next byte
//! boundary: "any bits of input up to the next byte boundary are ignored. The rest of the block
//! consists of the following information: LEN, NLEN" (§3.2.4), LEN = 0 and NLEN its complement.
//! That is the `00 00 ff ff` a sync flush ends with, and how zlib's `examples/gzjoin.c` joins
//! gzip files into one member. The inflate pass also checks that the piece gives back the
//! block's bytes, so a wrong piece fails the build instead of being pushed.
//!
//! Measured on the bench's inputs (1 MiB blocks, level 6, one core, libdeflate 1.26): libdeflate
//! took 0.79× the time of zlib-rs (with its 32 KiB dictionary and sync flush) on the ~150 MB tree
//! and 0.77× on the 500 MB file; the inflate pass adds 0.12× and 0.16×, so a block costs ~10 %
//! and ~7 % less CPU than with zlib-rs, for output 1.7 % and 0.3 % smaller. Whole builds, old
//! and new binary alternated: 5 % and 9 % less CPU. A walk of the block structure
//! written for this (no output, no match copies) was no faster than zlib-rs's inflate, so it
//! was dropped for the well-kept decoder that also checks the bytes.
//!
//! Blocks are compressed independently (libdeflate takes no preset dictionary): each starts on a
//! byte boundary with nothing to refer back to, so its bytes depend only on its own input.

use libz_rs_sys::{
    inflate, inflateEnd, inflateInit2_, inflateReset, z_stream, zlibVersion, Z_BLOCK, Z_BUF_ERROR,
    Z_OK, Z_STREAM_END,
};
use std::io;

/// The empty stored block's LEN and NLEN (RFC 1951 §3.2.4).
const EMPTY_STORED: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A worker's deflater: libdeflate's compressor, an inflater, and their buffers, kept from
/// block to block.
pub(super) struct Deflater {
    compressor: libdeflater::Compressor,
    inflater: Inflater,
    buf: Vec<u8>,
    /// The inflate pass's output, one byte longer than the largest block (to see an overrun).
    back: Vec<u8>,
}

impl Deflater {
    pub(super) fn new(level: u32) -> io::Result<Deflater> {
        let lvl = libdeflater::CompressionLvl::new(level as i32)
            .map_err(|_| io::Error::other(format!("gzip level {level} is not 1 to 9")))?;
        Ok(Deflater {
            compressor: libdeflater::Compressor::new(lvl),
            inflater: Inflater::new()?,
            buf: Vec::new(),
            back: Vec::new(),
        })
    }

    /// `data` as raw deflate blocks, in place of `out`'s bytes (its allocation is reused).
    /// Unless `last`, the piece ends non-final on a byte boundary, so that another block's
    /// piece can follow it.
    pub(super) fn block_into(
        &mut self,
        data: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let bound = self.compressor.deflate_compress_bound(data.len());
        if self.buf.len() < bound {
            self.buf = vec![0; bound];
        }
        let n = self
            .compressor
            .deflate_compress(data, &mut self.buf[..bound])
            .map_err(|e| io::Error::other(format!("libdeflate: {e:?}")))?;
        out.clear();
        if last {
            out.extend_from_slice(&self.buf[..n]);
            return Ok(());
        }
        if self.back.len() < data.len() + 1 {
            self.back = vec![0; data.len() + 1];
        }
        let end =
            self.inflater
                .final_block(&self.buf[..n], data, &mut self.back[..data.len() + 1])?;
        out.reserve(n + 5);
        out.extend_from_slice(&self.buf[..n]);
        unfinal(out, end);
        Ok(())
    }

    /// `block_into` a new vector.
    #[cfg(test)]
    pub(super) fn block(&mut self, data: &[u8], last: bool) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.block_into(data, last, &mut out)?;
        Ok(out)
    }
}

/// Where a deflate stream's final block starts, and how the stream's last byte ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FinalBlock {
    /// The bit (counted from the stream's first byte, least significant bit first) holding the
    /// final block's BFINAL.
    header_bit: usize,
    /// The unused (padding) bits of the stream's last byte, after the final block's end code.
    unused_bits: u32,
}

/// Clears the final block's BFINAL and appends an empty stored block: the stream then ends on a
/// byte boundary with no block marked final.
fn unfinal(out: &mut Vec<u8>, end: FinalBlock) {
    out[end.header_bit / 8] &= !(1u8 << (end.header_bit % 8));
    if end.unused_bits > 0 {
        // The padding bits become the start of the stored block's header (BFINAL 0, BTYPE 00).
        let last = out.len() - 1;
        out[last] &= 0xff >> end.unused_bits;
    }
    if end.unused_bits < 3 {
        // The 3 header bits do not fit in what is left of the last byte.
        out.push(0);
    }
    out.extend_from_slice(&EMPTY_STORED);
}

/// A raw-deflate inflate stream (zlib-rs through its C API, for `Z_BLOCK` and `data_type`).
struct Inflater(Box<z_stream>);

// SAFETY: the stream and the state it points to are owned by this value and used by one thread
// at a time (`&mut self`); nothing in them is tied to the thread that made them.
unsafe impl Send for Inflater {}

impl Inflater {
    fn new() -> io::Result<Inflater> {
        // Boxed: the state keeps a pointer to its stream, which therefore must not move.
        let mut strm = Box::new(z_stream::default());
        // SAFETY: `strm` is a valid default stream (zalloc and zfree unset: the crate's
        // allocator); -15: raw deflate, 32 KiB window.
        let r = unsafe {
            inflateInit2_(
                &mut *strm,
                -15,
                zlibVersion(),
                std::mem::size_of::<z_stream>() as i32,
            )
        };
        if r != Z_OK {
            return Err(io::Error::other(format!("inflateInit2 failed ({r})")));
        }
        Ok(Inflater(strm))
    }

    /// Inflates `deflated` (one whole raw deflate stream) into `back` (at least one byte longer
    /// than `want`), checks that it gives `want` and ends exactly with its final block, and
    /// says where that block starts and how the last byte ends.
    fn final_block(
        &mut self,
        deflated: &[u8],
        want: &[u8],
        back: &mut [u8],
    ) -> io::Result<FinalBlock> {
        let bad =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("gzip block: {what}"));
        let s = &mut *self.0;
        // SAFETY: the stream was initialised by `new`.
        if unsafe { inflateReset(s) } != Z_OK {
            return Err(bad("inflateReset failed"));
        }
        s.next_in = deflated.as_ptr();
        s.avail_in = u32::try_from(deflated.len()).map_err(|_| bad("too long"))?;
        s.next_out = back.as_mut_ptr();
        s.avail_out = u32::try_from(back.len()).map_err(|_| bad("too long"))?;
        // The first block's header is the stream's first bit.
        let mut header_bit = 0;
        loop {
            // SAFETY: next_in/avail_in and next_out/avail_out describe `deflated` and `back`,
            // which outlive the call and are not otherwise used during it.
            let r = unsafe { inflate(s, Z_BLOCK) };
            let read = deflated.len() - s.avail_in as usize;
            let written = back.len() - s.avail_out as usize;
            match r {
                Z_OK => {}
                Z_STREAM_END => return Err(bad("the stream ended between blocks")),
                Z_BUF_ERROR if s.avail_out == 0 => return Err(bad("more bytes than the block")),
                Z_BUF_ERROR => return Err(bad("truncated")),
                _ => return Err(bad(&format!("inflate failed ({r})"))),
            }
            // data_type (zlib's inflate docs): the unused bits of the last byte read (& 7), the
            // block just decoded was the final one (64), stopped at a block boundary (128).
            let dt = s.data_type;
            if dt & 128 == 0 {
                continue;
            }
            let unused_bits = (dt & 7) as u32;
            if dt & 64 != 0 {
                if read != deflated.len() {
                    return Err(bad("bytes after the final block"));
                }
                if back[..written] != *want {
                    return Err(bad("does not inflate to its input"));
                }
                return Ok(FinalBlock {
                    header_bit,
                    unused_bits,
                });
            }
            header_bit = read * 8 - unused_bits as usize;
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: initialised by `new`, ended once.
        unsafe {
            inflateEnd(&mut *self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::tests::sample;
    use std::io::Read;

    /// Inflates a raw deflate stream with flate2 (which stops at the first final block).
    fn inflate_all(d: &[u8]) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        flate2::read::DeflateDecoder::new(d).read_to_end(&mut v)?;
        Ok(v)
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// libdeflate's whole stream for `data`, and where the inflate pass finds its final block.
    fn found(d: &mut Deflater, data: &[u8]) -> (Vec<u8>, FinalBlock) {
        let plain = d.block(data, true).unwrap();
        let mut back = vec![0; data.len() + 1];
        let end = d.inflater.final_block(&plain, data, &mut back).unwrap();
        (plain, end)
    }

    #[test]
    fn the_final_block_of_each_block_type_is_found() {
        // Tiny input: fixed codes (01); text: dynamic codes (10); noise: stored (00).
        let mut d = Deflater::new(6).unwrap();
        for (data, btype) in [
            (b"hello, hello, hello, hello, hello".to_vec(), 1),
            (sample(300_000), 2),
            (noise(70_000, 7), 0),
        ] {
            let (plain, end) = found(&mut d, &data);
            let bit = |i: usize| (plain[i / 8] >> (i % 8)) & 1;
            assert_eq!(bit(end.header_bit), 1, "BFINAL of a {btype} block");
            let t = bit(end.header_bit + 1) | bit(end.header_bit + 2) << 1;
            assert_eq!(t, btype, "BTYPE of the final block");
            assert!(end.unused_bits < 8);
        }
    }

    #[test]
    fn pieces_joined_inflate_as_one_stream_for_any_padding() {
        // Pieces of many lengths and kinds end with every number of unused bits; joined, with a
        // final piece, they must inflate to the concatenated input.
        let mut d = Deflater::new(6).unwrap();
        let mut seen = [false; 8];
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for i in 1..300usize {
            let data = match i % 3 {
                0 => noise(i * 211, i as u64),
                _ => sample(i * 37 + i * i),
            };
            let piece = d.block(&data, false).unwrap();
            assert_eq!(piece[piece.len() - 4..], EMPTY_STORED);
            let (_, end) = found(&mut d, &data);
            seen[end.unused_bits as usize] = true;
            stream.extend_from_slice(&piece);
            want.extend_from_slice(&data);
        }
        stream.extend_from_slice(&d.block(b"tail", true).unwrap());
        want.extend_from_slice(b"tail");
        assert_eq!(inflate_all(&stream).unwrap(), want);
        assert_eq!(seen, [true; 8], "every padding length was exercised");
        // A non-final piece alone does not end the stream.
        let piece = d.block(&sample(1000), false).unwrap();
        assert!(inflate_all(&piece).is_err());
    }

    #[test]
    fn a_stream_that_is_not_whole_or_not_its_input_is_refused() {
        let mut d = Deflater::new(6).unwrap();
        let data = sample(100_000);
        let whole = d.block(&data, true).unwrap();
        let mut back = vec![0; data.len() + 1];
        for cut in [1, whole.len() / 2, whole.len() - 1] {
            let e = d
                .inflater
                .final_block(&whole[..cut], &data, &mut back)
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        }
        let longer = [&whole[..], b"x"].concat();
        let e = d
            .inflater
            .final_block(&longer, &data, &mut back)
            .unwrap_err();
        assert!(e.to_string().contains("bytes after the final block"), "{e}");
        let mut other = data.clone();
        other[4000] ^= 1;
        let e = d
            .inflater
            .final_block(&whole, &other, &mut back)
            .unwrap_err();
        assert!(
            e.to_string().contains("does not inflate to its input"),
            "{e}"
        );
        // Noise is (almost always) not a stream: an answer or an error, never a panic.
        for seed in 0..2000u64 {
            let n = noise(1 + seed as usize % 600, seed);
            let _ = d.inflater.final_block(&n, &data, &mut back);
        }
    }

    #[test]
    fn a_used_output_buffer_gives_the_same_piece_as_a_new_one() {
        let mut d = Deflater::new(6).unwrap();
        let data = sample(200_000);
        let fresh = d.block(&data, false).unwrap();
        let mut out = vec![0xa5u8; 3 * fresh.len()];
        d.block_into(&data, false, &mut out).unwrap();
        assert!(out == fresh, "not final");
        d.block_into(&data, true, &mut out).unwrap();
        assert!(out == d.block(&data, true).unwrap(), "final");
    }
}
