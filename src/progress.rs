//! Progress bars (indicatif) for long work, drawn only when stderr is a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

thread_local! {
    /// The bar of a job of many files (a model directory) this thread runs:
    /// the files' own bars (made on this thread, then shared with the
    /// codec threads) are this one, so the job shows one bar with its
    /// bytes, rate and ETA.
    static JOB: std::cell::RefCell<Option<ProgressBar>> = const { std::cell::RefCell::new(None) };
}

fn job_bar() -> Option<ProgressBar> {
    JOB.with(|j| j.borrow().clone())
}

/// Run `f` as one job of `total` bytes: every [`bytes_bar`] made inside it
/// (one per file) is the job's bar, and [`finish`] leaves it alone; it is
/// cleared when `f` returns.
pub fn job<T>(total: u64, message: &str, enabled: bool, f: impl FnOnce() -> T) -> T {
    if job_bar().is_some() {
        return f(); // inside a job already: its bar goes on
    }
    let bar = bytes_bar(total, message, enabled);
    JOB.with(|j| *j.borrow_mut() = Some(bar.clone()));
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            JOB.with(|j| *j.borrow_mut() = None);
        }
    }
    let clear = Clear;
    let r = f();
    drop(clear);
    bar.finish_and_clear();
    r
}

/// Count `n` bytes of work done outside a bar of its own (a file copied
/// whole) on the job's bar, if a job runs.
pub fn job_inc(n: u64) {
    if let Some(b) = job_bar() {
        b.inc(n);
    }
}

/// Finish a bar from [`bytes_bar`]: cleared, unless it is the job's.
pub fn finish(bar: &ProgressBar) {
    if job_bar().is_none() {
        bar.finish_and_clear();
    }
}

/// A byte-counting progress bar; hidden unless `enabled` and stderr is a
/// terminal. Inside a [`job`], the job's bar.
pub fn bytes_bar(total: u64, message: &str, enabled: bool) -> ProgressBar {
    if let Some(b) = job_bar() {
        return b;
    }
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    pb
}

/// A counting progress bar (items, not bytes).
pub fn count_bar(total: u64, message: &str, enabled: bool) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} eta {eta} {wide_msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    pb
}

/// Run `f` on a rayon pool of `threads` threads (0: the global pool, one
/// thread per core).
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> crate::Result<T> {
    if threads == 0 {
        return Ok(f());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| crate::Error::invalid(format!("cannot start {threads} threads: {e}")))?;
    Ok(pool.install(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside a job every file's bar is the job's: their bytes add up on
    /// one bar of the job's length, which a file's finish leaves running;
    /// after the job, bars are the files' own again.
    #[test]
    fn a_job_has_one_bar_for_all_its_files() {
        job(100, "job", false, || {
            let a = bytes_bar(10, "a", false);
            a.inc(5);
            finish(&a);
            job_inc(7);
            let b = bytes_bar(20, "b", false);
            assert_eq!((b.position(), b.length()), (12, Some(100)));
            assert!(!b.is_finished());
        });
        let c = bytes_bar(10, "c", false);
        assert_eq!((c.position(), c.length()), (0, Some(10)));
        job_inc(3); // no job: counted nowhere
        assert_eq!(c.position(), 0);
    }
}
