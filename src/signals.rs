//! What happens to an output under way when the process is stopped.
//!
//! Every output is written under a temporary name ([`crate::io::temp_path`])
//! and renamed when complete. While one is open its path is held here, in a
//! fixed table a signal handler can read without locks or allocation: on
//! SIGINT, SIGTERM or SIGHUP the handler unlinks every temporary file of the
//! process and then dies of the same signal (so a shell sees the usual
//! status, 130 for Ctrl-C); on SIGBUS, which a memory map raises when its
//! file was truncated by another process while we read it, it unlinks them,
//! says so on stderr and exits with status 1 (an I/O error) instead of
//! crashing. SIGKILL and aborts cannot be caught: their temporaries are swept
//! by the next write of the same output ([`crate::io::write_atomic_with`]).
//!
//! `unlink`, `write`, `signal`, `raise` and `_exit` are async-signal-safe;
//! the table holds leaked C strings, so a path the handler reads is never
//! freed under it.

use std::ffi::{CString, c_char};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

/// At most this many outputs are open at once (a directory job writes one
/// file per thread); one more is still written and cleaned up by its drop
/// guard, just not by a signal.
const SLOTS: usize = 256;

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: AtomicPtr<c_char> = AtomicPtr::new(std::ptr::null_mut());
static TEMPS: [AtomicPtr<c_char>; SLOTS] = [EMPTY; SLOTS];
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A registered temporary path; [`unregister`] takes it out again.
pub struct Slot(Option<usize>);

/// Hold `path` for the handlers until [`unregister`].
pub fn register(path: &Path) -> Slot {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return Slot(None) };
        let p = c.into_raw();
        for (i, s) in TEMPS.iter().enumerate() {
            if s.compare_exchange(std::ptr::null_mut(), p, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                return Slot(Some(i));
            }
        }
        // SAFETY: `p` came from `into_raw` just above and was stored nowhere.
        drop(unsafe { CString::from_raw(p) });
        Slot(None)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Slot(None)
    }
}

/// The file is renamed or removed: the handlers no longer touch it. The
/// string stays allocated (a handler may be reading it right now).
pub fn unregister(slot: Slot) {
    if let Some(i) = slot.0 {
        TEMPS[i].store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}

/// Install the handlers (once per process; the CLI does it first thing).
pub fn install() {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    #[cfg(unix)]
    // SAFETY: `on_signal` only makes async-signal-safe calls; the handler
    // is installed with sigaction for the whole process.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGBUS] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: only async-signal-safe calls on paths that are never freed.
    unsafe {
        for s in &TEMPS {
            let p = s.load(Ordering::SeqCst);
            if !p.is_null() {
                libc::unlink(p);
            }
        }
        if sig == libc::SIGBUS {
            let msg = b"error: a memory-mapped input changed size while it was read (another process truncated it?); \
                        nothing was written (i/o error)\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(1);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}
