//! Where a layer's tar stream goes: the diff_id (sha256 of the tar), the compressor, and the
//! digest and size of the compressed blob, each on its own thread so that on two cores the
//! writer of the tar (which reads and hashes every file) never waits for a hash or for the
//! compressor. The bytes are those of the one-thread chain `tar → sha256 → compressor → sha256
//! → file`: only where the work runs changes.
//!
//! The tar stream is cut into `CHUNK`-byte pieces shared (not copied) by the two consumers;
//! bounded queues keep at most a few pieces in flight, so memory does not grow with the layer.

use crate::compress::{self, Compression};
use crate::digest::{Digest, HashWriter};
use sha2::{Digest as _, Sha256};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Size of the pieces the tar stream is handed on in.
const CHUNK: usize = 128 << 10;
/// Pieces queued for each consumer before the tar writer waits: with `CHUNK`, at most ~1.5 MiB in
/// flight (the peak-memory bound holds for any layer size).
const QUEUE: usize = 4;

type Piece = Arc<Vec<u8>>;
/// The compressor thread: its queue, and what it returns (the blob's writer, digest and size).
type Compressor<W> = (SyncSender<Piece>, JoinHandle<io::Result<(W, Digest, u64)>>);

/// The compressed blob's writer, its digest and size.
pub struct Finished<W> {
    pub out: W,
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
}

/// A `Write` for the tar stream: hashes it (diff_id) and compresses it into `W` (hashed again:
/// digest and size), on two threads besides the caller's (and the compressor's own workers).
pub struct Sink<W: Write + Send + 'static> {
    buf: Vec<u8>,
    diff: Option<(SyncSender<Piece>, JoinHandle<Digest>)>,
    comp: Option<Compressor<W>>,
    /// Set when the sink is dropped unfinished: the compressor stops without a trailer.
    abort: Arc<AtomicBool>,
}

impl<W: Write + Send + 'static> Sink<W> {
    pub fn new(compression: Compression, gzip_level: u32, out: W) -> io::Result<Sink<W>> {
        let abort = Arc::new(AtomicBool::new(false));
        let (dtx, drx) = sync_channel::<Piece>(QUEUE);
        let diff = std::thread::Builder::new()
            .name("diff_id".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for p in drx {
                    h.update(&p[..]);
                }
                Digest::from_hasher(h)
            })?;
        let (ctx, crx) = sync_channel::<Piece>(QUEUE);
        let stop = abort.clone();
        let enc = compress::encoder(compression, gzip_level, HashWriter::new(out))?;
        let comp = std::thread::Builder::new()
            .name("compress".into())
            .spawn(move || compress_all(enc, crx, &stop))?;
        Ok(Sink {
            buf: Vec::with_capacity(CHUNK),
            diff: Some((dtx, diff)),
            comp: Some((ctx, comp)),
            abort,
        })
    }

    /// Hands the buffered bytes to both consumers.
    fn ship(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Arc::new(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let comp_gone = match &self.comp {
            Some((tx, _)) => tx.send(piece.clone()).is_err(),
            None => true,
        };
        if comp_gone {
            // The compressor stopped on an error (the output could not be written): report it.
            return Err(self.comp_error());
        }
        if let Some((tx, _)) = &self.diff {
            tx.send(piece)
                .map_err(|_| io::Error::other("the diff_id thread stopped"))?;
        }
        Ok(())
    }

    fn comp_error(&mut self) -> io::Error {
        match self.comp.take() {
            Some((tx, h)) => {
                drop(tx);
                match h.join() {
                    Ok(Err(e)) => e,
                    Ok(Ok(_)) => io::Error::other("the compressor stopped early"),
                    Err(_) => io::Error::other("the compressor panicked"),
                }
            }
            None => io::Error::other("the compressor stopped"),
        }
    }

    /// Flushes the last piece, waits for both threads: the blob's writer, diff_id, digest, size.
    pub fn finish(mut self) -> io::Result<Finished<W>> {
        self.ship()?;
        let (dtx, dh) = self.diff.take().expect("finished once");
        drop(dtx);
        let (ctx, ch) = self.comp.take().expect("finished once");
        drop(ctx);
        let diff_id = dh
            .join()
            .map_err(|_| io::Error::other("the diff_id thread panicked"))?;
        let (out, digest, size) = ch
            .join()
            .map_err(|_| io::Error::other("the compressor panicked"))??;
        Ok(Finished {
            out,
            diff_id,
            digest,
            size,
        })
    }
}

fn compress_all<W: Write>(
    mut enc: Box<dyn compress::Encoder<HashWriter<W>> + Send>,
    pieces: Receiver<Piece>,
    abort: &AtomicBool,
) -> io::Result<(W, Digest, u64)> {
    for p in pieces {
        enc.write_all(&p)?;
    }
    if abort.load(Ordering::SeqCst) {
        return Err(io::Error::other("layer abandoned"));
    }
    Ok(enc.finish()?.finish())
}

impl<W: Write + Send + 'static> Write for Sink<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.ship()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for Sink<W> {
    /// An unfinished sink (an error while the tar was written) stops both threads and waits for
    /// them, so that the blob's writer (a temporary file) is dropped before the error returns.
    fn drop(&mut self) {
        self.abort.store(true, Ordering::SeqCst);
        if let Some((tx, h)) = self.diff.take() {
            drop(tx);
            let _ = h.join();
        }
        if let Some((tx, h)) = self.comp.take() {
            drop(tx);
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes and digests of the one-thread chain `sha256 → compressor → sha256`.
    fn serial(c: Compression, data: &[u8]) -> (Vec<u8>, Digest, Digest) {
        let diff = Digest::of(data);
        let mut enc = compress::encoder(c, 6, Vec::new()).unwrap();
        enc.write_all(data).unwrap();
        let out = enc.finish().unwrap();
        let digest = Digest::of(&out);
        (out, diff, digest)
    }

    use crate::compress::tests::sample;

    #[test]
    fn the_sink_gives_the_bytes_and_digests_of_the_serial_chain() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            for len in [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 4321] {
                let data = sample(len);
                let mut s = Sink::new(c, 6, Vec::new()).unwrap();
                for w in data.chunks(7919) {
                    s.write_all(w).unwrap();
                }
                let f = s.finish().unwrap();
                let (out, diff, digest) = serial(c, &data);
                assert_eq!(f.diff_id, diff, "{c:?} {len}");
                assert_eq!(f.digest, digest, "{c:?} {len}");
                assert_eq!(f.size, out.len() as u64);
                assert_eq!(f.out, out, "{c:?} {len}");
            }
        }
    }

    /// A writer that fails after `left` bytes, like a full disk.
    struct Full {
        left: usize,
    }
    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.left < b.len() {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            self.left -= b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_output_error_is_reported_by_write_or_finish() {
        let data = sample(12 * CHUNK);
        let mut s = Sink::new(Compression::None, 6, Full { left: 2 * CHUNK }).unwrap();
        let mut err = None;
        for w in data.chunks(CHUNK / 3) {
            if let Err(e) = s.write_all(w) {
                err = Some(e);
                break;
            }
        }
        let e = match err {
            Some(e) => e,
            None => s.finish().err().expect("the full disk is reported"),
        };
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
    }
}
