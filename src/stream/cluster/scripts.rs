//! Every Redis operation of cluster mode, each one Lua script (atomic on the server):
//! taking, renewing and releasing a lease, publishing under a lease (the fencing check),
//! and reading a stream key's state and history in one consistent snapshot.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::names::Names;

/// Takes a free lease: numbers it with the fence counter, so a token is never reused.
/// KEYS: lease, fence. ARGV: instance, lease ms, fence ttl ms.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local token = fence .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
",
    )
});

/// Renews a lease still ours, and keeps the key's history alive while it is polled.
/// KEYS: lease, events, state. ARGV: token, lease ms, history ttl ms.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return 1
",
    )
});

/// Gives a lease up if it is still ours. KEYS: lease. ARGV: token.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Appends a notice (with the lease's token, so a reader can tell whether the current holder
/// wrote it) and updates the state, only under the caller's lease (a holder that lost it,
/// paused or partitioned, cannot write). Each state field's value is prefixed with
/// the entry's id and position, so the state can be replayed in publication order.
/// KEYS: lease, events, state. ARGV: token, maxlen, ttl ms, notice, then (field, record or '')
/// pairs, '' removing the field.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'b', ARGV[4], 'h', ARGV[1])
for i = 5, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[3], ARGV[i])
  else
    redis.call('HSET', KEYS[3], ARGV[i], id .. ' ' .. i .. ' ' .. ARGV[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return id
",
    )
});

/// The state, the latest entries and the lease, read together. KEYS: events, state, lease.
/// ARGV: count.
static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
return {redis.call('HGETALL', KEYS[2]), redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1]), redis.call('GET', KEYS[3])}
",
    )
});

/// A stream key's state hash, its latest stream entries (newest first) and its lease's token.
pub type Snapshot = (
    HashMap<String, String>,
    Vec<(String, HashMap<String, String>)>,
    Option<String>,
);

/// Takes the lease of `names` for `lease` if it is free; the token when taken.
pub async fn acquire(
    con: &mut ConnectionManager,
    names: &Names,
    instance: &str,
    lease: Duration,
    ttl: Duration,
) -> redis::RedisResult<Option<String>> {
    ACQUIRE
        .key(&names.lease)
        .key(&names.fence)
        .arg(instance)
        .arg(lease.as_millis() as u64)
        .arg(ttl.as_millis() as u64)
        .invoke_async(con)
        .await
}

/// Renews the lease `token` holds; `false` when it is no longer this token's.
pub async fn renew(
    con: &mut ConnectionManager,
    names: &Names,
    token: &str,
    lease: Duration,
    ttl: Duration,
) -> redis::RedisResult<bool> {
    let renewed: i64 = RENEW
        .key(&names.lease)
        .key(&names.events)
        .key(&names.state)
        .arg(token)
        .arg(lease.as_millis() as u64)
        .arg(ttl.as_millis() as u64)
        .invoke_async(con)
        .await?;
    Ok(renewed == 1)
}

/// Gives the lease up, if `token` still holds it.
pub async fn release(
    con: &mut ConnectionManager,
    names: &Names,
    token: &str,
) -> redis::RedisResult<()> {
    let _: i64 = RELEASE
        .key(&names.lease)
        .arg(token)
        .invoke_async(con)
        .await?;
    Ok(())
}

/// What a publication carries besides the lease: the entry, its state updates, the bounds.
pub struct Publication<'a> {
    /// The notice, as JSON.
    pub notice: &'a str,
    /// (state field, record JSON or `""` to remove it).
    pub slots: &'a [(String, String)],
    /// `MAXLEN ~` of the stream.
    pub history: usize,
    /// How long the stream and state live after the last write.
    pub ttl: Duration,
}

/// Publishes under `token`'s lease; the entry's id, or `None` when the lease is not ours.
pub async fn publish(
    con: &mut ConnectionManager,
    names: &Names,
    token: &str,
    publication: &Publication<'_>,
) -> redis::RedisResult<Option<String>> {
    let mut invocation = PUBLISH.key(&names.lease);
    invocation
        .key(&names.events)
        .key(&names.state)
        .arg(token)
        .arg(publication.history)
        .arg(publication.ttl.as_millis() as u64)
        .arg(publication.notice);
    for (field, record) in publication.slots {
        invocation.arg(field).arg(record);
    }
    invocation.invoke_async(con).await
}

/// The state and up to `count` latest entries of `names`, read atomically.
pub async fn snapshot(
    con: &mut ConnectionManager,
    names: &Names,
    count: usize,
) -> redis::RedisResult<Snapshot> {
    SNAPSHOT
        .key(&names.events)
        .key(&names.state)
        .key(&names.lease)
        .arg(count)
        .invoke_async(con)
        .await
}
