//! The resume window: a stream key's state and history outlive its poller, so a client that
//! reconnects with `Last-Event-ID` after the poller stopped gets exactly what it missed.

use crate::common;

use common::client::{Proto, SseStream};
use common::origin::FakeOrigin;
use common::sentiment::{drain_sentiment, summary, tickers};
use common::{Options, TestProxy, WAIT, eventually, start_proxy};

const PATH: &str = "/api/v2/configurations/cfg1/stream";
const ALICE: (&str, &str) = ("authorization", "Bearer tok-alice");

/// A sole client reads the state and leaves; its poller stops; the origin changes.
async fn leave_and_change(origin: &FakeOrigin, proxy: &TestProxy) -> String {
    let mut client = proxy.client.stream(Proto::H1Tls, PATH, &[ALICE]).await;
    assert_eq!(
        summary(&drain_sentiment(&mut client).await),
        ["AAPL=0.1", "MSFT=0.2"]
    );
    let last_id = client.last_event_id().to_owned();
    drop(client);
    eventually("the poller to stop", WAIT, || proxy.proxy.pollers() == 0).await;
    origin.set_configuration("cfg1", "alice", tickers(&[("AAPL", 0.3), ("TSLA", 0.9)]));
    last_id
}

/// The client coming back over HTTP/2 with the `last_id` it saw.
async fn resume(proxy: &TestProxy, last_id: &str) -> SseStream {
    proxy
        .client
        .stream(Proto::H2Tls, PATH, &[ALICE, ("last-event-id", last_id)])
        .await
}

async fn origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    origin.set_configuration("cfg1", "alice", tickers(&[("AAPL", 0.1), ("MSFT", 0.2)]));
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_client_reconnecting_after_its_poller_stopped_gets_exactly_what_it_missed() {
    let origin = origin().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let last_id = leave_and_change(&origin, &proxy).await;
    assert_eq!(proxy.proxy.pollers(), 0);

    let mut resumed = resume(&proxy, &last_id).await;
    assert_eq!(
        summary(&drain_sentiment(&mut resumed).await),
        ["AAPL=0.3", "TSLA=0.9", "-MSFT"],
        "exactly the difference, no resync"
    );
    assert_eq!(proxy.metric("sse_edge_resumes_total").await, 1.0);
    assert_eq!(
        proxy
            .metric("sse_edge_resyncs_total{reason=\"unknown_id\"}")
            .await,
        0.0
    );
    assert_eq!(
        proxy.metric("sse_edge_resume_keys").await,
        0.0,
        "taken back"
    );

    // Ids carried on from the kept state: a new client's state ends on the same id.
    let mut fresh = proxy.client.stream(Proto::H1Plain, PATH, &[ALICE]).await;
    assert_eq!(
        summary(&drain_sentiment(&mut fresh).await),
        ["AAPL=0.3", "TSLA=0.9"]
    );
    assert_eq!(fresh.last_event_id(), resumed.last_event_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_over_the_memory_budget_is_dropped_and_the_reconnect_resyncs() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            resume_memory_bytes: 64,
            ..Options::default()
        },
    )
    .await;
    let last_id = leave_and_change(&origin, &proxy).await;
    assert_eq!(proxy.metric("sse_edge_resume_keys").await, 0.0);
    assert!(proxy.metric("sse_edge_resume_bytes").await <= 64.0);

    let mut resumed = resume(&proxy, &last_id).await;
    assert_eq!(
        summary(&drain_sentiment(&mut resumed).await),
        ["resync", "AAPL=0.3", "TSLA=0.9"]
    );
    assert_eq!(
        proxy
            .metric("sse_edge_resyncs_total{reason=\"unknown_id\"}")
            .await,
        1.0
    );
}
