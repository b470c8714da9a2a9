//! Wake-ups that cross threads, one per thread instead of one per subscriber.
//!
//! A subscriber served on a serving thread (`[listen] serving_threads`: a single-threaded
//! runtime per thread) is woken by a publication that runs elsewhere: its channel's pollers
//! and heartbeats live on the shared runtime. Waking a task of a single-threaded runtime from
//! another thread costs a system call (a write to the runtime's eventfd) per task, which
//! doubled the system calls per delivered event over HTTP/1.1 (BENCHMARKS.md, "Fan-out on
//! serving threads"). So a subscriber parked on such a thread is parked with that
//! thread's [`Relay`]: a publication hands the relay all of its wakers at once, with one
//! wake-up of the relay's task, which wakes them from inside the thread, where a wake is a
//! push onto the runtime's own queue.

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use tokio::sync::Notify;

thread_local! {
    /// The relay of the calling thread's runtime, when it has one.
    static LOCAL: RefCell<Option<Arc<Relay>>> = const { RefCell::new(None) };
}

/// A thread's hand-over point for wakers woken from elsewhere.
pub struct Relay {
    /// Batches of wakers handed over since the relay's task last ran; `None` once that task
    /// is gone (its thread stopped serving, or panicked), when nothing would ever take them.
    batches: Mutex<Option<Vec<Vec<Waker>>>>,
    /// Wakes the relay's task: one cross-thread wake-up per hand-over.
    handed: Notify,
}

impl Relay {
    /// Wakes `wakers` on the relay's thread, or here once its task is gone: channels keep
    /// their relays, and wakers kept for a task that never runs would keep their tasks (and
    /// a stopped runtime's driver) alive, or never wake them if their runtime still runs.
    fn hand_over(&self, wakers: Vec<Waker>) {
        let left = match self.batches().as_mut() {
            Some(batches) => {
                batches.push(wakers);
                None
            }
            None => Some(wakers),
        };
        match left {
            None => self.handed.notify_one(),
            Some(wakers) => wakers.into_iter().for_each(Waker::wake),
        }
    }

    /// The batches, under their lock.
    fn batches(&self) -> MutexGuard<'_, Option<Vec<Vec<Waker>>>> {
        // Wakers are only pushed and taken under the lock: nothing is left half-done.
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the batches handed over so far.
    fn take(&self) -> Vec<Vec<Waker>> {
        self.batches()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

/// Owned by the relay's task: when the task is dropped, even before it ever ran, the relay
/// stops taking batches and wakes those it still holds.
struct Running(
    /// The relay whose task this is.
    Arc<Relay>,
);

impl Drop for Running {
    fn drop(&mut self) {
        let left = self.0.batches().take().unwrap_or_default();
        left.into_iter().flatten().for_each(Waker::wake);
    }
}

/// Gives the calling thread a relay and returns its task, to be run on this thread's runtime
/// for as long as the thread serves (a serving thread calls it once, before serving).
pub fn relay_for_this_thread() -> impl Future<Output = ()> + 'static {
    let relay = Arc::new(Relay {
        batches: Mutex::new(Some(Vec::new())),
        handed: Notify::new(),
    });
    LOCAL.with(|local| *local.borrow_mut() = Some(relay.clone()));
    let running = Running(relay);
    async move {
        let relay = &running.0;
        loop {
            relay.handed.notified().await;
            relay.take().into_iter().flatten().for_each(Waker::wake);
        }
    }
}

/// Tasks waiting for a channel's next publication, by the thread they are woken on.
#[derive(Default)]
pub struct Parked {
    /// Tasks of the shared runtime (or of a thread without a relay): woken directly.
    direct: Vec<Waker>,
    /// Tasks of threads with a relay, one list per relay (as many as serving threads).
    relayed: Vec<(Arc<Relay>, Vec<Waker>)>,
}

impl Parked {
    /// Parks `waker`, that of a task running on the calling thread.
    pub fn push(&mut self, waker: Waker) {
        LOCAL.with(|local| match &*local.borrow() {
            None => self.direct.push(waker),
            Some(relay) => match self.relayed.iter_mut().find(|(r, _)| Arc::ptr_eq(r, relay)) {
                Some((_, wakers)) => wakers.push(waker),
                None => self.relayed.push((relay.clone(), vec![waker])),
            },
        });
    }

    /// Takes every parked waker, leaving lists of the same sizes ready for the next round.
    pub fn take(&mut self) -> Parked {
        let fresh = Vec::with_capacity(self.direct.len());
        let direct = std::mem::replace(&mut self.direct, fresh);
        let relayed = self
            .relayed
            .iter_mut()
            .filter(|(_, wakers)| !wakers.is_empty())
            .map(|(relay, wakers)| {
                let fresh = Vec::with_capacity(wakers.len());
                (relay.clone(), std::mem::replace(wakers, fresh))
            })
            .collect();
        Parked { direct, relayed }
    }

    /// Wakes them all: directly, or through their thread's relay (directly when that is the
    /// calling thread's own).
    pub fn wake(self) {
        self.direct.into_iter().for_each(Waker::wake);
        if self.relayed.is_empty() {
            return;
        }
        let here = LOCAL.with(|local| local.borrow().clone());
        for (relay, wakers) in self.relayed {
            if here.as_ref().is_some_and(|here| Arc::ptr_eq(here, &relay)) {
                wakers.into_iter().for_each(Waker::wake);
            } else {
                relay.hand_over(wakers);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::task::Wake;
    use std::thread::ThreadId;
    use std::time::Duration;

    /// Says, each time it is woken, which thread woke it.
    struct Told(mpsc::Sender<ThreadId>);
    impl Wake for Told {
        fn wake(self: Arc<Self>) {
            let _ = self.0.send(std::thread::current().id());
        }
    }

    #[test]
    fn without_a_relay_wakers_are_woken_directly() {
        let (told, woken) = mpsc::channel();
        let mut parked = Parked::default();
        parked.push(Waker::from(Arc::new(Told(told))));
        parked.take().wake();
        assert_eq!(woken.try_recv(), Ok(std::thread::current().id()));
        parked.take().wake();
        assert!(woken.try_recv().is_err(), "taken once");
    }

    #[test]
    fn wakers_parked_on_a_relay_thread_are_woken_there_after_one_hand_over() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (told, woken) = mpsc::channel();
        let (parked_tx, parked_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let relay = relay_for_this_thread();
            let mut parked = Parked::default();
            for _ in 0..3 {
                parked.push(Waker::from(Arc::new(Told(told.clone()))));
            }
            parked_tx.send(parked).expect("sent");
            runtime.block_on(async {
                tokio::select! {
                    _ = relay => {}
                    _ = stopped => {}
                }
            });
        });
        let relay_thread = thread.thread().id();
        let taken = parked_rx.recv().expect("parked on the relay thread").take();
        assert!(taken.direct.is_empty());
        assert_eq!(taken.relayed.len(), 1, "one relay, one hand-over");
        assert_eq!(taken.relayed[0].1.len(), 3);
        taken.wake();
        for _ in 0..3 {
            let on = woken.recv_timeout(Duration::from_secs(10)).expect("woken");
            assert_eq!(on, relay_thread, "woken on the relay's thread");
        }
        stop.send(()).expect("thread running");
        thread.join().expect("thread");
    }

    #[test]
    fn once_a_relays_runtime_is_gone_its_wakers_are_woken_where_handed_over_and_not_kept() {
        let (told, woken) = mpsc::channel();
        let (early, late) = (Arc::new(Told(told.clone())), Arc::new(Told(told)));
        let (parked_tx, parked_rx) = mpsc::channel();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn({
            let (early, late) = (early.clone(), late.clone());
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                runtime.spawn(relay_for_this_thread());
                let (mut before, mut after) = (Parked::default(), Parked::default());
                before.push(Waker::from(early));
                after.push(Waker::from(late));
                parked_tx.send((before, after)).expect("sent");
                // A serving thread that stops (or panics) before its relay's task ran: its
                // runtime and every task on it are dropped.
                stopped.recv().expect("told to stop");
                drop(runtime);
            }
        });
        let relay_thread = thread.thread().id();
        let (mut before, mut after) = parked_rx.recv().expect("parked on the relay thread");
        before.take().wake();
        assert!(woken.try_recv().is_err(), "handed to the relay's task");
        stop.send(()).expect("thread running");
        thread.join().expect("thread");
        assert_eq!(
            woken.try_recv(),
            Ok(relay_thread),
            "what the relay held is woken as its task is dropped"
        );
        after.take().wake();
        assert_eq!(
            woken.try_recv(),
            Ok(std::thread::current().id()),
            "woken by the publication itself, as no relay task will run"
        );
        assert_eq!(Arc::strong_count(&early), 1, "nothing keeps the waker");
        assert_eq!(Arc::strong_count(&late), 1, "nothing keeps the waker");
    }
}
