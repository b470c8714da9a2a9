//! Polling one source of one channel.
//!
//! At most one request in flight per source; `every` between the end of a poll and the next.
//! `ETag`/`Last-Modified` are sent back as `If-None-Match`/`If-Modified-Since`, and 304 is
//! "no change". A 401/403/404/410 means the stream's resource is refused: the channel fails.
//! Anything else that is not usable data (5xx, 429, timeouts, garbage) keeps the stream
//! alive: the poller backs off exponentially with jitter (honouring `Retry-After`) and tells
//! subscribers once per outage with an outage event (`[sse] outage_event`, `upstream_error`).
//!
//! With `wait_s`, each poll asks the origin to hold it until its data changes
//! (`Prefer: wait=N`, RFC 7240). When the origin says it did (`Preference-Applied: wait`),
//! the next poll follows at once, so a change reaches clients as soon as the origin answers.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::json;

use super::channel::{Channel, FatalAnswer};
use super::cluster::holding::Holding;
use super::cluster::wire::Notice;
use super::delta::{Change, Tracker};
use crate::http::json::origin_detail;
use crate::ops::metrics::{Metrics, PollOutcome};
use crate::origin::{Fetched, Upstream};

/// Longest pause the origin may ask for with `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(900);
/// A long poll that came back unchanged faster than this was not really held: wait
/// `every` before the next one rather than hammering the origin.
const MIN_HELD: Duration = Duration::from_millis(100);

/// What every poller of a hub shares.
pub struct PollContext {
    /// The origin polled.
    pub upstream: Arc<Upstream>,
    /// Poll outcomes and latencies are counted here.
    pub metrics: Arc<Metrics>,
    /// Ceiling of the exponential backoff after poll errors (`[sse] max_backoff_ms`).
    pub max_backoff: Duration,
}

/// What one poll came to.
enum Outcome {
    /// A usable 2xx body.
    Data(Fetched),
    /// 304: unchanged since the validators we sent.
    NotModified,
    /// The origin refused the stream's resource.
    Refused(FatalAnswer),
    /// A passing failure; `retry_after` when the origin named a pause.
    Trouble {
        status: Option<StatusCode>,
        detail: String,
        retry_after: Option<Duration>,
    },
}

/// Where a poller's findings go.
pub enum Sink {
    /// Straight to the channel: one instance, or Redis unreachable.
    Local,
    /// To Redis first, under the lease, then to the channel: the cluster's poller of the key.
    Shared(Arc<Holding>),
}

impl Sink {
    /// Publishes a poll's changes; `false` when the poller must stop.
    async fn publish(&self, channel: &Channel, index: usize, changes: Vec<Change>) -> bool {
        match self {
            Sink::Local => {
                channel.publish(index, changes);
                true
            }
            Sink::Shared(holding) => holding.publish(channel, index, changes).await,
        }
    }

    /// Tells subscribers (here and, through Redis, elsewhere) that `index` is failing.
    async fn outage(&self, channel: &Channel, index: usize, data: String) {
        channel.outage(index, &data);
        if let Sink::Shared(holding) = self {
            holding.notify(&Notice::Outage { s: index, data }).await;
        }
    }

    /// `index` answers again.
    async fn recovered(&self, channel: &Channel, index: usize) {
        channel.recovered(index);
        if let Sink::Shared(holding) = self {
            holding.notify(&Notice::Recovered { s: index }).await;
        }
    }

    /// The origin refused the stream: ends it here and, through Redis, elsewhere.
    async fn refused(&self, channel: &Channel, answer: FatalAnswer) {
        if let Sink::Shared(holding) = self {
            let body = answer
                .body
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned());
            let notice = Notice::Refused {
                status: answer.status.as_u16(),
                detail: answer.detail.clone(),
                body,
            };
            holding.notify(&notice).await;
        }
        channel.fail(answer);
    }
}

/// Polls `channel`'s source `index`, diffing with `tracker` (which knows the state the
/// channel carries on from), until the supervisor aborts the task or `sink` says stop.
pub async fn run(
    hub: Arc<PollContext>,
    channel: Arc<Channel>,
    index: usize,
    mut tracker: Tracker,
    sink: Sink,
) {
    let spec = &channel.route().sources[index];
    let path = spec.poll.render(&channel.key.params);
    let mut etag: Option<HeaderValue> = None;
    let mut last_modified: Option<HeaderValue> = None;
    let mut failures: u32 = 0;
    loop {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        for (name, value) in &spec.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(identity) = channel.identity() {
            // After the configured headers, so neither statement can be overridden.
            let (name, value) = identity.credential;
            headers.insert(name, value);
            if let Ok(user) = HeaderValue::from_str(&identity.user_id) {
                headers.insert(identity.user_header, user);
            }
        }
        if let Some(tag) = &etag {
            headers.insert(header::IF_NONE_MATCH, tag.clone());
        }
        if let Some(date) = &last_modified {
            headers.insert(header::IF_MODIFIED_SINCE, date.clone());
        }
        if let Some(wait) = spec.wait {
            let prefer = HeaderValue::from_str(&format!("wait={}", wait.as_secs()));
            if let Ok(prefer) = prefer {
                headers.insert(HeaderName::from_static("prefer"), prefer);
            }
        }

        let started = tokio::time::Instant::now();
        let mut held = false;
        let outcome = match hub
            .upstream
            .fetch(&path, headers, spec.wait.unwrap_or_default())
            .await
        {
            Ok(fetched) => {
                held = spec.wait.is_some() && wait_applied(&fetched.headers);
                classify(fetched)
            }
            Err(error) => Outcome::Trouble {
                status: None,
                detail: error.to_string(),
                retry_after: None,
            },
        };
        let micros = started.elapsed().as_micros() as u64;
        let metrics: &Metrics = &hub.metrics;
        let outcome = match outcome {
            Outcome::Data(fetched) => match tracker.apply(&fetched.body) {
                Ok(changes) => {
                    etag = fetched.headers.get(header::ETAG).cloned();
                    last_modified = fetched.headers.get(header::LAST_MODIFIED).cloned();
                    let changed = !changes.is_empty();
                    let kind = if changed {
                        PollOutcome::Changed
                    } else {
                        PollOutcome::Unchanged
                    };
                    metrics.poll(kind, micros);
                    if !sink.publish(&channel, index, changes).await {
                        return;
                    }
                    held &= changed || started.elapsed() >= MIN_HELD;
                    Ok(())
                }
                Err(error) => {
                    metrics.poll(PollOutcome::Error, micros);
                    Err((Some(fetched.status), error.to_string(), None))
                }
            },
            Outcome::NotModified => {
                metrics.poll(PollOutcome::NotModified, micros);
                held &= started.elapsed() >= MIN_HELD;
                Ok(())
            }
            Outcome::Refused(answer) => {
                metrics.poll(PollOutcome::Refused, micros);
                tracing::info!(route = %channel.route().path, status = %answer.status, "origin refused the stream");
                sink.refused(&channel, answer).await;
                return;
            }
            Outcome::Trouble {
                status,
                detail,
                retry_after,
            } => {
                metrics.poll(PollOutcome::Error, micros);
                Err((status, detail, retry_after))
            }
        };
        let pause = match outcome {
            Ok(()) => {
                if failures > 0 {
                    failures = 0;
                    sink.recovered(&channel, index).await;
                }
                if held { Duration::ZERO } else { spec.every }
            }
            Err((status, detail, retry_after)) => {
                if failures == 0 {
                    tracing::warn!(route = %channel.route().path, event = %spec.event, %detail, "poll failed");
                    let data = json!({
                        "source": spec.event,
                        "status": status.map(|s| s.as_u16()),
                        "detail": detail,
                    });
                    sink.outage(&channel, index, data.to_string()).await;
                }
                failures = failures.saturating_add(1);
                backoff(spec.every, hub.max_backoff, failures, retry_after)
            }
        };
        channel.answered(index);
        tokio::time::sleep(pause).await;
    }
}

fn classify(fetched: Fetched) -> Outcome {
    let status = fetched.status;
    match status {
        StatusCode::NOT_MODIFIED => Outcome::NotModified,
        s if s.is_success() => Outcome::Data(fetched),
        StatusCode::UNAUTHORIZED
        | StatusCode::FORBIDDEN
        | StatusCode::NOT_FOUND
        | StatusCode::GONE => {
            let detail = origin_detail(&fetched.body)
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_owned());
            let is_json = serde_json::from_slice::<serde_json::Value>(&fetched.body).is_ok();
            Outcome::Refused(FatalAnswer {
                status,
                detail,
                body: is_json.then_some(fetched.body),
            })
        }
        _ => Outcome::Trouble {
            status: Some(status),
            detail: origin_detail(&fetched.body)
                .unwrap_or_else(|| format!("origin answered {status}")),
            retry_after: retry_after(&fetched.headers),
        },
    }
}

/// Whether the origin held the request as asked (`Preference-Applied: wait=...`).
fn wait_applied(headers: &HeaderMap) -> bool {
    headers
        .get_all("preference-applied")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            p.trim()
                .split('=')
                .next()
                .is_some_and(|name| name.trim().eq_ignore_ascii_case("wait"))
        })
}

/// `Retry-After` as seconds or an HTTP date, capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let pause = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(pause.min(MAX_RETRY_AFTER))
}

/// Exponential backoff from `every` up to `max`, with jitter in the upper half so many
/// proxies polling one origin spread out; never shorter than what the origin asked for.
fn backoff(every: Duration, max: Duration, failures: u32, asked: Option<Duration>) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let ceiling = every
        .saturating_mul(1 << exponent)
        .min(max)
        .max(every.min(max));
    let half = ceiling / 2;
    let jittered = half + half.mul_f64(fastrand::f64());
    jittered.max(asked.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert!(matches!(
            classify(Fetched::for_tests(200, "{}")),
            Outcome::Data(_)
        ));
        assert!(matches!(
            classify(Fetched::for_tests(304, "")),
            Outcome::NotModified
        ));
        match classify(Fetched::for_tests(
            404,
            r#"{"detail":"no such configuration"}"#,
        )) {
            Outcome::Refused(answer) => {
                assert_eq!(answer.detail, "no such configuration");
                assert!(answer.body.is_some());
            }
            _ => panic!("404 refuses"),
        }
        match classify(Fetched::for_tests(403, "<html>")) {
            Outcome::Refused(answer) => assert!(answer.body.is_none()),
            _ => panic!("403 refuses"),
        }
        for status in [500, 502, 503, 429, 400] {
            assert!(matches!(
                classify(Fetched::for_tests(status, "")),
                Outcome::Trouble { .. }
            ));
        }
    }

    #[test]
    fn preference_applied_wait_is_recognised() {
        let mut headers = HeaderMap::new();
        assert!(!wait_applied(&headers));
        headers.insert(
            "preference-applied",
            HeaderValue::from_static("return=minimal, wait=10"),
        );
        assert!(wait_applied(&headers));
        headers.insert("preference-applied", HeaderValue::from_static("waiting=1"));
        assert!(!wait_applied(&headers));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&later).expect("date"),
        );
        let pause = retry_after(&headers).expect("pause");
        assert!(pause > Duration::from_secs(50) && pause <= Duration::from_secs(60));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_the_origin() {
        let every = Duration::from_secs(1);
        let max = Duration::from_secs(30);
        for failures in 1..40 {
            let pause = backoff(every, max, failures, None);
            let ceiling = every.saturating_mul(1 << (failures - 1).min(16)).min(max);
            assert!(
                pause >= ceiling / 2 && pause <= ceiling,
                "{failures}: {pause:?}"
            );
        }
        let asked = Duration::from_secs(120);
        assert_eq!(backoff(every, max, 1, Some(asked)), asked);
    }
}
