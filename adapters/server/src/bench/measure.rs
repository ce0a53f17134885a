//! What the bench and its webhook receiver measure with: the run's labels,
//! the wall clock (microseconds, anchored once, advanced monotonically),
//! histograms of microseconds and their percentiles in milliseconds.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use minoots_node::Clock as _;
use serde::Serialize;
use tokio::time::Instant;

/// Label carrying the run id on every timer the bench creates.
pub(crate) const RUN_LABEL: &str = "bench-run";
/// Label carrying the phase (`batch`, `single`, `preload`).
pub(crate) const MODE_LABEL: &str = "bench-mode";

/// Largest value the histograms hold (one day, in microseconds).
const HISTOGRAM_MAX_US: u64 = 86_400 * 1_000_000;

/// A histogram of microseconds.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Summarises a histogram of microseconds in milliseconds; `None` when empty.
pub(crate) fn summarize_us(histogram: &Histogram<u64>) -> Option<Percentiles> {
    if histogram.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Percentiles {
        count: histogram.len(),
        p50: ms(histogram.value_at_quantile(0.5)),
        p99: ms(histogram.value_at_quantile(0.99)),
        p99_9: ms(histogram.value_at_quantile(0.999)),
        max: ms(histogram.max()),
        mean: histogram.mean() / 1000.0,
    })
}

/// Locks a mutex, also after a panic elsewhere (the data are plain counters).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The local wall clock in microseconds: one reading of the system clock
/// (taken right as its millisecond ticks, so the anchor is not up to 1 ms
/// behind), advanced by the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    anchor_wall_us: i64,
    anchor: Instant,
}

impl WallClock {
    pub(crate) fn new() -> Self {
        let clock = minoots_node::SystemClock::new();
        let started = Instant::now();
        let first_ms = clock.now().wall_ms;
        let mut wall_ms = first_ms;
        let mut anchor = Instant::now();
        // Bounded: the millisecond ticks within 1 ms; give up after 5 ms.
        while started.elapsed() < Duration::from_millis(5) {
            let now_ms = clock.now().wall_ms;
            anchor = Instant::now();
            if now_ms != first_ms {
                wall_ms = now_ms;
                break;
            }
        }
        Self { anchor_wall_us: wall_ms.saturating_mul(1000), anchor }
    }

    pub(crate) fn now_us(&self) -> i64 {
        let elapsed_us = i64::try_from(self.anchor.elapsed().as_micros()).unwrap_or(i64::MAX);
        self.anchor_wall_us.saturating_add(elapsed_us)
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.now_us().div_euclid(1000)
    }
}
