//! An HTTP/2 connection's stream tasks that were woken and have not run since: what the
//! connection's write coalescing (`coalesce`) waits for before it writes.
//!
//! When the hub publishes an event it wakes every subscriber's stream task at once; each,
//! when it runs, hands its frame to h2 and wakes the connection's task. The connection can
//! write all of its streams' frames in one system call only if it waits until those of its
//! stream tasks that were woken have run, on either worker thread. Tokio does not say which
//! tasks are queued, so each stream task is polled with a waker of its own ([`TaskWake`])
//! that counts the task in its connection's [`Woken`] from its first wake until the poll
//! that follows it has finished (when its frame is with h2).
//!
//! While the connection holds a batch ([`Woken::hold`]), its task sleeps: the streams' own
//! wakes of it (h2 wakes the connection for every frame queued) find it held and return at
//! once without polling hyper ([`Woken::poll_release`]), and the stream task whose poll
//! brings the count to zero wakes it to write. So that a connection whose streams are woken
//! faster than they run still writes, a hold also ends once twice as many polls of woken
//! tasks have finished as there were woken tasks when it began ([`POLLS_PER_WOKEN`]).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// The task has not been woken since its last poll began.
const IDLE: u8 = 0;
/// The task was woken and is counted in its connection's [`Woken`].
const QUEUED: u8 = 1;
/// The task is gone: wakes from wakers still held elsewhere are no longer counted.
const DONE: u8 = 2;

/// How many polls of woken tasks end a hold, per task woken when it began. Two: h2 wakes a
/// stream task once more while it hands over its frame (reserving send capacity notifies
/// the task, which then polls again and finds nothing), so each woken task is polled twice
/// per frame. Holding only until none is woken gathered more (0.025 writes per event
/// against 0.041 at 1,000 subscribers × 20 events/s) but, past the demand (10,000 × 100/s),
/// held batches while new events kept waking streams: 1.4× the CPU per event and 2.5× the
/// p99 latency (BENCHMARKS.md, "CPU per delivered event").
const POLLS_PER_WOKEN: usize = 2;

/// One connection's woken stream tasks, and its task while it holds a batch for them.
#[derive(Debug, Default)]
pub(super) struct Woken {
    /// Stream tasks woken whose next poll has not finished.
    count: AtomicUsize,
    /// Polls of woken stream tasks finished so far (wrapping): bounds a hold.
    ran: AtomicUsize,
    /// Whether the connection holds a batch.
    holding: AtomicBool,
    /// The value of `ran` at which the current hold ends even if tasks are still woken.
    release_at: AtomicUsize,
    /// The connection's task, while it holds a batch.
    waiter: Mutex<Option<Waker>>,
}

impl Woken {
    /// Starts holding a batch if stream tasks of the connection are woken, and then returns
    /// `true`: the connection's task (`cx`) is woken when they have run.
    pub(super) fn hold(&self, cx: &Context<'_>) -> bool {
        let woken = self.count.load(Ordering::SeqCst);
        if woken == 0 {
            return false;
        }
        self.release_at.store(
            self.ran
                .load(Ordering::SeqCst)
                .wrapping_add(woken * POLLS_PER_WOKEN),
            Ordering::SeqCst,
        );
        *self.lock_waiter() = Some(cx.waker().clone());
        self.holding.store(true, Ordering::SeqCst);
        // A task that finished before `holding` was set did not wake the waiter.
        if self.released() {
            self.end_hold();
            return false;
        }
        true
    }

    /// `Ready` when the connection holds no batch, or the hold is over (and then ends it);
    /// `Pending` while it holds one, with `cx` woken when the hold is over.
    pub(super) fn poll_release(&self, cx: &Context<'_>) -> Poll<()> {
        if !self.holding.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        {
            let mut waiter = self.lock_waiter();
            if !waiter.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waiter = Some(cx.waker().clone());
            }
        }
        if self.released() {
            self.end_hold();
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Whether the current hold may end: no task is woken, or enough polls have finished.
    fn released(&self) -> bool {
        self.count.load(Ordering::SeqCst) == 0
            || (self.ran.load(Ordering::SeqCst))
                .wrapping_sub(self.release_at.load(Ordering::SeqCst))
                <= usize::MAX / 2
    }

    /// The hold is over: the connection writes.
    fn end_hold(&self) {
        self.holding.store(false, Ordering::SeqCst);
        self.lock_waiter().take();
    }

    /// The waiter, even if a thread panicked holding it (it is only ever replaced or taken).
    fn lock_waiter(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.waiter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A woken task was counted.
    fn woke(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// A woken task's poll finished (or the task is gone): wakes the connection if that
    /// ends its hold.
    fn ran(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.ran.fetch_add(1, Ordering::SeqCst);
        if self.holding.load(Ordering::SeqCst)
            && self.released()
            && let Some(waiter) = self.lock_waiter().take()
        {
            waiter.wake();
        }
    }
}

/// What a stream task's wakers share: its state, and the runtime's waker they forward to.
struct Shared {
    /// The connection's count.
    woken: Arc<Woken>,
    /// [`IDLE`], [`QUEUED`] or [`DONE`].
    state: AtomicU8,
    /// The runtime's waker for the task, as of its last poll.
    task: Mutex<Option<Waker>>,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self
            .state
            .compare_exchange(IDLE, QUEUED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.woken.woke();
        }
        if let Some(task) = &*self.task.lock().unwrap_or_else(PoisonError::into_inner) {
            task.wake_by_ref();
        }
    }
}

/// A stream task's counting waker: the task polls its future through [`TaskWake::poll`].
pub(super) struct TaskWake {
    /// Shared with every clone of `waker`.
    shared: Arc<Shared>,
    /// The waker the task's future sees, made once: it stays the same from poll to poll, so
    /// those who keep it (the hub, h2) need not clone it again.
    waker: Waker,
}

/// Counts a woken task's poll as finished when dropped: at its end, or if it panics.
struct Finished<'a>(&'a Woken);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.ran();
    }
}

impl TaskWake {
    /// A task of the connection counted in `woken`, not woken yet.
    pub(super) fn new(woken: Arc<Woken>) -> TaskWake {
        let shared = Arc::new(Shared {
            woken,
            state: AtomicU8::new(IDLE),
            task: Mutex::new(None),
        });
        TaskWake {
            waker: Waker::from(shared.clone()),
            shared,
        }
    }

    /// Calls `poll` with the counting waker, which forwards to `cx`'s; a task counted as
    /// woken is no longer counted once `poll` returns.
    pub(super) fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> T,
    ) -> T {
        let shared = &self.shared;
        let _finished = shared
            .state
            .compare_exchange(QUEUED, IDLE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            .then(|| Finished(&shared.woken));
        {
            let mut task = shared.task.lock().unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|task| task.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        poll(&mut Context::from_waker(&self.waker))
    }
}

impl Drop for TaskWake {
    fn drop(&mut self) {
        if self.shared.state.swap(DONE, Ordering::SeqCst) == QUEUED {
            self.shared.woken.ran();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::wakes::WakeCount;

    #[test]
    fn a_task_counts_from_its_first_wake_until_its_poll_finished_or_it_is_gone() {
        let woken = Arc::new(Woken::default());
        let (flag, runtime) = WakeCount::waker();
        let mut cx = Context::from_waker(&runtime);
        let mut task = TaskWake::new(woken.clone());
        let kept = task.poll(&mut cx, |cx| cx.waker().clone());
        assert_eq!(woken.count.load(Ordering::SeqCst), 0, "polled, not woken");
        kept.wake_by_ref();
        kept.wake_by_ref();
        assert_eq!(
            woken.count.load(Ordering::SeqCst),
            1,
            "woken twice, counted once"
        );
        assert_eq!(flag.count(), 2, "the runtime's waker was woken");
        task.poll(&mut cx, |_| {
            assert_eq!(
                woken.count.load(Ordering::SeqCst),
                1,
                "counted until the poll ends"
            );
        });
        assert_eq!(woken.count.load(Ordering::SeqCst), 0, "polled: not counted");
        kept.wake_by_ref();
        drop(task);
        assert_eq!(woken.count.load(Ordering::SeqCst), 0, "gone: not counted");
        kept.wake();
        assert_eq!(
            woken.count.load(Ordering::SeqCst),
            0,
            "a wake after it is gone: not counted"
        );
    }

    #[test]
    fn a_hold_lasts_until_the_woken_tasks_have_run_and_then_wakes_the_connection() {
        let woken = Arc::new(Woken::default());
        let (conn_flag, conn_waker) = WakeCount::waker();
        let conn = Context::from_waker(&conn_waker);
        let (_, runtime) = WakeCount::waker();
        let mut cx = Context::from_waker(&runtime);
        assert!(!woken.hold(&conn), "nothing woken: nothing to wait for");
        assert!(woken.poll_release(&conn).is_ready());
        let mut tasks: Vec<TaskWake> = (0..2).map(|_| TaskWake::new(woken.clone())).collect();
        let wakers: Vec<Waker> = tasks
            .iter_mut()
            .map(|task| task.poll(&mut cx, |cx| cx.waker().clone()))
            .collect();
        wakers.iter().for_each(Waker::wake_by_ref);
        assert!(woken.hold(&conn), "two tasks woken");
        assert!(woken.poll_release(&conn).is_pending());
        tasks[0].poll(&mut cx, |_| ());
        assert!(woken.poll_release(&conn).is_pending(), "one still to run");
        assert_eq!(conn_flag.count(), 0);
        tasks[1].poll(&mut cx, |_| ());
        assert_eq!(conn_flag.count(), 1, "the last one woke the connection");
        assert!(woken.poll_release(&conn).is_ready());
    }

    #[test]
    fn a_hold_ends_once_twice_as_many_polls_ran_as_tasks_were_woken() {
        let woken = Arc::new(Woken::default());
        let (conn_flag, conn_waker) = WakeCount::waker();
        let conn = Context::from_waker(&conn_waker);
        let (_, runtime) = WakeCount::waker();
        let mut cx = Context::from_waker(&runtime);
        let mut tasks: Vec<TaskWake> = (0..2).map(|_| TaskWake::new(woken.clone())).collect();
        let wakers: Vec<Waker> = tasks
            .iter_mut()
            .map(|task| task.poll(&mut cx, |cx| cx.waker().clone()))
            .collect();
        wakers[0].wake_by_ref();
        assert!(woken.hold(&conn), "one task woken");
        // Woken again while it runs, and the other woken meanwhile: never none woken.
        tasks[0].poll(&mut cx, |_| wakers.iter().for_each(Waker::wake_by_ref));
        assert_eq!(woken.count.load(Ordering::SeqCst), 2);
        assert!(woken.poll_release(&conn).is_pending(), "one poll ran");
        assert_eq!(conn_flag.count(), 0);
        tasks[0].poll(&mut cx, |_| wakers[0].wake_by_ref());
        assert_eq!(
            woken.count.load(Ordering::SeqCst),
            2,
            "still never none woken"
        );
        assert_eq!(
            conn_flag.count(),
            1,
            "twice as many polls ran as tasks were woken: the connection was woken"
        );
        assert!(woken.poll_release(&conn).is_ready());
    }
}
