//! Sentiment streams as the hub and resume tests read them: the origin's ticker documents,
//! the sentiment events a client got, and a one-line summary of each to compare.

use std::time::Duration;

use serde_json::{Value, json};

use super::client::{SseEvent, SseStream};

/// A configuration's tickers, each `{"symbol", "score"}`.
pub fn tickers(scores: &[(&str, f64)]) -> Value {
    Value::Array(
        scores
            .iter()
            .map(|(symbol, score)| json!({"symbol": symbol, "score": score}))
            .collect(),
    )
}

/// Reads sentiment events and resyncs until the stream is idle for a moment; returns them.
pub async fn drain_sentiment(stream: &mut SseStream) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while let Ok(event) = stream.try_next(Duration::from_millis(300)).await {
        if event.event.starts_with("sentiment_update") || event.event == "resync" {
            events.push(event);
        }
    }
    events
}

/// Each event as `SYMBOL=score`, `-SYMBOL` (removed) or its event name (a resync).
pub fn summary(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.event.as_str() {
            "sentiment_update" => format!(
                "{}={}",
                e.json()["symbol"].as_str().unwrap_or("?"),
                e.json()["score"]
            ),
            "sentiment_update_removed" => {
                format!("-{}", e.json()["symbol"].as_str().unwrap_or("?"))
            }
            other => other.to_owned(),
        })
        .collect()
}
