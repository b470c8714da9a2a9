//! From what the probe observed to one verdict with its reason.
//!
//! A pure function of the timeline, so every verdict is unit-tested without a network.

use serde::Serialize;

/// What is wrong with an SSE endpoint, or that nothing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Events arrive incrementally as `text/event-stream`.
    Streaming,
    /// Nothing arrived until the response ended, or every event came in one burst at the end.
    Buffered,
    /// No response headers before the timeout.
    NoHeaders,
    /// Headers, then no body byte before the timeout.
    NoData,
    /// A 2xx without `text/event-stream`: `EventSource` rejects it.
    WrongContentType,
    /// A compressed event stream: compressors hold events back.
    Compressed,
    /// 401 or 403.
    AuthRejected,
    /// 404.
    NotFound,
    /// Any other non-2xx status.
    ErrorStatus,
    /// Frames are further apart than common idle timeouts.
    IdleRisk,
    /// The connection (DNS, TCP or TLS) failed.
    Unreachable,
    /// TLS worked but the server's certificate is not trusted (self-signed, expired, another
    /// name): `-k` probes such a development endpoint anyway.
    CertificateRejected,
}

impl Verdict {
    /// The verdict's name, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Streaming => "streaming",
            Verdict::Buffered => "buffered",
            Verdict::NoHeaders => "no-headers",
            Verdict::NoData => "no-data",
            Verdict::WrongContentType => "wrong-content-type",
            Verdict::Compressed => "compressed",
            Verdict::AuthRejected => "auth-rejected",
            Verdict::NotFound => "not-found",
            Verdict::ErrorStatus => "error-status",
            Verdict::IdleRisk => "idle-risk",
            Verdict::Unreachable => "unreachable",
            Verdict::CertificateRejected => "certificate-rejected",
        }
    }
}

/// What the probe saw, times in milliseconds since the probe started.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Why connecting failed, if it did.
    pub connect_error: Option<String>,
    /// The response status.
    pub status: Option<u16>,
    /// `content-type`, if any.
    pub content_type: Option<String>,
    /// `content-encoding`, if any.
    pub content_encoding: Option<String>,
    /// The error body's `detail`, if any.
    pub detail: Option<String>,
    /// When the response headers arrived.
    pub headers_ms: Option<f64>,
    /// When each body chunk arrived.
    pub chunk_ms: Vec<f64>,
    /// When each event was complete.
    pub event_ms: Vec<f64>,
    /// When the body ended, if it did.
    pub ended_ms: Option<f64>,
    /// When reading stopped (end, enough events, or timeout).
    pub stopped_ms: f64,
    /// Reading stopped because the wanted number of events arrived.
    pub got_wanted_events: bool,
}

/// Limits the verdict is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A silence longer than this risks an idle timeout (30 s: CloudFront's origin response
    /// timeout; ALB's idle timeout is 60 s).
    pub idle_ms: f64,
    /// Events closer together than this at the end of a response count as one burst.
    pub burst_ms: f64,
    /// The probe's overall timeout.
    pub timeout_ms: f64,
}

impl Observation {
    /// The longest silence between headers, chunks and (when the timeout stopped reading)
    /// the end of the probe.
    pub fn max_gap_ms(&self) -> Option<f64> {
        let headers = self.headers_ms?;
        let mut marks = vec![headers];
        marks.extend(&self.chunk_ms);
        if self.ended_ms.is_none() && !self.got_wanted_events {
            marks.push(self.stopped_ms);
        }
        marks.windows(2).map(|w| w[1] - w[0]).reduce(f64::max)
    }
}

/// The verdict and a one-line reason.
pub fn judge(o: &Observation, t: &Thresholds) -> (Verdict, String) {
    let secs = |ms: f64| {
        if ms < 1000.0 {
            format!("{ms:.0} ms")
        } else {
            format!("{:.1} s", ms / 1000.0)
        }
    };
    if let Some(error) = &o.connect_error {
        if error.starts_with(super::connect::UNTRUSTED) {
            return (
                Verdict::CertificateRejected,
                format!(
                    "{error}; for a development endpoint with a self-signed certificate, \
                     run again with -k (--insecure)"
                ),
            );
        }
        return (Verdict::Unreachable, format!("cannot connect: {error}"));
    }
    let (Some(status), Some(headers_ms)) = (o.status, o.headers_ms) else {
        return (
            Verdict::NoHeaders,
            format!(
                "no response headers within {}: the origin buffers the whole response (a Lambda \
                 in BUFFERED mode, a buffering proxy) or never answers",
                secs(t.timeout_ms)
            ),
        );
    };
    let detail = o
        .detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    match status {
        401 | 403 => return (Verdict::AuthRejected, format!("status {status}{detail}")),
        404 => return (Verdict::NotFound, format!("status 404{detail}")),
        200..=299 => {}
        _ => return (Verdict::ErrorStatus, format!("status {status}{detail}")),
    }
    let content_type = o.content_type.as_deref().unwrap_or("none");
    let is_event_stream = content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"));
    if !is_event_stream {
        return (
            Verdict::WrongContentType,
            format!(
                "content-type is {content_type}, not text/event-stream: EventSource rejects it"
            ),
        );
    }
    if let Some(encoding) = o
        .content_encoding
        .as_deref()
        .filter(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return (
            Verdict::Compressed,
            format!(
                "the event stream is sent with content-encoding {encoding}: a compressor holds events back until its buffer fills"
            ),
        );
    }
    let Some(&first_chunk) = o.chunk_ms.first() else {
        return match o.ended_ms {
            Some(end) => (
                Verdict::Buffered,
                format!(
                    "the response ended after {} without a single byte",
                    secs(end)
                ),
            ),
            None => (
                Verdict::NoData,
                format!(
                    "headers after {}, then no byte within {}: something buffers the body",
                    secs(headers_ms),
                    secs(t.timeout_ms)
                ),
            ),
        };
    };
    if let Some(end) = o.ended_ms {
        let burst_at_end = end - first_chunk <= t.burst_ms;
        let events_in_one_burst = match (o.event_ms.first(), o.event_ms.last()) {
            (Some(first), Some(last)) => last - first <= t.burst_ms && end - first <= t.burst_ms,
            _ => false,
        };
        if burst_at_end || (events_in_one_burst && o.event_ms.len() > 1) {
            return (
                Verdict::Buffered,
                format!(
                    "no byte until the response ended after {}, then {} event(s) at once",
                    secs(end),
                    o.event_ms.len()
                ),
            );
        }
    }
    if let Some(gap) = o.max_gap_ms().filter(|&g| g > t.idle_ms) {
        return (
            Verdict::IdleRisk,
            format!(
                "{} without a byte: longer than the {} idle timeout of load balancers and CDNs; send heartbeats",
                secs(gap),
                secs(t.idle_ms)
            ),
        );
    }
    let closed = if o.ended_ms.is_some() {
        "; the server then closed the stream (EventSource will reconnect)"
    } else {
        ""
    };
    let reason = match o.event_ms.as_slice() {
        [] => format!(
            "first frame after {}, no event yet, the stream is open",
            secs(first_chunk)
        ),
        [only] => format!(
            "first frame after {}, 1 event after {}{closed}",
            secs(first_chunk),
            secs(*only)
        ),
        [first, .., last] => format!(
            "first frame after {}, {} events from {} to {}{closed}",
            secs(first_chunk),
            o.event_ms.len(),
            secs(*first),
            secs(*last)
        ),
    };
    (Verdict::Streaming, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        idle_ms: 30_000.0,
        burst_ms: 100.0,
        timeout_ms: 10_000.0,
    };

    fn stream(chunks: &[f64], events: &[f64], ended: Option<f64>) -> Observation {
        Observation {
            status: Some(200),
            content_type: Some("text/event-stream; charset=utf-8".into()),
            headers_ms: Some(5.0),
            chunk_ms: chunks.to_vec(),
            event_ms: events.to_vec(),
            ended_ms: ended,
            stopped_ms: ended.unwrap_or(10_000.0),
            got_wanted_events: false,
            ..Observation::default()
        }
    }

    fn verdict(o: &Observation) -> Verdict {
        judge(o, &T).0
    }

    #[test]
    fn incremental_events_are_streaming() {
        let mut o = stream(&[6.0, 1000.0, 2000.0], &[6.0, 1000.0, 2000.0], None);
        o.got_wanted_events = true;
        o.stopped_ms = 2000.0;
        assert_eq!(verdict(&o), Verdict::Streaming);
        assert_eq!(
            verdict(&stream(&[6.0, 1000.0], &[1000.0], Some(1500.0))),
            Verdict::Streaming
        );
    }

    #[test]
    fn everything_at_the_end_is_buffered() {
        assert_eq!(
            verdict(&stream(&[9000.0], &[9000.0, 9000.0, 9000.0], Some(9001.0))),
            Verdict::Buffered
        );
        assert_eq!(verdict(&stream(&[], &[], Some(9001.0))), Verdict::Buffered);
        let mut late_headers = stream(&[9000.0, 9010.0], &[9000.0, 9010.0], Some(9011.0));
        late_headers.headers_ms = Some(9000.0);
        assert_eq!(verdict(&late_headers), Verdict::Buffered);
    }

    #[test]
    fn missing_headers_or_bytes() {
        let mut o = Observation {
            stopped_ms: 10_000.0,
            ..Observation::default()
        };
        assert_eq!(verdict(&o), Verdict::NoHeaders);
        o.connect_error = Some("refused".into());
        assert_eq!(verdict(&o), Verdict::Unreachable);
        assert_eq!(verdict(&stream(&[], &[], None)), Verdict::NoData);
    }

    #[test]
    fn statuses_types_and_encodings() {
        let mut o = stream(&[6.0], &[6.0], None);
        o.status = Some(401);
        o.detail = Some("token expired".into());
        let (v, reason) = judge(&o, &T);
        assert_eq!(v, Verdict::AuthRejected);
        assert!(reason.contains("token expired"));
        o.status = Some(404);
        assert_eq!(verdict(&o), Verdict::NotFound);
        o.status = Some(502);
        assert_eq!(verdict(&o), Verdict::ErrorStatus);
        o.status = Some(200);
        o.content_type = Some("application/octet-stream".into());
        assert_eq!(verdict(&o), Verdict::WrongContentType);
        o.content_type = Some("text/event-stream".into());
        o.content_encoding = Some("gzip".into());
        assert_eq!(verdict(&o), Verdict::Compressed);
    }

    #[test]
    fn long_silences_are_an_idle_risk() {
        let quiet = Thresholds {
            idle_ms: 1000.0,
            ..T
        };
        let o = stream(&[6.0], &[6.0], None);
        assert_eq!(judge(&o, &quiet).0, Verdict::IdleRisk);
        let mut busy = stream(&[6.0, 500.0, 1000.0], &[6.0, 500.0, 1000.0], None);
        busy.got_wanted_events = true;
        busy.stopped_ms = 1000.0;
        assert_eq!(judge(&busy, &quiet).0, Verdict::Streaming);
    }
}
