//! Per-launch times from device timestamps: a (start, end) pair of ticks around every
//! launch of the last step, the device's period, and its valid bits.

use kiln_ir::backend::{BackendError, LaunchTime};

/// The time of every launch from `ticks`, two per launch (start, end), at `period_ns`
/// nanoseconds a tick, of which the low `valid_bits` count (a counter that narrow wraps:
/// the difference is taken modulo its width; a 64-bit one never does, and an end before
/// its start counts zero).
pub fn launch_times(ticks: &[u64], period_ns: f64, valid_bits: u32) -> Vec<LaunchTime> {
    let elapsed = |start: u64, end: u64| {
        if valid_bits >= 64 {
            end.saturating_sub(start)
        } else {
            let mask = (1u64 << valid_bits) - 1;
            end.wrapping_sub(start) & mask
        }
    };
    ticks
        .chunks_exact(2)
        .enumerate()
        .map(|(launch, pair)| LaunchTime {
            launch,
            seconds: elapsed(pair[0], pair[1]) as f64 * period_ns * 1e-9,
        })
        .collect()
}

/// The timestamps a device wrote in its last step: two per launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Timestamps {
    pub ticks: Vec<u64>,
    /// Nanoseconds per tick.
    pub period_ns: f64,
    /// Valid bits of a timestamp.
    pub valid_bits: u32,
}

impl Timestamps {
    /// Timestamps as a device wrote them: 64-bit little-endian ticks, one after another.
    pub fn from_le_bytes(bytes: &[u8], period_ns: f64, valid_bits: u32) -> Timestamps {
        let ticks = bytes
            .chunks_exact(8)
            .map(|b| b.try_into().map_or(0, u64::from_le_bytes));
        Timestamps {
            ticks: ticks.collect(),
            period_ns,
            valid_bits,
        }
    }

    /// The time of every launch ([`launch_times`]).
    pub fn launch_times(&self) -> Vec<LaunchTime> {
        launch_times(&self.ticks, self.period_ns, self.valid_bits)
    }
}

/// The error of `launch_times` on a device without timestamp queries.
pub fn no_timestamps(backend: &'static str, device: &str) -> BackendError {
    BackendError::Unsupported {
        backend,
        what: format!("timestamp queries on {device}"),
    }
}

/// The error of `launch_times` asked for before a timed step has run (a backend turns
/// its timers on at the first call).
pub fn not_timed_yet(backend: &'static str) -> BackendError {
    BackendError::Unsupported {
        backend,
        what: "launch times before a timed step (timers are on from the next step)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_become_seconds_and_narrow_counters_wrap() {
        let t = launch_times(&[100, 300, 300, 200], 2.0, 64);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].launch, 0);
        assert!((t[0].seconds - 400e-9).abs() < 1e-15);
        assert_eq!(t[1].seconds, 0.0, "an end before its start");
        let wrapped = launch_times(&[0xFFFF_FFF0, 0x10], 1.0, 32);
        assert!((wrapped[0].seconds - 32e-9).abs() < 1e-15);
        let bytes: Vec<u8> = [7u64, 0x1_0000_0009]
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect();
        let read = Timestamps::from_le_bytes(&bytes, 2.0, 64);
        assert_eq!(read.ticks, [7, 0x1_0000_0009]);
    }
}
