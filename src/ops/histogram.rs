//! A lock-free latency histogram in Prometheus' shape (cumulative `le` buckets, `_sum`,
//! `_count`), cheap enough for the request path: one relaxed add per bucket hit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (the last bucket is `+Inf`).
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Durations counted into [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at most as long as each bound (not cumulative; summed on render), and in
    /// the last slot, longer than all of them.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the observations, in microseconds.
    micros: AtomicU64,
}

impl Histogram {
    /// Counts one duration.
    pub fn observe(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The samples after a family's name: `_bucket{le=...}` (with `labels` before `le`),
    /// `_sum`, `_count`. Each bucket is read once and `+Inf` and the count are their total,
    /// so an observation made while rendering cannot make the result non-monotonic.
    pub fn samples(&self, labels: &str) -> Vec<(String, f64)> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        let mut cumulative = 0;
        let mut out: Vec<(String, f64)> = LATENCY_BUCKETS
            .iter()
            .zip(&counts)
            .map(|(le, n)| {
                cumulative += n;
                (format!("_bucket{{{labels}le=\"{le}\"}}"), cumulative as f64)
            })
            .collect();
        let plain = labels.trim_end_matches(',');
        let braced = if plain.is_empty() {
            String::new()
        } else {
            format!("{{{plain}}}")
        };
        out.push((format!("_bucket{{{labels}le=\"+Inf\"}}"), count as f64));
        out.push((
            format!("_sum{braced}"),
            self.micros.load(Ordering::Relaxed) as f64 / 1e6,
        ));
        out.push((format!("_count{braced}"), count as f64));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_cumulative_with_sum_and_count() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_millis(30));
        histogram.observe(Duration::from_secs(60));
        let samples = histogram.samples("code=\"200\",");
        let get = |name: &str| {
            samples
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("{name} in {samples:?}"))
        };
        assert_eq!(get("_bucket{code=\"200\",le=\"0.005\"}"), 1.0);
        assert_eq!(get("_bucket{code=\"200\",le=\"0.05\"}"), 2.0);
        assert_eq!(get("_bucket{code=\"200\",le=\"10\"}"), 2.0);
        assert_eq!(get("_bucket{code=\"200\",le=\"+Inf\"}"), 3.0);
        assert_eq!(get("_count{code=\"200\"}"), 3.0);
        assert!((get("_sum{code=\"200\"}") - 60.033).abs() < 1e-9);
        assert!(Histogram::default().samples("")[12].0 == "_sum");
    }
}
