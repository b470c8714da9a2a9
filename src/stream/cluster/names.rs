//! The Redis keys of one stream key: a digest of route, sources, parameters and user (so a user's
//! data lives under a name no other user's key can share), in a hash tag so the keys of one
//! stream key would land on one Redis Cluster slot.

use ring::digest::{SHA256, digest};

use crate::stream::channel::StreamKey;

/// The Redis keys of one stream key.
#[derive(Debug, Clone)]
pub struct Names {
    /// The poller's lease: `SET NX PX`, holding the holder's token.
    pub lease: String,
    /// The counter that numbers leases (the fencing token's first part).
    pub fence: String,
    /// The stream of published notices (`XADD`, capped, expiring).
    pub events: String,
    /// The current state: a field per live slot.
    pub state: String,
}

impl Names {
    /// The keys of `key` under `prefix`.
    pub fn of(prefix: &str, key: &StreamKey) -> Names {
        // The sources' layout too: instances of a rolling deploy that changes a route's
        // sources never mix their incompatible states.
        let sources: Vec<String> = key
            .route
            .sources
            .iter()
            .map(|s| format!("{:?}|{}|{:?}", s.poll, s.event, s.mode))
            .collect();
        let identity =
            serde_json::json!([key.route.path.to_string(), sources, key.params, key.user]);
        let hash = digest(&SHA256, identity.to_string().as_bytes());
        let tag: String = hash.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let base = format!("{prefix}:{{{tag}}}");
        Names {
            lease: format!("{base}:lease"),
            fence: format!("{base}:fence"),
            events: format!("{base}:events"),
            state: format!("{base}:state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    #[test]
    fn users_and_parameters_get_their_own_keys() {
        let key = |params: &[&str], user: Option<&str>| {
            let mut key = StreamKey::for_tests(
                0,
                Mode::Snapshot,
                params.iter().map(|p| p.to_string()).collect(),
            );
            key.user = user.map(str::to_owned);
            Names::of("p", &key).state
        };
        let alice = key(&["a"], Some("alice"));
        assert!(
            alice.starts_with("p:{") && alice.ends_with("}:state"),
            "{alice}"
        );
        assert_eq!(alice, key(&["a"], Some("alice")));
        assert_ne!(alice, key(&["a"], Some("bob")));
        assert_ne!(alice, key(&["a"], None));
        assert_ne!(key(&["a", "b"], None), key(&["ab"], None));
    }
}
