//! The one switch over the SIMD paths of the codecs.
//!
//! Every dispatch site (the rANS coders, the context merge and the `exp`
//! assembly) asks [`avx512`], [`avx2`] or [`ssse3`] before it takes a vector
//! path; they answer from what the core has ([`detected`]) capped by the
//! requested level, a process-global atomic. The level starts from the
//! environment, read once:
//!
//! - `WEIGHTLAB_SIMD=scalar|avx2|avx512`: the highest level used (`scalar`
//!   turns off every vector path, SSSE3 included; `avx2` everything up to
//!   AVX2; `avx512`, the default, whatever the core has);
//! - `WEIGHTLAB_NO_AVX512` (any value): an alias of `WEIGHTLAB_SIMD=avx2`
//!   (the lower of the two wins when both are set).
//!
//! [`set_level`] changes it at run time and [`with_level`] runs a closure at
//! one level (tests loop over [`levels`]). Every level writes and reads the
//! same bytes; a change of level takes effect at the next dispatch, and
//! since a level never exceeds what the core has, a path picked just before
//! a change is still safe to run.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

/// A SIMD level, ordered: each includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// No vector path at all (the portable loops).
    Scalar = 0,
    /// AVX2 (with POPCNT) and the SSSE3 paths.
    Avx2 = 1,
    /// AVX-512 F, BW, VBMI, VBMI2 (with BMI2 and POPCNT).
    Avx512 = 2,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Parses `scalar`, `avx2` or `avx512` (any case; `avx-512`, `none` too).
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" | "off" => Some(Level::Scalar),
            "avx2" => Some(Level::Avx2),
            "avx512" | "avx-512" | "max" | "best" => Some(Level::Avx512),
            _ => None,
        }
    }

    fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Scalar,
            1 => Level::Avx2,
            _ => Level::Avx512,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What this core has, with the feature sets the paths need.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    ssse3: bool,
    avx2: bool,
    avx512: bool,
}

fn cpu() -> Cpu {
    static CPU: OnceLock<Cpu> = OnceLock::new();
    *CPU.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let popcnt = is_x86_feature_detected!("popcnt");
            let ssse3 = popcnt && is_x86_feature_detected!("ssse3");
            let avx2 = ssse3 && is_x86_feature_detected!("avx2");
            let avx512 = avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vbmi")
                && is_x86_feature_detected!("avx512vbmi2")
                && is_x86_feature_detected!("bmi2");
            Cpu { ssse3, avx2, avx512 }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Cpu { ssse3: false, avx2: false, avx512: false }
    })
}

/// The highest level this core has.
pub fn detected() -> Level {
    let c = cpu();
    if c.avx512 {
        Level::Avx512
    } else if c.avx2 {
        Level::Avx2
    } else {
        Level::Scalar
    }
}

/// Every level this core has, lowest first (what the tests loop over).
pub fn levels() -> Vec<Level> {
    Level::ALL.into_iter().filter(|&l| l <= detected()).collect()
}

const UNSET: u8 = u8::MAX;
/// The requested level (a [`Level`] as u8), or [`UNSET`] until the
/// environment has been read.
static REQUESTED: AtomicU8 = AtomicU8::new(UNSET);

/// The level the environment asks for (see the module docs); the highest
/// when it asks nothing. An unknown `WEIGHTLAB_SIMD` is reported once on
/// stderr and ignored.
pub fn from_env() -> Level {
    let mut l = Level::Avx512;
    if let Some(v) = std::env::var_os("WEIGHTLAB_SIMD") {
        match v.to_str().and_then(Level::parse) {
            Some(x) => l = x,
            None => eprintln!(
                "weightlab: ignoring WEIGHTLAB_SIMD={} (expected scalar, avx2 or avx512)",
                v.to_string_lossy()
            ),
        }
    }
    if std::env::var_os("WEIGHTLAB_NO_AVX512").is_some() {
        l = l.min(Level::Avx2);
    }
    l
}

fn requested() -> Level {
    match REQUESTED.load(Ordering::Relaxed) {
        UNSET => {
            let l = from_env();
            // Another thread may have set a level meanwhile: keep it.
            let _ = REQUESTED.compare_exchange(UNSET, l as u8, Ordering::Relaxed, Ordering::Relaxed);
            Level::from_u8(REQUESTED.load(Ordering::Relaxed))
        }
        v => Level::from_u8(v),
    }
}

/// The level the dispatch sites use now: the requested one, capped by
/// what the core has.
pub fn level() -> Level {
    requested().min(detected())
}

/// Request `level` for every dispatch from now on (capped by what the core
/// has); returns the level requested before. Process-wide: see
/// [`with_level`] for a scoped change.
pub fn set_level(level: Level) -> Level {
    let before = requested();
    REQUESTED.store(level as u8, Ordering::Relaxed);
    before
}

/// Run `f` with `level` requested, then restore the previous request.
/// Callers of `with_level` are serialized on one lock, so two tests that
/// each loop over the levels do not change each other's; code that does
/// not call it simply runs at whatever level is current (every level gives
/// the same bytes).
pub fn with_level<T>(level: Level, f: impl FnOnce() -> T) -> T {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    struct Restore(Level);
    impl Drop for Restore {
        fn drop(&mut self) {
            REQUESTED.store(self.0 as u8, Ordering::Relaxed);
        }
    }
    let _r = Restore(set_level(level));
    f()
}

/// The SSSE3 (+POPCNT) paths may run: the core has them and the level is
/// at least [`Level::Avx2`] (on a core with SSSE3 but not AVX2 they run
/// unless `scalar` is requested).
#[inline]
pub fn ssse3() -> bool {
    cpu().ssse3 && requested() >= Level::Avx2
}

/// The AVX2 (+POPCNT) paths may run.
#[inline]
pub fn avx2() -> bool {
    level() >= Level::Avx2
}

/// The AVX-512 paths may run.
#[inline]
pub fn avx512() -> bool {
    level() >= Level::Avx512
}

/// The core has AVX2 and POPCNT, whatever the level: what the `unsafe`
/// calls of the AVX2 paths assert (the level may change between a
/// dispatch and the call, the core may not).
#[inline]
pub fn cpu_avx2() -> bool {
    cpu().avx2
}

/// The core has the AVX-512 set the paths need, whatever the level.
#[inline]
pub fn cpu_avx512() -> bool {
    cpu().avx512
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_order_and_cap() {
        for l in Level::ALL {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse(" AVX512 "), Some(Level::Avx512));
        assert_eq!(Level::parse("sse9"), None);
        assert!(Level::Scalar < Level::Avx2 && Level::Avx2 < Level::Avx512);
        assert_eq!(levels()[0], Level::Scalar);
        assert_eq!(*levels().last().unwrap(), detected());
        for l in Level::ALL {
            with_level(l, || {
                assert_eq!(level(), l.min(detected()));
                assert_eq!(avx2(), l >= Level::Avx2 && cpu_avx2());
                assert_eq!(avx512(), l >= Level::Avx512 && cpu_avx512());
                if l == Level::Scalar {
                    assert!(!ssse3());
                }
            });
        }
    }
}
