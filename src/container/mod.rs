//! The archive format: one record per tensor, chunked, checksummed, with the
//! original safetensors header kept so decompression is byte-exact. See
//! `docs/format.md`.

pub mod format;
pub mod read;
pub mod write;

pub use format::{FORMAT_VERSION, Index, TensorRecord};
pub use read::{
    Archive, DecodeOptions, DecompressOptions, StreamReport, VerifyReport, decompress_file, decompress_file_opts,
    verify_file,
};
pub use write::{
    CompressOptions, DEFAULT_CHUNK_SIZE, DEFAULT_CODEC, chunk_ranges, compress, compress_file, compress_file_opts,
    compress_to_file,
};

/// The xxh3-64 (seed 0) of `bytes`: every checksum of the archive but the
/// sha256s. From twox-hash, which picks AVX2 at run time: xxhash-rust, used
/// before, picks its SIMD when it is compiled, so a portable build got SSE2.
/// Same values. Measured with a throwaway loop over 256 MiB in 4 MiB
/// pieces, one core of an idle 2-core Xeon (Sapphire Rapids): 11.0 against
/// 7.1 GB/s from memory, 38 against 27 GB/s on 64 KiB in cache. Loads hash
/// every decoded byte (issue #14).
pub fn xxh3_64(bytes: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(bytes)
}

/// [`xxh3_64`] of bytes given in pieces ([`std::hash::Hasher::write`] each
/// in order; `finish` is the hash of them all, the same as `xxh3_64` of
/// their concatenation).
pub fn xxh3_hasher() -> impl std::hash::Hasher {
    twox_hash::XxHash3_64::with_seed(0)
}

/// Whether [`pipelined`], called now, runs its sink on a thread of its own
/// (a one-thread pool): callers move work to the sink then (checksums,
/// writes), since it has a core to itself.
pub(crate) fn sink_has_own_thread() -> bool {
    rayon::current_num_threads() == 1
}

/// Run `work` on every job and hand the results to `sink` in job order,
/// on as many threads as the current rayon pool has (the caller's thread
/// among them). Each thread takes the next job, and a thread that finds the
/// next result in order ready while no other is sinking runs `sink` on it:
/// the sequential end (hashing, writing) moves between the threads instead
/// of holding one of them, so that two threads keep two cores busy (the
/// earlier windows of jobs, each joined before the next, left one core idle
/// at every window's end and while the other hashed). At most two results
/// per thread wait for the sink, which bounds memory. With one thread, the
/// sink gets a thread of its own beside it (the caller's thread only works),
/// so that writing and hashing overlap the codec on a second core: one
/// codec thread, as zstd -T1 has one compression thread beside its I/O (on
/// EmbeddingGemma BF16 the writes alone were a third of `decompress -j 1`).
/// The first error of `sink` stops the run (jobs under way finish, no new one
/// starts) and is returned.
pub(crate) fn pipelined<J: Sync, T: Send>(
    jobs: &[J],
    work: impl Fn(&J) -> T + Sync,
    sink: impl FnMut(&J, T) -> crate::Result<()> + Send,
) -> crate::Result<()> {
    use std::collections::BTreeMap;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::{Condvar, Mutex};
    struct State<T> {
        next_job: usize,
        next_sink: usize,
        ready: BTreeMap<usize, T>,
        sinking: bool,
        error: Option<crate::Error>,
        /// A panic of `work` or `sink`, re-raised once every thread is out
        /// (the others would wait for its result for ever).
        panic: Option<Box<dyn std::any::Any + Send>>,
    }
    let threads = rayon::current_num_threads().clamp(1, jobs.len().max(1));
    let window = 2 * threads;
    let state = Mutex::new(State {
        next_job: 0,
        next_sink: 0,
        ready: BTreeMap::new(),
        sinking: false,
        error: None,
        panic: None,
    });
    let changed = Condvar::new();
    let sink = Mutex::new(sink);
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    // What a thread may do: (work, sink).
    let worker = |(may_work, may_sink): (bool, bool)| {
        let mut g = lock();
        loop {
            if g.error.is_some() || g.panic.is_some() || g.next_sink == jobs.len() {
                break;
            }
            if !may_sink && g.next_job == jobs.len() {
                break;
            }
            let i = g.next_sink;
            if may_sink
                && !g.sinking
                && let Some(t) = g.ready.remove(&i)
            {
                g.sinking = true;
                drop(g);
                let r =
                    catch_unwind(AssertUnwindSafe(|| (sink.lock().unwrap_or_else(|p| p.into_inner()))(&jobs[i], t)));
                g = lock();
                g.sinking = false;
                g.next_sink += 1;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        g.error.get_or_insert(e);
                    }
                    Err(p) => {
                        g.panic.get_or_insert(p);
                    }
                }
                changed.notify_all();
                continue;
            }
            if may_work && g.next_job < jobs.len() && g.next_job < g.next_sink + window {
                let i = g.next_job;
                g.next_job += 1;
                drop(g);
                let r = catch_unwind(AssertUnwindSafe(|| work(&jobs[i])));
                g = lock();
                match r {
                    Ok(t) => {
                        g.ready.insert(i, t);
                    }
                    Err(p) => {
                        g.panic.get_or_insert(p);
                    }
                }
                changed.notify_all();
                continue;
            }
            g = changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    };
    std::thread::scope(|s| {
        if sink_has_own_thread() && jobs.len() > 1 {
            s.spawn(|| worker((false, true)));
            worker((true, false));
        } else {
            for _ in 1..threads {
                s.spawn(|| worker((true, true)));
            }
            worker((true, true));
        }
    });
    let end = state.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = end.panic {
        std::panic::resume_unwind(p);
    }
    match end.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::pipelined;

    fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
    }

    /// The sink sees every result once, in job order, whatever the thread
    /// count and however long each job takes.
    #[test]
    fn sink_runs_in_job_order() {
        let jobs: Vec<u64> = (0..200).collect();
        for threads in [1, 2, 3, 8] {
            let mut seen = Vec::new();
            in_pool(threads, || {
                pipelined(
                    &jobs,
                    |&j| {
                        // uneven work, so that later jobs often finish first
                        std::thread::sleep(std::time::Duration::from_micros((j * 7919) % 300));
                        j * 3
                    },
                    |&j, t| {
                        assert_eq!(t, j * 3);
                        seen.push(j);
                        Ok(())
                    },
                )
            })
            .unwrap();
            assert_eq!(seen, jobs, "{threads} threads");
        }
        in_pool(2, || pipelined(&[] as &[u8], |_| (), |_, _| Ok(()))).unwrap();
    }

    /// The first error of the sink is returned and no job is sunk after it.
    #[test]
    fn the_first_sink_error_stops_the_run() {
        let jobs: Vec<u32> = (0..100).collect();
        for threads in [1, 2, 4] {
            let mut sunk = 0;
            let r = in_pool(threads, || {
                pipelined(
                    &jobs,
                    |&j| j,
                    |&j, _| {
                        if j == 37 {
                            return Err(crate::Error::invalid("job 37"));
                        }
                        sunk += 1;
                        Ok(())
                    },
                )
            });
            assert!(r.unwrap_err().to_string().contains("job 37"), "{threads} threads");
            assert_eq!(sunk, 37, "{threads} threads");
        }
    }

    /// A panicking job does not leave the other threads waiting for ever:
    /// the panic comes out of `pipelined`.
    #[test]
    fn a_panicking_job_is_raised_not_hung() {
        let jobs: Vec<u32> = (0..50).collect();
        let r = std::panic::catch_unwind(|| {
            in_pool(2, || pipelined(&jobs, |&j| assert!(j != 20, "job 20"), |_, _| Ok(())))
        });
        assert!(r.is_err());
    }
}
