//! For tests of what wakes a task (compiled for tests only): a waker that counts its
//! wake-ups, shared by the layers' tests instead of one copy each.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Wake, Waker};

/// How many times its waker was woken.
#[derive(Default)]
pub struct WakeCount(AtomicUsize);

impl WakeCount {
    /// A new count, and a waker that adds to it.
    pub fn waker() -> (Arc<WakeCount>, Waker) {
        let count = Arc::new(WakeCount::default());
        (count.clone(), Waker::from(count))
    }

    /// The wake-ups so far.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
