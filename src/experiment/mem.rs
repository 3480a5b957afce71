//! Peak heap memory, measured by a counting global allocator (the way
//! lz4_flex's `binggan_bench` does it).
//!
//! The library only defines the allocator and its counters; a binary (the
//! `weightlab` CLI, a test, a bench) opts in with
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: weightlab::experiment::mem::CountingAlloc = weightlab::experiment::mem::CountingAlloc;
//! ```
//!
//! Without it [`active`] is false and the runner leaves peak memory empty
//! rather than reporting zeros.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting live bytes and their high-water mark.
pub struct CountingAlloc;

#[inline]
fn add(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

#[inline]
fn sub(n: usize) {
    CURRENT.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// GlobalAlloc contract; the counters are plain atomics and never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same layout contract as our caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same layout contract as our caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (through us).
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // count the new block before releasing the old one: during a
            // moving realloc both exist
            add(new_size);
            sub(layout.size());
        }
        p
    }
}

/// Mark the counting allocator as installed. Called by [`start`] callers
/// that know it is (the CLI does it at start-up); detection is also
/// automatic: any counted allocation shows in [`current`].
pub fn set_active() {
    ACTIVE.store(true, Ordering::Relaxed);
}

/// Whether the counting allocator is the global allocator of this process.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed) || CURRENT.load(Ordering::Relaxed) > 0
}

/// Live heap bytes now.
pub fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// A measurement window: the peak is reset to the current level, and
/// [`Window::peak_above_start`] gives the highest level reached since, minus
/// the level at the start (the memory the measured work added).
pub struct Window {
    start: usize,
}

impl Window {
    pub fn start() -> Window {
        let now = CURRENT.load(Ordering::Relaxed);
        PEAK.store(now, Ordering::Relaxed);
        Window { start: now }
    }
    /// Peak bytes above the start level, or `None` when no counting
    /// allocator is installed.
    pub fn peak_above_start(&self) -> Option<u64> {
        active().then(|| PEAK.load(Ordering::Relaxed).saturating_sub(self.start) as u64)
    }
}
