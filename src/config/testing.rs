//! What the config layer's unit tests share: the parts of an invalid config's error.

use super::{Config, ConfigError};

/// The line, key and message of the [`ConfigError::Invalid`] that `result` must be; panics
/// (failing the test) on anything else.
pub(super) fn invalid_parts(result: Result<Config, ConfigError>) -> (usize, String, String) {
    match result {
        Err(ConfigError::Invalid {
            line, key, message, ..
        }) => (line, key, message),
        other => panic!("expected an invalid config, got {other:?}"),
    }
}
