//! Stream keys the origin refuses: answered from memory, at the cost of a small cache entry,
//! never a channel or a poller task.

use crate::common;

use common::client::{Proto, json_response};
use common::origin::FakeOrigin;
use common::{Options, start_proxy};

const ROUTE_POLLERS: &str = "sse_edge_pollers{route=\"/api/v2/configurations/{id}/stream\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_ids_leave_no_channel_and_are_answered_from_memory() {
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    let proxy = start_proxy(
        &origin,
        Options {
            // Far longer than the test: nothing expires while it runs, however slow the box.
            refusal_ttl_s: 3600,
            ..Options::default()
        },
    )
    .await;
    let auth = [("authorization", "Bearer tok-alice")];
    let refused = 300;
    let mut connection = proxy.client.keep_alive(Proto::H1Plain).await;
    for n in 0..refused {
        let path = format!("/api/v2/configurations/nope-{n}/stream");
        let (status, _, body) = json_response(connection.get(&path, &auth).await).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["detail"], "configuration not found");
    }
    assert_eq!(proxy.proxy.pollers(), 0, "no channel outlives its refusal");
    assert_eq!(proxy.metric(ROUTE_POLLERS).await, 0.0);
    assert_eq!(proxy.metric("sse_edge_refused_keys").await, refused as f64);

    // Asked again, over each protocol: the same answer, and the origin is not asked.
    // Either of the route's two sources may be the one whose refusal ended the stream (the
    // other's poller may not have run by then on a busy box): count both.
    let polls = || {
        origin.count("/api/v2/configurations/nope-7/sentiment")
            + origin.count("/api/v2/configurations/nope-7/refresh/status")
    };
    let before = polls();
    assert!(before >= 1);
    for proto in [Proto::H1Plain, Proto::H1Tls, Proto::H2Tls] {
        let (status, _, body) = proxy
            .client
            .get_json(proto, "/api/v2/configurations/nope-7/stream", &auth)
            .await;
        assert_eq!(status, 404);
        assert_eq!(body["detail"], "configuration not found");
    }
    assert_eq!(polls(), before);
    assert_eq!(proxy.proxy.pollers(), 0);
}
