//! What `GET /metrics` reports, in Prometheus' text format: requests, tokens, time to
//! first token and inter-token latency histograms, batch and queue sizes, KV pages and the
//! prefix cache's hit rate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kiln_kv::KvStats;

/// Bucket bounds in seconds: 1 ms to 60 s, roughly ×2.5 apart.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    inner: Mutex<HistogramData>,
}

#[derive(Clone, Debug, Default)]
struct HistogramData {
    /// Observations per bucket (not cumulative); the last entry is +Inf.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        h.counts[bucket] += 1;
        h.sum += secs;
        h.count += 1;
    }

    /// Observations so far and their sum in seconds.
    pub fn count_and_sum(&self) -> (u64, f64) {
        let h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (h.count, h.sum)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let h = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
    }
}

/// Gauges the engine thread refreshes after every step.
#[derive(Clone, Copy, Debug, Default)]
struct Gauges {
    running: usize,
    waiting: usize,
    kv: KvStats,
}

/// Counters and histograms shared by the HTTP side and the engine thread.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens served from the prefix cache instead of being computed.
    pub prompt_tokens_cached: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub preemptions: AtomicU64,
    pub cancellations: AtomicU64,
    pub step_errors: AtomicU64,
    pub steps: AtomicU64,
    /// Speculative decoding: guesses verified, guesses kept, sequence-steps that verified
    /// guesses, and draft-model steps run.
    pub spec_drafted: AtomicU64,
    pub spec_accepted: AtomicU64,
    pub spec_verify_steps: AtomicU64,
    pub spec_draft_steps: AtomicU64,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    gauges: Mutex<Gauges>,
}

impl Metrics {
    /// One HTTP response on `endpoint` with `status`.
    pub fn count_request(&self, endpoint: &'static str, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry((endpoint, status)).or_default() += 1;
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_gauges(&self, running: usize, waiting: usize, kv: KvStats) {
        *self.gauges.lock().unwrap_or_else(|e| e.into_inner()) = Gauges {
            running,
            waiting,
            kv,
        };
    }

    pub fn kv_stats(&self) -> KvStats {
        self.gauges.lock().unwrap_or_else(|e| e.into_inner()).kv
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP kiln_requests_total HTTP responses by endpoint and status code.\n# TYPE kiln_requests_total counter"
        );
        for ((endpoint, code), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "kiln_requests_total{{endpoint=\"{endpoint}\",code=\"{code}\"}} {n}"
            );
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters = [
            (
                "kiln_prompt_tokens_total",
                "Prompt tokens of admitted requests.",
                load(&self.prompt_tokens),
            ),
            (
                "kiln_prompt_tokens_cached_total",
                "Prompt tokens served from the prefix cache.",
                load(&self.prompt_tokens_cached),
            ),
            (
                "kiln_generation_tokens_total",
                "Tokens generated.",
                load(&self.generation_tokens),
            ),
            (
                "kiln_preemptions_total",
                "Sequences preempted for lack of KV pages (recomputed later).",
                load(&self.preemptions),
            ),
            (
                "kiln_cancellations_total",
                "Requests dropped because their client went away.",
                load(&self.cancellations),
            ),
            (
                "kiln_step_errors_total",
                "Steps that failed in the backend.",
                load(&self.step_errors),
            ),
            ("kiln_steps_total", "Batched steps run.", load(&self.steps)),
            (
                "kiln_spec_drafted_tokens_total",
                "Speculative decoding: guessed tokens verified.",
                load(&self.spec_drafted),
            ),
            (
                "kiln_spec_accepted_tokens_total",
                "Speculative decoding: guessed tokens kept.",
                load(&self.spec_accepted),
            ),
            (
                "kiln_spec_verify_steps_total",
                "Speculative decoding: sequence-steps that verified guesses.",
                load(&self.spec_verify_steps),
            ),
            (
                "kiln_spec_draft_steps_total",
                "Speculative decoding: batched steps of the draft model.",
                load(&self.spec_draft_steps),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        self.time_to_first_token.render(
            &mut out,
            "kiln_time_to_first_token_seconds",
            "From a request's arrival to its first generated token.",
        );
        self.inter_token_latency.render(
            &mut out,
            "kiln_inter_token_latency_seconds",
            "Between consecutive tokens of one request.",
        );
        let g = *self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        let (drafted, accepted) = (load(&self.spec_drafted), load(&self.spec_accepted));
        let gauges = [
            (
                "kiln_spec_acceptance_rate",
                "Speculative decoding: kept over verified guesses (0 before any).",
                if drafted == 0 {
                    0.0
                } else {
                    accepted as f64 / drafted as f64
                },
            ),
            (
                "kiln_running_sequences",
                "Sequences in the batch.",
                g.running as f64,
            ),
            (
                "kiln_waiting_requests",
                "Requests waiting for a place in the batch.",
                g.waiting as f64,
            ),
            (
                "kiln_kv_pages_total",
                "Pages in the KV pool.",
                g.kv.kv_page_count as f64,
            ),
            (
                "kiln_kv_pages_in_use",
                "KV pages held by sequences.",
                g.kv.pages_in_use as f64,
            ),
            (
                "kiln_kv_pages_cached",
                "KV pages held by no sequence, kept for prefix reuse.",
                g.kv.pages_cached as f64,
            ),
            (
                "kiln_kv_pages_free",
                "KV pages on the free list.",
                g.kv.pages_free as f64,
            ),
            (
                "kiln_prefix_cache_lookups",
                "Prefix-cache lookups (one per admission).",
                g.kv.prefix_lookups as f64,
            ),
            (
                "kiln_prefix_cache_hits",
                "Lookups that reused at least one cached page.",
                g.kv.prefix_hits as f64,
            ),
            (
                "kiln_prefix_cache_hit_rate",
                "Fraction of lookups that reused at least one cached page.",
                g.kv.prefix_hit_rate(),
            ),
            (
                "kiln_prefix_cache_token_hit_rate",
                "Fraction of looked-up prompt tokens served from the cache.",
                g.kv.prefix_token_hit_rate(),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_at_inf() {
        let m = Metrics::default();
        m.time_to_first_token.observe(Duration::from_millis(3));
        m.time_to_first_token.observe(Duration::from_secs(100));
        m.count_request("/v1/completions", 200);
        m.count_request("/v1/completions", 200);
        let text = m.render();
        assert!(text.contains("kiln_time_to_first_token_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("kiln_time_to_first_token_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("kiln_time_to_first_token_seconds_bucket{le=\"60\"} 1"));
        assert!(text.contains("kiln_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("kiln_time_to_first_token_seconds_count 2"));
        assert!(text.contains("kiln_requests_total{endpoint=\"/v1/completions\",code=\"200\"} 2"));
        assert!(text.contains("kiln_prefix_cache_hit_rate 0"));
        // Every sample line is `name{labels} value` with a numeric value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
