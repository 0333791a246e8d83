//! Wheel members decompressed ahead of the tar writer, on worker threads, in a bounded window:
//! inflating zip members is the larger part of a Python layer's cost, and the writer's thread
//! would otherwise do it alone while the compression workers wait.

use super::{Body, Entry, Source};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Bytes decompressed ahead of the writer, at most (one larger member is allowed alone).
const WINDOW: u64 = 16 << 20;
/// Members larger than this are streamed by the writer itself.
const LARGEST: u64 = 8 << 20;

type Pending = Receiver<Result<Vec<u8>>>;

struct Job {
    archive: Arc<PathBuf>,
    index: usize,
    size: u64,
    reply: Sender<Result<Vec<u8>>>,
}

pub struct Inflater<'a> {
    entries: &'a [Entry],
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    /// (entry index, size, where its bytes arrive), in entry order.
    pending: VecDeque<(usize, u64, Pending)>,
    next: usize,
    in_flight: u64,
}

fn member(e: &Entry) -> Option<(&Arc<PathBuf>, usize, u64)> {
    match &e.body {
        Body::File {
            src: Source::Zip { archive, index },
            size,
        } if *size <= LARGEST => Some((archive, *index, *size)),
        _ => None,
    }
}

impl<'a> Inflater<'a> {
    /// Starts workers when `entries` has zip members; otherwise does nothing.
    pub fn new(entries: &'a [Entry]) -> Inflater<'a> {
        let mut inf = Inflater {
            entries,
            jobs: None,
            workers: Vec::new(),
            pending: VecDeque::new(),
            next: 0,
            in_flight: 0,
        };
        if std::env::var_os("XPF").is_none() && entries.iter().any(|e| member(e).is_some()) {
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let (tx, rx) = channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            inf.workers = (0..threads)
                .map(|_| {
                    let rx = rx.clone();
                    std::thread::spawn(move || {
                        let mut open: HashMap<Arc<PathBuf>, zip::ZipArchive<File>> = HashMap::new();
                        while let Ok(job) = rx.lock().unwrap().recv() {
                            let r = inflate(&mut open, &job);
                            let _ = job.reply.send(r);
                        }
                    })
                })
                .collect();
            inf.jobs = Some(tx);
        }
        inf
    }

    /// The decompressed bytes of entry `i`, if it was taken ahead; the window moves on.
    pub fn take(&mut self, i: usize) -> Result<Option<Vec<u8>>> {
        let Some(jobs) = &self.jobs else {
            return Ok(None);
        };
        while self.next < self.entries.len() && (self.in_flight < WINDOW || self.pending.is_empty())
        {
            let j = self.next;
            self.next += 1;
            if let Some((archive, index, size)) = member(&self.entries[j]) {
                let (reply, rx) = channel();
                jobs.send(Job {
                    archive: archive.clone(),
                    index,
                    size,
                    reply,
                })
                .map_err(|_| anyhow!("inflate workers stopped"))?;
                self.pending.push_back((j, size, rx));
                self.in_flight += size;
            }
        }
        match self.pending.front() {
            Some((j, _, _)) if *j == i => {
                let (_, size, rx) = self.pending.pop_front().unwrap();
                self.in_flight -= size;
                Ok(Some(
                    rx.recv()
                        .map_err(|_| anyhow!("an inflate worker stopped"))??,
                ))
            }
            _ => Ok(None),
        }
    }
}

impl Drop for Inflater<'_> {
    fn drop(&mut self) {
        self.jobs = None;
        self.pending.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn inflate(open: &mut HashMap<Arc<PathBuf>, zip::ZipArchive<File>>, job: &Job) -> Result<Vec<u8>> {
    if !open.contains_key(&job.archive) {
        let f = File::open(job.archive.as_path())
            .with_context(|| format!("opening {}", job.archive.display()))?;
        let z = zip::ZipArchive::new(f)
            .with_context(|| format!("reading zip {}", job.archive.display()))?;
        open.insert(job.archive.clone(), z);
    }
    let z = open.get_mut(&job.archive).unwrap();
    let mut m = z
        .by_index(job.index)
        .with_context(|| format!("reading member {} of {}", job.index, job.archive.display()))?;
    let mut out = Vec::with_capacity(job.size as usize);
    (&mut m)
        .take(job.size + 1)
        .read_to_end(&mut out)
        .with_context(|| {
            format!(
                "inflating member {} of {}",
                job.index,
                job.archive.display()
            )
        })?;
    if out.len() as u64 != job.size {
        bail!(
            "member {} of {} has {} bytes, not the {} its directory says",
            job.index,
            job.archive.display(),
            out.len(),
            job.size
        );
    }
    Ok(out)
}
