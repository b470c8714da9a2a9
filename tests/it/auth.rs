//! Validators and the identity sent to the origin: each validator kind against a real HTTP
//! endpoint on loopback (the fake origin), the JWKS served by it with keys made here, the
//! 200-with-`valid: false` shape, malformed answers failing closed, and the identity header
//! never settable by a client.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::client::Proto;
use crate::common::origin::FakeOrigin;
use crate::common::{Options, TestProxy, WAIT, start_proxy};

const STREAM: &str = "/api/v2/configurations/cfg1/stream";
const SENTIMENT: &str = "/api/v2/configurations/cfg1/sentiment";
/// The fake origin's RFC 7662 introspection endpoint.
const INTROSPECT: &str = "/oauth2/introspect";

async fn with_auth(origin: &FakeOrigin, auth: &str) -> TestProxy {
    let options = Options {
        auth: Some(auth.to_owned()),
        ..Options::default()
    };
    start_proxy(origin, options).await
}

/// Opens `path` expecting a stream, and waits for its first item.
async fn opens(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) {
    let mut stream = proxy.client.stream(Proto::H2Tls, path, headers).await;
    assert_eq!(stream.status, 200, "{path} {headers:?}");
    stream.next_of("sentiment_update", WAIT).await;
}

/// Opens the stream expecting a refusal; its status and JSON body.
async fn refused(proxy: &TestProxy, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let (status, _, body) = proxy.client.get_json(Proto::H1Plain, STREAM, headers).await;
    assert_ne!(status, 200, "{headers:?}: {body}");
    (status, body)
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_set_the_identity_header_on_passthrough() {
    let origin = FakeOrigin::start_alice_and_bob().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    for proto in [Proto::H1Tls, Proto::H2Tls, Proto::H1Plain, Proto::H2Plain] {
        let (status, _, _) = proxy
            .client
            .get_json(proto, SENTIMENT, &[("x-edge-user", "alice")])
            .await;
        assert_eq!(
            status, 404,
            "{proto:?}: the forged identity never reached the origin"
        );
        // Also spelled with underscores, which CGI-style origins read as the same header.
        let (_, _, echo) = proxy
            .client
            .get_json(
                proto,
                "/echo",
                &[("X-Edge-User", "victim"), ("x_edge-user", "victim")],
            )
            .await;
        let forwarded = echo["headers"].as_object().expect("headers");
        assert!(
            !forwarded
                .keys()
                .any(|name| name.replace('_', "-") == "x-edge-user"),
            "{echo}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_carry_the_validated_user_and_only_the_validated_credential() {
    let origin = FakeOrigin::start_alice_and_bob().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    // A header token, next to an unrelated Basic credential and a forged identity.
    opens(
        &proxy,
        STREAM,
        &[
            ("x-user-id", "tok-alice"),
            ("authorization", "Basic Zm9vOmJhcg=="),
            ("x-edge-user", "bob"),
        ],
    )
    .await;
    let poll = origin.last_headers(SENTIMENT);
    assert_eq!(header(&poll, "x-edge-user").as_deref(), Some("alice"));
    assert_eq!(
        header(&poll, "x-user-id").as_deref(),
        Some("tok-alice"),
        "forwarded as it came"
    );
    assert_eq!(header(&poll, "authorization"), None, "{poll:?}");

    // A bearer token, next to a header token of someone else: only the bearer goes on.
    opens(
        &proxy,
        "/api/v2/configurations/bobs/stream",
        &[
            ("authorization", "Bearer tok-bob"),
            ("x-user-id", "tok-alice"),
        ],
    )
    .await;
    let poll = origin.last_headers("/api/v2/configurations/bobs/sentiment");
    assert_eq!(header(&poll, "x-edge-user").as_deref(), Some("bob"));
    assert_eq!(
        header(&poll, "authorization").as_deref(),
        Some("Bearer tok-bob")
    );
    assert_eq!(header(&poll, "x-user-id"), None, "{poll:?}");

    // A query token cannot ride in the poll's URL: it goes as a bearer token.
    opens(
        &proxy,
        "/api/v2/configurations/cfg2/stream?user_token=tok-alice",
        &[("cookie", "session=other")],
    )
    .await;
    let poll = origin.last_headers("/api/v2/configurations/cfg2/sentiment");
    assert_eq!(header(&poll, "x-edge-user").as_deref(), Some("alice"));
    assert_eq!(
        header(&poll, "authorization").as_deref(),
        Some("Bearer tok-alice")
    );
    assert_eq!(header(&poll, "cookie"), None);
}

/// The FastAPI dashboard's validator: session token in `X-User-ID`, 200 for both outcomes.
const DASHBOARD_AUTH: &str = r#"
[auth]
kind = "http"
validate = "/api/v2/auth/session"
send = "x-user-id"
valid = "/valid"
user_id = "/user_id"
expires_at = "/expires_at"
sources = ["x-user-id", "query:user_token"]
negative_ttl_s = 60
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_validator_that_answers_200_for_both_outcomes() {
    let origin = FakeOrigin::start_alice_and_bob().await;
    let proxy = with_auth(&origin, DASHBOARD_AUTH).await;
    opens(&proxy, STREAM, &[("x-user-id", "tok-alice")]).await;
    let call = origin.last_headers("/api/v2/auth/session");
    assert_eq!(header(&call, "x-user-id").as_deref(), Some("tok-alice"));
    assert_eq!(header(&call, "authorization"), None);
    assert_eq!(
        header(&origin.last_headers(SENTIMENT), "x-edge-user").as_deref(),
        Some("alice")
    );

    // EventSource sends the token in the query; polls carry it the way the API reads it.
    opens(
        &proxy,
        "/api/v2/configurations/cfg2/stream?user_token=tok-alice",
        &[],
    )
    .await;
    let poll = origin.last_headers("/api/v2/configurations/cfg2/sentiment");
    assert_eq!(header(&poll, "x-user-id").as_deref(), Some("tok-alice"));
    assert_eq!(header(&poll, "authorization"), None);

    let calls = origin.count("/api/v2/auth/session");
    for _ in 0..2 {
        let (status, body) = refused(&proxy, &[("x-user-id", "tok-nobody")]).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["detail"], "Session not found");
    }
    assert_eq!(
        origin.count("/api/v2/auth/session"),
        calls + 1,
        "the rejection was cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_validator_answer_fails_closed_and_is_not_cached() {
    let origin = FakeOrigin::start_alice_and_bob().await;
    let proxy = with_auth(&origin, DASHBOARD_AUTH).await;
    let path = "/api/v2/auth/session";
    let broken: [(u16, &str); 9] = [
        (200, r#"{"valid": "yes", "user_id": "alice"}"#),
        (200, r#"{"user_id": "alice"}"#),
        (200, r#"{"valid": true}"#),
        (200, r#"{"valid": true, "user_id": {"id": 1}}"#),
        (
            200,
            r#"{"valid": true, "user_id": "alice", "expires_at": "soon"}"#,
        ),
        (200, "<html>ok</html>"),
        (500, r#"{"detail": "database down"}"#),
        (404, r#"{"detail": "not found"}"#),
        (302, ""),
    ];
    for (status, body) in broken {
        origin.force(path, status, body, None);
        let before = origin.count(path);
        for _ in 0..2 {
            let (answered, reply) = refused(&proxy, &[("x-user-id", "tok-alice")]).await;
            assert_eq!(answered, 503, "{status} {body}: {reply}");
            assert_eq!(reply["error"], "validator_unavailable");
        }
        assert_eq!(
            origin.count(path),
            before + 2,
            "{status} {body}: not cached"
        );
    }
    origin.clear_forced(path);
    opens(&proxy, STREAM, &[("x-user-id", "tok-alice")]).await;

    let unreachable = DASHBOARD_AUTH.replace(
        "\"/api/v2/auth/session\"",
        "\"http://127.0.0.1:1/api/v2/auth/session\"",
    );
    let proxy = with_auth(&origin, &unreachable).await;
    let (status, body) = refused(&proxy, &[("x-user-id", "tok-alice")]).await;
    assert_eq!(status, 503, "{body}");
}

fn introspection_auth(origin: &FakeOrigin, secret: &str) -> String {
    format!(
        r#"
[auth]
kind = "introspection"
introspect = "{}{INTROSPECT}"
client_id = "edge"
client_secret = "{secret}"
sources = ["bearer"]
negative_ttl_s = 60
"#,
        origin.url
    )
}

/// The origin and a proxy validating its tokens at [`INTROSPECT`] with the right client
/// secret (from the environment).
async fn introspecting() -> (FakeOrigin, TestProxy) {
    let origin = FakeOrigin::start_alice_and_bob().await;
    let proxy = with_auth(
        &origin,
        &introspection_auth(&origin, "${TEST_CLIENT_SECRET}"),
    )
    .await;
    (origin, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_7662_introspection() {
    let (origin, proxy) = introspecting().await;
    opens(&proxy, STREAM, &[("authorization", "Bearer tok-alice")]).await;
    assert_eq!(
        header(&origin.last_headers(SENTIMENT), "x-edge-user").as_deref(),
        Some("alice"),
        "the user came from `username`"
    );
    assert_eq!(origin.count(INTROSPECT), 1);
    opens(&proxy, STREAM, &[("authorization", "Bearer tok-alice")]).await;
    assert_eq!(origin.count(INTROSPECT), 1, "the verdict was cached");

    for _ in 0..2 {
        let (status, body) = refused(&proxy, &[("authorization", "Bearer tok-nobody")]).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["detail"], "the token is not active");
    }
    assert_eq!(origin.count(INTROSPECT), 2, "the rejection was cached");

    for broken in [
        r#"{"sub": "alice"}"#,
        r#"{"active": "true", "sub": "alice"}"#,
        r#"{"active": true}"#,
        r#"{"active": true, "sub": "alice", "exp": "later"}"#,
        "not json",
    ] {
        origin.force(INTROSPECT, 200, broken, None);
        let (status, body) = refused(&proxy, &[("authorization", "Bearer tok-bob")]).await;
        assert_eq!(status, 503, "{broken}: {body}");
    }
    origin.clear_forced(INTROSPECT);

    let wrong_secret = with_auth(&origin, &introspection_auth(&origin, "wrong")).await;
    let (status, body) = refused(&wrong_secret, &[("authorization", "Bearer tok-bob")]).await;
    assert_eq!(status, 503, "the endpoint refused our client: {body}");
}

/// An ECDSA P-256 key made for the test: its PKCS#8 form to sign, its JWK to publish.
struct SigningKey {
    /// The private key, to sign tokens with.
    pkcs8: Vec<u8>,
    /// The public key as the JWKS publishes it.
    jwk: Value,
    /// The public key's raw bytes, to forge an HS256 token with.
    raw_public: Vec<u8>,
}

fn signing_key(kid: &str) -> SigningKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let raw = pair.public_key_raw().to_vec();
    assert_eq!((raw.len(), raw[0]), (65, 4), "uncompressed P-256 point");
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    });
    SigningKey {
        pkcs8: pair.serialize_der(),
        jwk,
        raw_public: raw,
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(sub: &str) -> Value {
    json!({
        "iss": "https://issuer.test/", "aud": "sse-edge", "sub": sub,
        "iat": now(), "exp": now() + 3600,
    })
}

fn sign(key: &SigningKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&key.pkcs8)).expect("sign")
}

fn jwt_auth(origin: &FakeOrigin, min_refresh_ms: u64) -> String {
    format!(
        r#"
[auth]
kind = "jwt"
jwks_url = "{}/.well-known/jwks.json"
issuer = "https://issuer.test/"
audience = ["sse-edge"]
algorithms = ["ES256"]
leeway_s = 5
jwks_min_refresh_ms = {min_refresh_ms}
sources = ["bearer", "query:user_token"]
"#,
        origin.url
    )
}

const JWKS: &str = "/.well-known/jwks.json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_verified_locally_against_the_issuers_keys() {
    let origin = FakeOrigin::start_alice_and_bob().await;
    let key = signing_key("k1");
    origin.set_jwks(json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "k1"},
        {"kty": "EC", "crv": "P-256", "use": "enc", "kid": "e1", "x": "AQ", "y": "AQ"},
        key.jwk
    ]}));
    let proxy = with_auth(&origin, &jwt_auth(&origin, 60_000)).await;

    let alice = format!("Bearer {}", sign(&key, "k1", &claims("alice")));
    opens(&proxy, STREAM, &[("authorization", &alice)]).await;
    let poll = origin.last_headers(SENTIMENT);
    assert_eq!(header(&poll, "x-edge-user").as_deref(), Some("alice"));
    assert_eq!(
        header(&poll, "authorization").as_deref(),
        Some(alice.as_str())
    );
    let bob = sign(&key, "k1", &claims("bob"));
    opens(
        &proxy,
        &format!("/api/v2/configurations/bobs/stream?user_token={bob}"),
        &[],
    )
    .await;
    assert_eq!(origin.count(JWKS), 1, "one key set fetch for both tokens");
    assert_eq!(
        origin.count("/api/v2/auth/validate"),
        0,
        "no call per token"
    );

    let other_key = signing_key("k1");
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 3600);
    let mut early = claims("alice");
    early["nbf"] = json!(now() + 3600);
    let mut no_sub = claims("alice");
    no_sub.as_object_mut().expect("object").remove("sub");
    let mut no_exp = claims("alice");
    no_exp.as_object_mut().expect("object").remove("exp");
    let header_none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims("alice").to_string());
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let confused = jsonwebtoken::encode(
        &hs,
        &claims("alice"),
        &EncodingKey::from_secret(&key.raw_public),
    )
    .expect("HS256");
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", sign(&key, "k1", &expired), "token expired"),
        (
            "not yet valid",
            sign(&key, "k1", &early),
            "token not valid yet (nbf)",
        ),
        (
            "other issuer",
            sign(
                &key,
                "k1",
                &json!({"iss": "https://evil.test/", "aud": "sse-edge", "sub": "alice", "exp": now() + 60}),
            ),
            "token from another issuer",
        ),
        (
            "other audience",
            sign(
                &key,
                "k1",
                &json!({"iss": "https://issuer.test/", "aud": "other", "sub": "alice", "exp": now() + 60}),
            ),
            "token for another audience",
        ),
        (
            "no sub",
            sign(&key, "k1", &no_sub),
            "the token has no usable user id at /sub",
        ),
        (
            "no exp",
            sign(&key, "k1", &no_exp),
            "token has no `exp` claim",
        ),
        (
            "forged",
            sign(&other_key, "k1", &claims("alice")),
            "bad token signature",
        ),
        ("alg none", format!("{header_none}.{body}."), "not a JWT"),
        (
            "HS256 with the public key",
            confused,
            "tokens signed with HS256 are not accepted",
        ),
        ("garbage", "abc.def.ghi".to_owned(), "not a JWT"),
    ];
    for (what, token, detail) in cases {
        let bearer = format!("Bearer {token}");
        let (status, body) = refused(&proxy, &[("authorization", &bearer)]).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["detail"], detail, "{what}");
    }

    // A key id the set does not have: one refresh at most per window.
    let stranger = signing_key("k2");
    let (status, body) = refused(
        &proxy,
        &[(
            "authorization",
            &format!("Bearer {}", sign(&stranger, "k2", &claims("alice"))),
        )],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        origin.count(JWKS),
        1,
        "no refresh within jwks_min_refresh_ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_on_its_first_token() {
    let origin = FakeOrigin::start_alice_and_bob().await;
    let old = signing_key("k1");
    origin.set_jwks(json!({"keys": [old.jwk]}));
    let proxy = with_auth(&origin, &jwt_auth(&origin, 1)).await;
    let token = format!("Bearer {}", sign(&old, "k1", &claims("alice")));
    opens(&proxy, STREAM, &[("authorization", &token)]).await;
    assert_eq!(origin.count(JWKS), 1);

    let new = signing_key("k2");
    origin.set_jwks(json!({"keys": [old.jwk, new.jwk]}));
    let token = format!("Bearer {}", sign(&new, "k2", &claims("bob")));
    opens(
        &proxy,
        "/api/v2/configurations/bobs/stream",
        &[("authorization", &token)],
    )
    .await;
    assert_eq!(origin.count(JWKS), 2, "refreshed for the unknown kid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_key_set_fails_closed_and_is_not_cached() {
    let origin = FakeOrigin::start_alice_and_bob().await;
    let key = signing_key("k1");
    let proxy = with_auth(&origin, &jwt_auth(&origin, 1)).await;
    let token = format!("Bearer {}", sign(&key, "k1", &claims("alice")));
    for (status, body) in [
        (404, r#"{"detail": "no key set"}"#),
        (200, "not json"),
        (200, r#"{"keys": "none"}"#),
        (200, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#),
    ] {
        origin.force(JWKS, status, body, None);
        let (answered, reply) = refused(&proxy, &[("authorization", &token)]).await;
        assert_eq!(answered, 503, "{status} {body}: {reply}");
        assert_eq!(reply["error"], "validator_unavailable");
    }
    origin.clear_forced(JWKS);
    origin.set_jwks(json!({"keys": [key.jwk]}));
    opens(&proxy, STREAM, &[("authorization", &token)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_introspection() {
    let (origin, proxy) = introspecting().await;
    let gate = origin.hold(INTROSPECT);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let client = proxy.client.clone();
            tokio::spawn(async move {
                let mut stream = client
                    .stream(
                        Proto::H2Plain,
                        STREAM,
                        &[("authorization", "Bearer tok-alice")],
                    )
                    .await;
                assert_eq!(stream.status, 200);
                stream.next_of("sentiment_update", WAIT).await;
            })
        })
        .collect();
    origin.wait_for_count(INTROSPECT, 1, WAIT).await;
    gate.release();
    for client in clients {
        client.await.expect("client");
    }
    assert_eq!(
        origin.count(INTROSPECT),
        1,
        "one introspection for eight requests"
    );
}
