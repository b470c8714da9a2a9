//! The shutdown signal passed into every long-running task (as in mini-redis).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::sync::watch;

/// Fires every clone of its [`ShutdownSignal`] once.
pub struct Shutdown(watch::Sender<bool>);

/// Resolves once shutdown has begun; cheap to clone into each task.
#[derive(Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl Shutdown {
    /// A new, unfired signal and its first receiver.
    pub fn new() -> (Shutdown, ShutdownSignal) {
        let (sender, receiver) = watch::channel(false);
        (Shutdown(sender), ShutdownSignal(receiver))
    }

    /// Begins shutdown.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl ShutdownSignal {
    /// Waits until shutdown begins (immediately if it already has).
    pub async fn fired(&mut self) {
        // The guard returned by `wait_for` is dropped before this future completes, so the
        // future stays `Send`.
        let _ = self.0.wait_for(|fired| *fired).await;
    }

    /// Whether shutdown has begun.
    pub fn has_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// A watch for a task that waits for shutdown many times over (once per request).
    pub fn watch(&self) -> ShutdownWatch {
        let mut signal = self.clone();
        // Unconstrained: out of coop budget, the wait would return pending without
        // registering, and the shortcut in `poll_fired` would then never register it.
        let wait = tokio::task::unconstrained(async move { signal.fired().await });
        ShutdownWatch {
            signal: self.clone(),
            wait: Some(Box::pin(wait)),
            waker: None,
        }
    }
}

/// Shutdown watched across many waits of one task, registered once. A [`ShutdownSignal::fired`]
/// per wait registers its waker with the signal and removes it again, each under a lock all
/// serving threads share: on the HTTP/1.1 fast path, two locks per keep-alive request
/// (BENCHMARKS.md, issue 15.1). A watch keeps its registration between waits and looks at it
/// only when the signal has changed, or when it is polled for another task than the one
/// registered.
pub struct ShutdownWatch {
    /// Tells with one atomic load whether shutdown began since the watch was made.
    signal: ShutdownSignal,
    /// The registered wait; `None` once it has fired.
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The waker `wait` was last polled with: the one shutdown wakes.
    waker: Option<Waker>,
}

impl ShutdownWatch {
    /// Ready once shutdown has begun (and on every poll after).
    pub fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(wait) = &mut self.wait else {
            return Poll::Ready(());
        };
        // A dropped sender counts as a change: `fired` then resolves.
        let unchanged = !self.signal.0.has_changed().unwrap_or(true);
        if unchanged && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        match wait.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.wait = None;
                self.waker = None;
                Poll::Ready(())
            }
            Poll::Pending => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Resolves once shutdown has begun.
    pub fn fired(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_fired(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::wakes::WakeCount;

    #[test]
    fn a_watch_wakes_its_task_when_shutdown_fires_and_stays_fired() {
        let (shutdown, signal) = Shutdown::new();
        let mut watch = signal.watch();
        let (count, waker) = WakeCount::waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(watch.poll_fired(&mut cx).is_pending());
        }
        shutdown.fire();
        assert_eq!(count.count(), 1, "the task registered once is woken");
        assert!(watch.poll_fired(&mut cx).is_ready());
        assert!(watch.poll_fired(&mut cx).is_ready(), "fired stays fired");
    }

    #[test]
    fn a_watch_polled_for_another_task_wakes_that_task() {
        let (shutdown, signal) = Shutdown::new();
        let mut watch = signal.watch();
        let (_, first_waker) = WakeCount::waker();
        let (second, second_waker) = WakeCount::waker();
        assert!(
            watch
                .poll_fired(&mut Context::from_waker(&first_waker))
                .is_pending()
        );
        assert!(
            watch
                .poll_fired(&mut Context::from_waker(&second_waker))
                .is_pending()
        );
        shutdown.fire();
        assert_eq!(second.count(), 1, "the last task to wait is the one woken");
        assert!(
            watch
                .poll_fired(&mut Context::from_waker(&second_waker))
                .is_ready()
        );
    }

    #[tokio::test]
    async fn a_watch_first_polled_when_its_task_is_out_of_budget_is_still_woken() {
        let (shutdown, signal) = Shutdown::new();
        let mut watch = signal.watch();
        while tokio::task::coop::has_budget_remaining() {
            std::future::poll_fn(|cx| {
                if let Poll::Ready(spent) = tokio::task::coop::poll_proceed(cx) {
                    spent.made_progress();
                }
                Poll::Ready(())
            })
            .await;
        }
        let (count, waker) = WakeCount::waker();
        let mut cx = Context::from_waker(&waker);
        assert!(watch.poll_fired(&mut cx).is_pending());
        assert!(watch.poll_fired(&mut cx).is_pending());
        let before = count.count();
        shutdown.fire();
        assert_eq!(count.count(), before + 1, "shutdown wakes the task");
    }

    #[test]
    fn a_watch_made_after_shutdown_or_outliving_its_sender_is_fired() {
        let (shutdown, signal) = Shutdown::new();
        let (_, waker) = WakeCount::waker();
        let mut cx = Context::from_waker(&waker);
        let mut before = signal.watch();
        assert!(before.poll_fired(&mut cx).is_pending());
        shutdown.fire();
        assert!(signal.watch().poll_fired(&mut cx).is_ready());
        let (shutdown, signal) = Shutdown::new();
        let mut orphan = signal.watch();
        assert!(orphan.poll_fired(&mut cx).is_pending());
        drop(shutdown);
        assert!(orphan.poll_fired(&mut cx).is_ready());
    }
}
