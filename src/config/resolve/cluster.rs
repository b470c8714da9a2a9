//! Resolution of `[cluster]`: the Redis URL, the key prefix and the lease.

use std::time::Duration;

use toml::Spanned;

use super::super::raw::RawCluster;
use super::super::{ClusterConfig, ConfigError};
use super::Resolver;

/// Shortest lease: renewal runs every third of it, and a shorter one would let a Redis
/// hiccup of a few hundred milliseconds hand a key to a second poller.
const MIN_LEASE_MS: u64 = 500;
/// Longest lease: a dead instance's keys stay unpolled for up to this long.
const MAX_LEASE_MS: u64 = 60_000;

impl Resolver<'_> {
    pub(super) fn cluster(&self, raw: &Spanned<RawCluster>) -> Result<ClusterConfig, ConfigError> {
        let raw = raw.get_ref();
        let lease_ms = *raw.lease_ms.get_ref();
        if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&lease_ms) {
            return Err(self.error(
                raw.lease_ms.span(),
                "cluster.lease_ms",
                format!("must be between {MIN_LEASE_MS} and {MAX_LEASE_MS}"),
            ));
        }
        let prefix = raw.prefix.get_ref();
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'{' | b'}'));
        if !prefix_ok {
            return Err(self.error(
                raw.prefix.span(),
                "cluster.prefix",
                "must be 1 to 64 printable characters, without spaces or braces (braces are \
                 Redis hash tags)",
            ));
        }
        Ok(ClusterConfig {
            redis: self.redis_url(&raw.redis)?,
            prefix: prefix.clone(),
            lease: Duration::from_millis(lease_ms),
        })
    }

    /// `cluster.redis`: a `redis://` or `unix://` URL the Redis client accepts. The message
    /// never repeats the value, which may hold a password.
    fn redis_url(&self, value: &Spanned<String>) -> Result<String, ConfigError> {
        let key = "cluster.redis";
        let url = self.expand(value, key)?;
        if url.starts_with("rediss://") {
            return Err(self.error(
                value.span(),
                key,
                "TLS to Redis (rediss://) is not built in; reach Redis over a private network \
                 or a local TLS tunnel, with redis://",
            ));
        }
        let plain = url.starts_with("redis://")
            || url.starts_with("unix://")
            || url.starts_with("redis+unix://");
        if !plain || redis::Client::open(url.as_str()).is_err() {
            return Err(self.error(
                value.span(),
                key,
                "not a Redis URL like \"redis://127.0.0.1:6379\" or \
                 \"redis://:password@redis:6379/0\"",
            ));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::testing::invalid_parts;
    use crate::config::{Config, ConfigError};

    fn parse(cluster: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9000/\"\n{cluster}"
        );
        Config::from_toml(&text, "proxy.toml", Path::new("/etc/sse"), &|_| None)
    }

    #[test]
    fn defaults_and_values() {
        let config = parse("[cluster]\nredis = \"redis://127.0.0.1:6379\"").expect("valid");
        let cluster = config.cluster.expect("cluster");
        assert_eq!(cluster.prefix, "sse-edge");
        assert_eq!(cluster.lease.as_millis(), 5_000);
        assert!(parse("").expect("valid").cluster.is_none());
    }

    #[test]
    fn bad_values_name_their_key_and_line_and_hide_the_url() {
        let (line, key, message) =
            invalid_parts(parse("[cluster]\nredis = \"rediss://:hunter2@r:6379\""));
        assert_eq!((line, key.as_str()), (6, "cluster.redis"));
        assert!(message.contains("rediss://"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let (_, key, message) = invalid_parts(parse("[cluster]\nredis = \"http://:hunter2@r\""));
        assert_eq!(key, "cluster.redis");
        assert!(!message.contains("hunter2"), "{message}");
        let (line, key, _) =
            invalid_parts(parse("[cluster]\nredis = \"redis://r\"\nlease_ms = 100"));
        assert_eq!((line, key.as_str()), (7, "cluster.lease_ms"));
        let (_, key, _) =
            invalid_parts(parse("[cluster]\nredis = \"redis://r\"\nprefix = \"a{b}\""));
        assert_eq!(key, "cluster.prefix");
        let (_, key, _) = invalid_parts(parse("[cluster]\nredis = \"redis://r\"\nlease = 1"));
        assert_eq!(key, "cluster.lease");
    }
}
