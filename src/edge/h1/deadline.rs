//! What a fast-path connection keeps between requests to bound its wait for the next head:
//! one lazily moved timer ([`LazyDeadline`], which says why) and one shutdown registration
//! ([`ShutdownWatch`]), where a `tokio::time::timeout` and a new waiter per wait cost a lock,
//! a wheel insert and removal, and a stray eventfd write per request.

use crate::ops::deadline::LazyDeadline;
use crate::ops::shutdown::{ShutdownSignal, ShutdownWatch};

/// Boxed: a connection that turns into an event stream drops it and keeps one pointer's
/// room.
pub struct Waiting {
    /// The wait's deadline.
    pub deadline: LazyDeadline,
    /// Shutdown, which ends a wait at once.
    pub shutdown: ShutdownWatch,
}

impl Waiting {
    /// Made at a connection's first wait.
    pub fn new(shutdown: &ShutdownSignal) -> Box<Waiting> {
        Box::new(Waiting {
            deadline: LazyDeadline::default(),
            shutdown: shutdown.watch(),
        })
    }
}
