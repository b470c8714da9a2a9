//! One timer that bounds a connection's successive waits, moved lazily.
//!
//! A `tokio::time::timeout` around each wait registers a timer in the runtime's wheel when
//! the wait starts and removes it when the wait ends: a lock, an insert and a removal per
//! request, the timeout's future moved twice, and, whenever the new timer is due before the
//! runtime's planned wake, a write to its eventfd that wakes the thread's next poll for
//! nothing (BENCHMARKS.md, "Passthrough: a timer and a shutdown registration per
//! connection"). Here the timer is made once and moved only when it fires before the current
//! wait's deadline, as nginx's lazy timers do: a wait that ends in time costs a clock read
//! and a waker's registration, and the timer fires and moves at most once per bound.
//!
//! The edge's HTTP/1.1 fast path bounds its wait for each request head with one, and each
//! origin connection we speak HTTP/1.1 on ourselves its wait for each answer's head.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Poll, ready};

use tokio::time::{Instant, Sleep, sleep_until};

/// One connection's timer for its waits, one at a time.
///
/// Between waits the timer stays armed, holding the waker of the last task that waited: for
/// an idle pooled origin connection, a finished request's task, whose memory is then kept
/// (and which is woken once, for nothing) until the timer fires, at most one bound later.
#[derive(Default)]
pub struct LazyDeadline {
    /// Armed for the current wait's deadline or an earlier one; made at the first wait that
    /// has to wait (one that ends at its first poll needs none).
    timer: Option<Pin<Box<Sleep>>>,
}

impl LazyDeadline {
    /// Resolves at `due`.
    ///
    /// A timer armed for an earlier wait's deadline is moved to `due` when it fires; one armed
    /// for a later deadline (a wait that was allowed longer) is moved back at once, which
    /// takes the wheel's lock as a new timer would.
    pub fn until(&mut self, due: Instant) -> impl Future<Output = ()> + Unpin + '_ {
        poll_fn(move |cx| {
            let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(due)));
            loop {
                let armed = timer.deadline();
                if armed > due || (armed < due && timer.is_elapsed()) {
                    timer.as_mut().reset(due);
                }
                ready!(timer.as_mut().poll(cx));
                if timer.deadline() >= due {
                    return Poll::Ready(());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A wait begun now and bounded by `limit` that ends `after` later, before its bound: the
    /// timer stays armed for it.
    async fn ended_in_time(deadline: &mut LazyDeadline, limit: Duration, after: Duration) {
        tokio::select! {
            () = deadline.until(Instant::now() + limit) => panic!("over before it ended"),
            () = tokio::time::sleep(after) => {}
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_wait_is_bounded_from_its_own_start() {
        let limit = Duration::from_secs(10);
        let mut deadline = LazyDeadline::default();
        // The first wait ends early.
        ended_in_time(&mut deadline, limit, Duration::from_secs(4)).await;
        // A second wait starts 4 s later: the old deadline (10 s) fires first and must not
        // end it; it ends 10 s after its own start.
        let second = Instant::now();
        deadline.until(second + limit).await;
        assert_eq!(Instant::now() - second, limit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_started_after_the_old_deadline_gets_its_full_bound() {
        let limit = Duration::from_secs(10);
        let mut deadline = LazyDeadline::default();
        ended_in_time(&mut deadline, limit, Duration::from_secs(1)).await;
        // The timer fires, unwatched, between two waits.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let since = Instant::now();
        deadline.until(since + limit).await;
        assert_eq!(Instant::now() - since, limit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_wait_after_a_longer_one_ends_at_its_own_bound() {
        let mut deadline = LazyDeadline::default();
        // A long poll, allowed 35 s, answered after 1 s.
        ended_in_time(
            &mut deadline,
            Duration::from_secs(35),
            Duration::from_secs(1),
        )
        .await;
        // Then a request allowed 10 s: the timer, armed 34 s ahead, must not hold it longer.
        let since = Instant::now();
        deadline.until(since + Duration::from_secs(10)).await;
        assert_eq!(Instant::now() - since, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_never_over_before_its_bound_and_always_at_it() {
        let almost = |limit: Duration| limit - Duration::from_millis(1);
        let mut deadline = LazyDeadline::default();
        // (pause between the waits, bound of the wait that ends in time, bound of the next)
        let rows = [
            (0, 10, 10),
            (1, 10, 10),
            (4_000, 35, 35),
            (9_999, 10, 10),
            (10_001, 5, 5),
            (30_000, 10, 10),
            (1, 35, 10),
            (2_000, 35, 5),
            (0, 5, 35),
        ];
        for (gap_ms, before_s, limit_s) in rows {
            let gap = Duration::from_millis(gap_ms);
            let (before, limit) = (Duration::from_secs(before_s), Duration::from_secs(limit_s));
            // A wait that ends before its bound, then a pause of `gap` between waits.
            ended_in_time(&mut deadline, before, gap.min(almost(before))).await;
            tokio::time::sleep(gap).await;
            // The next wait, whatever the timer was armed for.
            let since = Instant::now();
            let early = tokio::time::timeout(almost(limit), deadline.until(since + limit)).await;
            assert!(early.is_err(), "over early after a gap of {gap_ms} ms");
            deadline.until(since + limit).await;
            assert_eq!(Instant::now() - since, limit, "after a gap of {gap_ms} ms");
        }
    }
}
