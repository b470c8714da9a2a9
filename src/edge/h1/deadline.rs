//! The bound on the wait for each request head, kept by one timer per connection.
//!
//! A `tokio::time::timeout` around each wait registers a timer in the runtime's wheel when
//! the wait starts and removes it when the head arrives: a lock, an insert and a removal per
//! keep-alive request, and, whenever the new timer is due before the runtime's planned wake,
//! a write to its eventfd that wakes the thread's next poll for nothing (0.16 per request
//! under `wrk`; BENCHMARKS.md, "Passthrough: a timer and a shutdown registration per
//! connection"). Here the timer is made once and moved only when it fires before the current
//! wait's deadline, as nginx's lazy timers do: a request that arrives in time costs a clock
//! read, and the timer fires and moves at most once per limit. The wait's shutdown
//! registration is kept the same way ([`ShutdownWatch`]).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

use crate::ops::shutdown::{ShutdownSignal, ShutdownWatch};

/// What a connection keeps between requests to bound its wait for the next head, boxed: a
/// connection that turns into an event stream drops it and keeps one pointer's room.
pub struct Waiting {
    /// The wait's deadline.
    pub deadline: HeadDeadline,
    /// Shutdown, which ends a wait at once.
    pub shutdown: ShutdownWatch,
}

impl Waiting {
    /// Made at a connection's first wait.
    pub fn new(shutdown: &ShutdownSignal) -> Box<Waiting> {
        Box::new(Waiting {
            deadline: HeadDeadline::default(),
            shutdown: shutdown.watch(),
        })
    }
}

/// One connection's head-wait timer.
#[derive(Default)]
pub struct HeadDeadline {
    /// Armed for the current wait's deadline or an earlier one; made at the first wait that
    /// has to wait (a head already read needs none).
    timer: Option<Pin<Box<Sleep>>>,
}

impl HeadDeadline {
    /// Resolves once `limit` has passed since `since` (when the wait began).
    pub fn elapsed(&mut self, since: Instant, limit: Duration) -> impl Future<Output = ()> + '_ {
        let due = since + limit;
        poll_fn(move |cx| {
            let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(due)));
            loop {
                // A timer armed for an earlier wait moves to this one's deadline when it
                // fires; deadlines only grow, as waits start one after the other.
                if timer.deadline() < due && timer.is_elapsed() {
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

    /// A wait begun at `since` that a head ends `after` later, before its limit: the timer
    /// stays armed for it.
    async fn ended_by_a_head(
        deadline: &mut HeadDeadline,
        since: Instant,
        limit: Duration,
        after: Duration,
    ) {
        tokio::select! {
            () = deadline.elapsed(since, limit) => panic!("over before its head came"),
            () = tokio::time::sleep(after) => {}
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_wait_is_bounded_from_its_own_start() {
        let limit = Duration::from_secs(10);
        let mut deadline = HeadDeadline::default();
        // The first wait ends early (its head arrived).
        ended_by_a_head(&mut deadline, Instant::now(), limit, Duration::from_secs(4)).await;
        // A second wait starts 4 s later: the old deadline (10 s) fires first and must not
        // end it; it ends 10 s after its own start.
        let second = Instant::now();
        deadline.elapsed(second, limit).await;
        assert_eq!(Instant::now() - second, limit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_started_after_the_old_deadline_gets_its_full_limit() {
        let limit = Duration::from_secs(10);
        let mut deadline = HeadDeadline::default();
        ended_by_a_head(&mut deadline, Instant::now(), limit, Duration::from_secs(1)).await;
        // A long answer: the timer fires, unwatched, while no head is awaited.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let since = Instant::now();
        deadline.elapsed(since, limit).await;
        assert_eq!(Instant::now() - since, limit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_never_over_before_its_limit_and_always_at_it() {
        let limit = Duration::from_secs(10);
        let almost = limit - Duration::from_millis(1);
        let mut deadline = HeadDeadline::default();
        for gap_ms in [0, 1, 4_000, 9_999, 10_001, 30_000] {
            let gap = Duration::from_millis(gap_ms);
            // A wait that a head ends before its limit, then an answer that takes `gap`.
            ended_by_a_head(&mut deadline, Instant::now(), limit, gap.min(almost)).await;
            tokio::time::sleep(gap).await;
            // The next wait, whatever the timer was armed for.
            let since = Instant::now();
            let early = tokio::time::timeout(almost, deadline.elapsed(since, limit)).await;
            assert!(early.is_err(), "over early after a gap of {gap_ms} ms");
            deadline.elapsed(since, limit).await;
            assert_eq!(Instant::now() - since, limit, "after a gap of {gap_ms} ms");
        }
    }
}
