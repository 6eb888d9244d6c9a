//! Admission of `/v1` requests: an adaptive bound on what one node works on at once.
//!
//! A fixed in-flight count is either too high for a saturated node (requests queue
//! for seconds, then time out) or too low for a fast one. [`Admission`] adjusts its
//! limit by the latency it observes, additive increase and multiplicative decrease:
//! every window ([`WINDOW`]) whose mean latency is above `api.target_latency_ms`
//! cuts the limit by a fifth; a window under it that was held back by the limit
//! raises it by a tenth. The limit stays between `api.min_in_flight` and
//! `api.max_in_flight`. A request over the limit is answered at once with 503
//! `OVERLOADED` and `Retry-After: 1`, so the excess of an overload is refused in
//! milliseconds while what is admitted is served within the target.
//!
//! Latency is measured from admission, so it cannot see requests waiting to be
//! read. Cutting the limit on the runtime's lag as well (how late a timer on the
//! API's runtime fired) was tried and dropped: it drove the limit to its floor at
//! 3× overload, where the lag comes from reading and refusing the excess, which
//! admitting less does not reduce (goodput 21% of the peak against 58% without).
//!
//! Work that finishes what a fan started ([`Priority::Finish`]: releasing a hold,
//! paying for it, leaving the queue) may go a quarter over the limit
//! ([`FINISH_HEADROOM`]): under overload the node sheds new holds first. A refused
//! release would come back as a retry, and meanwhile its seats stay held and count
//! against the fan's ticket limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the limit is reconsidered.
pub const WINDOW: Duration = Duration::from_millis(100);
/// How far over the limit [`Priority::Finish`] requests are still admitted, as a
/// share of the limit.
pub const FINISH_HEADROOM: f64 = 0.25;

/// Which requests a node at its limit refuses first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// New work: holds, queue joins, reads. Refused at the limit.
    Start,
    /// Work that completes or undoes what a fan started (releases, orders,
    /// cancellations, leaving the queue). Admitted up to [`FINISH_HEADROOM`] over
    /// the limit.
    Finish,
}

/// One node's admission state.
pub struct Admission {
    state: Mutex<State>,
    /// The floor: a node always serves this many at once (at most `max`).
    min: f64,
    max: f64,
    target: Duration,
}

struct State {
    in_flight: usize,
    limit: f64,
    window_started: Instant,
    completed: u32,
    latency_sum: Duration,
    /// A request was refused, or admitted at the limit, in this window.
    limited: bool,
}

/// An admitted request; dropping it (answered or cancelled) frees its place.
pub struct Ticket {
    admission: Arc<Admission>,
    started: Instant,
}

impl Admission {
    /// Starts at the ceiling: the limit only comes down once latency says so, and
    /// never below `min_in_flight` (nor above `max_in_flight`).
    pub fn new(min_in_flight: usize, max_in_flight: usize, target: Duration) -> Arc<Self> {
        let max = (max_in_flight as f64).max(1.0);
        Arc::new(Self {
            min: (min_in_flight as f64).clamp(1.0, max),
            state: Mutex::new(State {
                in_flight: 0,
                limit: max,
                window_started: Instant::now(),
                completed: 0,
                latency_sum: Duration::ZERO,
                limited: false,
            }),
            max,
            target,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one request, or `None` if the node is at its limit (for
    /// [`Priority::Finish`]: past the limit's headroom).
    pub fn try_admit(self: &Arc<Self>, priority: Priority) -> Option<Ticket> {
        let mut s = self.lock();
        let bound = match priority {
            Priority::Start => s.limit.floor(),
            Priority::Finish => (s.limit * (1.0 + FINISH_HEADROOM)).floor(),
        };
        if s.in_flight as f64 >= bound {
            s.limited = true;
            return None;
        }
        s.in_flight += 1;
        if s.in_flight as f64 >= s.limit.floor() {
            s.limited = true;
        }
        Some(Ticket {
            admission: self.clone(),
            started: Instant::now(),
        })
    }

    /// The current limit (for metrics and tests).
    pub fn limit(&self) -> usize {
        self.lock().limit as usize
    }

    fn done(&self, latency: Duration) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        s.completed += 1;
        s.latency_sum += latency;
        let now = Instant::now();
        if now.duration_since(s.window_started) < WINDOW {
            return;
        }
        let mean = s.latency_sum / s.completed.max(1);
        if mean > self.target {
            s.limit = (s.limit * 0.8).max(self.min);
        } else if s.limited {
            s.limit = (s.limit + (s.limit / 10.0).max(1.0)).min(self.max);
        }
        metrics::gauge!("boxoffice_http_admission_limit").set(s.limit);
        s.window_started = now;
        s.completed = 0;
        s.latency_sum = Duration::ZERO;
        s.limited = false;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.done(self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request answered `latency` after it was admitted.
    fn answer(mut t: Ticket, latency: Duration) {
        t.started = Instant::now() - latency;
        drop(t);
    }

    /// One window: `n` requests (as many as are admitted) answered after
    /// `latency`, then one more answer once the window is over, which closes it.
    fn window(a: &Arc<Admission>, n: usize, latency: Duration) {
        let tickets: Vec<_> = (0..n)
            .filter_map(|_| a.try_admit(Priority::Start))
            .collect();
        for t in tickets {
            answer(t, latency);
        }
        std::thread::sleep(WINDOW);
        if let Some(t) = a.try_admit(Priority::Start) {
            answer(t, latency);
        }
    }

    #[test]
    fn slow_windows_cut_the_limit_and_fast_full_ones_raise_it() {
        const FLOOR: usize = 32;
        let a = Admission::new(FLOOR, 100, Duration::from_millis(50));
        assert_eq!(a.limit(), 100);
        window(&a, 10, Duration::from_millis(200));
        assert_eq!(a.limit(), 80);
        for _ in 0..20 {
            window(&a, 10, Duration::from_millis(200));
        }
        assert_eq!(a.limit(), FLOOR, "never below the floor");
        // At the limit: the next request is refused until one is answered.
        let held: Vec<_> = (0..FLOOR)
            .filter_map(|_| a.try_admit(Priority::Start))
            .collect();
        assert_eq!(held.len(), FLOOR);
        assert!(a.try_admit(Priority::Start).is_none());
        drop(held);
        // Fast windows that hit the limit raise it again, up to the ceiling.
        for _ in 0..100 {
            window(&a, 200, Duration::from_millis(1));
        }
        assert_eq!(a.limit(), 100);
        // Fast windows below the limit leave it alone.
        window(&a, 10, Duration::from_millis(200));
        let cut = a.limit();
        window(&a, 5, Duration::from_millis(1));
        assert_eq!(a.limit(), cut);
    }

    #[test]
    fn a_floor_above_the_ceiling_is_the_ceiling() {
        let a = Admission::new(128, 40, Duration::from_millis(50));
        for _ in 0..3 {
            window(&a, 10, Duration::from_millis(200));
        }
        assert_eq!(a.limit(), 40, "slow windows cannot lift the limit past it");
        let held: Vec<_> = (0..60)
            .filter_map(|_| a.try_admit(Priority::Start))
            .collect();
        assert_eq!(held.len(), 40);
    }

    #[test]
    fn finishing_work_goes_a_quarter_over_the_limit_and_no_further() {
        let a = Admission::new(32, 40, Duration::from_millis(50));
        let new: Vec<_> = (0..60)
            .filter_map(|_| a.try_admit(Priority::Start))
            .collect();
        assert_eq!(new.len(), 40, "new work stops at the limit");
        let finishing: Vec<_> = (0..60)
            .filter_map(|_| a.try_admit(Priority::Finish))
            .collect();
        assert_eq!(finishing.len(), 10, "finishing work gets the headroom only");
        assert!(a.try_admit(Priority::Start).is_none());
        drop(finishing);
        assert!(a.try_admit(Priority::Start).is_none(), "still at the limit");
        assert!(a.try_admit(Priority::Finish).is_some());
    }
}
