//! The process's limit on open files. A server holds a descriptor per connection, and the
//! usual soft default (1024, sometimes 256) is far below the hard limit: `kiln serve`
//! raises it at start where the OS allows, and caps connections below what is in force.
//!
//! Through `libc` (already in the build, under tokio) rather than a hand-written
//! `extern`: `rlimit`'s layout and `RLIMIT_NOFILE`'s value differ between systems.

/// Raise the soft limit on open files towards the hard limit, as far as the OS allows,
/// and return the soft limit then in force (None where it cannot be read).
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let (soft, hard) = get()?;
        // Linux refuses more than fs.nr_open (often 2^20), macOS more than OPEN_MAX
        // (10240), whatever the hard limit says: try smaller targets in turn.
        for target in [hard, 1 << 20, 1 << 16, 10_240] {
            if target > soft && target <= hard && set(target, hard) {
                break;
            }
        }
        open_files_limit()
    }
    #[cfg(not(unix))]
    None
}

/// The soft limit on open files (None where it cannot be read).
pub fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        get().map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    None
}

#[cfg(unix)]
fn get() -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer to a local.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    // RLIM_INFINITY is the largest value: as u64 it reads as "no limit". `rlim_t` is u64
    // on Linux and macOS but not on every Unix, hence the casts.
    #[allow(clippy::unnecessary_cast)]
    ok.then_some((r.rlim_cur as u64, r.rlim_max as u64))
}

#[cfg(unix)]
fn set(soft: u64, hard: u64) -> bool {
    let r = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads one `rlimit` through a valid pointer to a local.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn the_limit_is_read_and_never_lowered() {
        let before = open_files_limit().expect("readable on unix");
        let after = raise_open_files_limit().expect("readable on unix");
        assert!(after >= before, "{before} -> {after}");
        let (soft, hard) = get().unwrap();
        assert_eq!(soft, after);
        assert!(soft <= hard);
    }
}
