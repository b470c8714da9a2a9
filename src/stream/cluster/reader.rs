//! One reader per instance: a connection blocked in `XREAD` over the streams of every stream
//! key this instance follows, handing each entry to its follower. A new follower unblocks
//! it (`CLIENT UNBLOCK`) so it starts reading at once; a follower that does not keep up, or
//! a lost connection, ends the following (the follower then converges on a fresh snapshot).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};
use tokio::sync::{Notify, mpsc};

use super::wire::{Notice, stream_order};
use crate::ops::shutdown::ShutdownSignal;

/// How long one `XREAD` blocks: the bound on how late a follower that registered while a
/// read was starting sees its first entry.
const BLOCK: Duration = Duration::from_millis(1000);
/// Entries read per stream per round.
const COUNT: usize = 256;
/// Entries queued per follower; beyond it the follower is dropped and converges instead.
const QUEUE: usize = 1024;

/// An entry for a follower.
#[derive(Debug)]
pub struct Arrival {
    /// What it says.
    pub notice: Notice,
}

/// A registered follower.
struct Follow {
    /// The last stream id handed over: the next read starts after it.
    from: String,
    /// Where its entries go.
    tx: mpsc::Sender<Arrival>,
    /// Which registration this is, so an old one's drop does not end a newer one.
    generation: u64,
}

/// The instance's stream reader, shared by all followers.
pub struct Reader {
    /// Followers by stream name.
    follows: Mutex<HashMap<String, Follow>>,
    /// Numbers registrations.
    generations: AtomicU64,
    /// Signalled when the first follower registers (the reader sleeps while there is none).
    changed: Notify,
    /// `CLIENT ID` of the reading connection while it is blocked, 0 otherwise.
    blocked: AtomicI64,
}

/// A follower's registration; dropping it stops the following.
pub struct Following {
    /// The stream followed.
    events: String,
    /// This registration's number.
    generation: u64,
    /// The reader, to unregister from.
    reader: Arc<Reader>,
    /// The entries, in order; `None`: the following ended (slow follower or lost Redis).
    pub arrivals: mpsc::Receiver<Arrival>,
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut follows = self.reader.lock();
        if follows
            .get(&self.events)
            .is_some_and(|f| f.generation == self.generation)
        {
            follows.remove(&self.events);
        }
    }
}

impl Reader {
    /// A reader with no followers.
    pub fn new() -> Arc<Reader> {
        Arc::new(Reader {
            follows: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
            changed: Notify::new(),
            blocked: AtomicI64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Follow>> {
        self.follows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the stream `events` after entry `from`; returns the registration and the
    /// `CLIENT ID` to unblock, if a read is in progress.
    pub fn follow(self: &Arc<Self>, events: &str, from: String) -> (Following, Option<i64>) {
        let (tx, arrivals) = mpsc::channel(QUEUE);
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            events.to_owned(),
            Follow {
                from,
                tx,
                generation,
            },
        );
        self.changed.notify_one();
        let blocked = self.blocked.load(Ordering::SeqCst);
        let following = Following {
            events: events.to_owned(),
            generation,
            reader: self.clone(),
            arrivals,
        };
        (following, (blocked != 0).then_some(blocked))
    }

    /// Ends every following (the connection was lost: followers converge when it is back).
    fn end_all(&self) {
        self.lock().clear();
    }

    /// Reads until shutdown, reconnecting after failures.
    pub async fn run(self: Arc<Self>, client: redis::Client, mut shutdown: ShutdownSignal) {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
        loop {
            let session = async {
                let mut con = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut con).await?;
                self.read(&mut con, id).await
            };
            tokio::select! {
                result = session => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "cluster reader lost Redis");
                    }
                }
                _ = shutdown.fired() => return,
            }
            self.end_all();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.fired() => return,
            }
        }
    }

    /// Reads rounds on one connection until it fails.
    async fn read(
        &self,
        con: &mut redis::aio::MultiplexedConnection,
        client_id: i64,
    ) -> redis::RedisResult<()> {
        let options = StreamReadOptions::default()
            .block(BLOCK.as_millis() as usize)
            .count(COUNT);
        loop {
            let (keys, ids): (Vec<String>, Vec<String>) = self
                .lock()
                .iter()
                .map(|(key, follow)| (key.clone(), follow.from.clone()))
                .unzip();
            if keys.is_empty() {
                let _ = tokio::time::timeout(BLOCK, self.changed.notified()).await;
                continue;
            }
            self.blocked.store(client_id, Ordering::SeqCst);
            let reply: redis::RedisResult<Option<StreamReadReply>> =
                con.xread_options(&keys, &ids, &options).await;
            self.blocked.store(0, Ordering::SeqCst);
            if let Some(reply) = reply? {
                self.hand_over(reply);
            }
        }
    }

    /// Gives each follower its entries; a follower whose queue is full is dropped.
    fn hand_over(&self, reply: StreamReadReply) {
        let mut follows = self.lock();
        for stream in reply.keys {
            let Some(follow) = follows.get_mut(&stream.key) else {
                continue;
            };
            let mut keep = true;
            for entry in stream.ids {
                // A follower that registered again (after converging) while this round was
                // in flight has seen everything up to its new `from`: older entries would
                // take its state back.
                if stream_order(&entry.id) <= stream_order(&follow.from) {
                    continue;
                }
                follow.from.clone_from(&entry.id);
                let notice = entry
                    .get::<String>("b")
                    .and_then(|b| serde_json::from_str::<Notice>(&b).ok());
                let Some(notice) = notice else {
                    tracing::warn!(stream = %stream.key, id = %entry.id, "skipping an unreadable cluster entry");
                    continue;
                };
                let arrival = Arrival { notice };
                if follow.tx.try_send(arrival).is_err() {
                    keep = false;
                    break;
                }
            }
            if !keep {
                follows.remove(&stream.key);
            }
        }
    }
}
