//! The shutdown signal passed into every long-running task (as in mini-redis).

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
}
