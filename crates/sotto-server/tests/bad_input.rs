//! Malformed requests get a 4xx with a stable code: never a 500, never a
//! panic. Fixed cases first, then arbitrary bodies and channel messages.

mod common;

use std::time::Duration;

use common::{Db, TestServer, raw_http};
use proptest::prelude::*;
use sotto_client::Channel;
use sotto_proto::channel::ServerMessage;
use sotto_proto::{ErrorCode, ErrorResponse};

async fn expect_error(response: reqwest::Response, status: u16, code: ErrorCode) {
    assert_eq!(response.status().as_u16(), status);
    let body: ErrorResponse = response.json().await.expect("an error body");
    assert_eq!(body.error.code, code);
    assert!(!body.error.message.is_empty());
}

#[tokio::test]
async fn fixed_bad_requests() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (alice, _) = srv.user("alice").await;
    let token = alice.token().unwrap().to_string();
    let http = raw_http();
    let url = |p: &str| format!("{}{}", srv.url, p);

    // Malformed JSON, wrong shape, wrong content type, oversized body.
    let r = http
        .post(url("/api/register"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, ErrorCode::MalformedRequest).await;
    let r = http
        .post(url("/api/register"))
        .json(&serde_json::json!({"username": 5}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, ErrorCode::MalformedRequest).await;
    let r = http
        .post(url("/api/register"))
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(r, 415, ErrorCode::UnsupportedMediaType).await;
    // A JSON array would fill a struct by position: bodies are objects.
    let r = http
        .post(url("/api/rooms"))
        .bearer_auth(&token)
        .json(&serde_json::json!(["by position", "open", null]))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, ErrorCode::MalformedRequest).await;
    assert!(
        alice.hallway().await.unwrap().is_empty(),
        "an array body created a room"
    );
    let big = format!(
        "{{\"title\":\"{}\",\"kind\":\"open\"}}",
        "a".repeat(70 * 1024)
    );
    let r = http
        .post(url("/api/rooms"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    expect_error(r, 413, ErrorCode::PayloadTooLarge).await;

    // Invalid fields.
    let reg = |username: &str, key: &str| serde_json::json!({"invite_code": "x", "username": username, "display_name": "D", "device_public_key": key, "signature": "AA", "device_link": "AA"});
    let key = sotto_client::Profile::open_or_create(&srv.dir.path().join("k"))
        .unwrap()
        .public_key()
        .to_base64();
    for name in ["ab", "Alice", "a-b", "waytoolongusername_123"] {
        let r = http
            .post(url("/api/register"))
            .json(&reg(name, &key))
            .send()
            .await
            .unwrap();
        expect_error(r, 400, ErrorCode::InvalidUsername).await;
    }
    let r = http
        .post(url("/api/register"))
        .json(&reg("okname", "AAAA"))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, ErrorCode::InvalidPublicKey).await;
    let r = http
        .post(url("/api/register"))
        .json(&reg("okname", &key))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, ErrorCode::BadSignature).await;
    let r = http
        .post(url("/api/rooms"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"title": "", "kind": "open"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, ErrorCode::InvalidRoom).await;
    let r = http
        .post(url("/api/rooms"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"title": "t", "kind": "secret"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, ErrorCode::MalformedRequest).await;

    // Requests without a body: (method, path, with a session token, status, code).
    let zero = "00000000000000000000000000000000";
    let cases: &[(&str, String, Option<&str>, u16, ErrorCode)] = &[
        (
            "GET",
            "/api/me".into(),
            None,
            401,
            ErrorCode::Unauthenticated,
        ),
        (
            "GET",
            "/api/me".into(),
            Some("nonsense"),
            401,
            ErrorCode::Unauthenticated,
        ),
        (
            "POST",
            format!("/api/rooms/{zero}/join"),
            Some(&token),
            404,
            ErrorCode::RoomNotFound,
        ),
        (
            "POST",
            "/api/rooms/not-an-id/join".into(),
            Some(&token),
            404,
            ErrorCode::RoomNotFound,
        ),
        (
            "POST",
            format!("/api/rooms/{zero}/dance"),
            Some(&token),
            404,
            ErrorCode::NotFound,
        ),
        (
            "PUT",
            "/api/users/nobody_here/follow".into(),
            Some(&token),
            404,
            ErrorCode::UserNotFound,
        ),
        (
            "PUT",
            "/api/users/alice/follow".into(),
            Some(&token),
            400,
            ErrorCode::CannotFollowSelf,
        ),
        (
            "GET",
            "/api/no/such/route".into(),
            None,
            404,
            ErrorCode::NotFound,
        ),
        (
            "GET",
            "/no/such/file.js".into(),
            None,
            404,
            ErrorCode::NotFound,
        ),
        (
            "DELETE",
            "/healthz".into(),
            None,
            405,
            ErrorCode::MethodNotAllowed,
        ),
        (
            "GET",
            "/api/ws".into(),
            None,
            400,
            ErrorCode::MalformedRequest,
        ),
    ];
    for (method, path, token, status, code) in cases {
        let mut req = http.request(method.parse().unwrap(), url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        expect_error(req.send().await.unwrap(), *status, *code).await;
    }
    let r = http.get(url("/invite/not-a-code")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // A path outside /api/ that names no file is a page of the web client
    // (it routes by path), served with its policy; without the client built
    // in, it is a plain 404.
    let r = http.get(url("/no/such/route")).send().await.unwrap();
    if sotto_server::http::ui::embedded() {
        assert_eq!(r.status(), 200);
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(r.text().await.unwrap().contains("<div id=\"app\">"));
    } else {
        assert_eq!(r.status(), 404);
    }

    srv.stop().await;
}

/// Paths that take a body, as (method, path, authenticated).
const BODY_ROUTES: &[(&str, &str, bool)] = &[
    ("POST", "/api/register", false),
    ("POST", "/api/auth/challenge", false),
    ("POST", "/api/auth/login", false),
    ("PATCH", "/api/me", true),
    ("POST", "/api/me/devices", true),
    ("POST", "/api/invites", true),
    ("POST", "/api/rooms", true),
    ("POST", "/api/rooms/ROOM/access", true),
    ("POST", "/api/rooms/ROOM/raise-hand", true),
    ("POST", "/api/rooms/ROOM/members/USER/mute", true),
];

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("open"),
            Just("closed"),
            Just("alice"),
            Just("AAAA"),
            Just("")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("username".to_string()),
                    Just("title".to_string()),
                    Just("kind".to_string()),
                    Just("invite_code".to_string()),
                    Just("device_public_key".to_string()),
                    Just("signature".to_string()),
                    Just("uses".to_string()),
                    Just("display_name".to_string()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>),
    Json(serde_json::Value),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Body::Bytes),
        json_value().prop_map(Body::Json),
    ]
}

#[test]
fn arbitrary_bodies_never_500() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (srv, token, room, user) = rt.block_on(async {
        let srv = TestServer::start(Db::Sqlite).await;
        let (alice, _) = srv
            .user_with_invite("alice", &srv.bootstrap_code.clone().unwrap())
            .await;
        let room = alice
            .create_room("Fuzz", sotto_proto::room::RoomKind::Open, None)
            .await
            .unwrap();
        let user = alice.me().await.unwrap().id;
        (srv, alice.token().unwrap().to_string(), room.id, user)
    });
    let http = raw_http();
    let sent = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(400));
    runner
        .run(
            &(0..BODY_ROUTES.len(), body(), any::<bool>()),
            |(route, body, as_json)| {
                let (method, path, authed) = BODY_ROUTES[route];
                let path = path.replace("ROOM", &room.0).replace("USER", &user.0);
                let (status, text) = rt.block_on(async {
                    let mut req =
                        http.request(method.parse().unwrap(), format!("{}{}", srv.url, path));
                    if authed {
                        req = req.bearer_auth(&token);
                    }
                    if as_json {
                        req = req.header("content-type", "application/json");
                    }
                    let bytes = match &body {
                        Body::Bytes(b) => b.clone(),
                        Body::Json(v) => serde_json::to_vec(v).unwrap(),
                    };
                    let r = req.body(bytes).send().await.unwrap();
                    (r.status().as_u16(), r.text().await.unwrap())
                });
                sent.set(sent.get() + 1);
                prop_assert!(status < 500, "{method} {path} {body:?} -> {status} {text}");
                if status >= 400 {
                    let parsed: Result<ErrorResponse, _> = serde_json::from_str(&text);
                    prop_assert!(
                        parsed.is_ok(),
                        "{method} {path} -> {status} without an error body: {text}"
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(sent.get() >= 400, "only {} requests were sent", sent.get());
    // The server is still healthy.
    rt.block_on(async {
        let r = http
            .get(format!("{}/healthz", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        srv.stop().await;
    });
}

/// A message over the protocol's 64 KiB limit (e.g. a key distributor's
/// roster of 2,000 listeners) is refused with `payload_too_large`; the
/// channel stays open. It used to be a read error that closed the channel,
/// ending the distributor's session and the room's audio.
#[tokio::test]
async fn an_oversized_channel_message_is_refused_and_the_channel_stays_open() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (alice, _) = srv.user("alice").await;
    let mut channel = Channel::connect(&alice).await.unwrap();
    let big = format!(
        "{{\"v\":1,\"msg\":{{\"type\":\"ping\",\"nonce\":1,\"pad\":\"{}\"}}}}",
        "a".repeat(sotto_proto::channel::MAX_MESSAGE_BYTES + 20_000)
    );
    channel.send_raw(big).await.unwrap();
    match channel.next(Duration::from_secs(5)).await {
        Ok(ServerMessage::Error { error }) => assert_eq!(error.code, ErrorCode::PayloadTooLarge),
        other => panic!("expected payload_too_large, got {other:?}"),
    }
    channel
        .send(sotto_proto::channel::ClientMessage::Ping { nonce: 9 })
        .await
        .unwrap();
    assert_eq!(
        channel.next(Duration::from_secs(5)).await.unwrap(),
        ServerMessage::Pong { nonce: 9 }
    );
    channel.close().await;
    srv.stop().await;
}

#[test]
fn arbitrary_channel_messages_are_refused_and_the_channel_stays_open() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (srv, client) = rt.block_on(async {
        let srv = TestServer::start(Db::Sqlite).await;
        let (alice, _) = srv.user("alice").await;
        (srv, alice)
    });
    let channel = std::cell::RefCell::new(rt.block_on(Channel::connect(&client)).unwrap());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    let strategy = prop_oneof![
        ".{0,200}",
        json_value().prop_map(|v| v.to_string()),
        json_value().prop_map(|v| format!("{{\"v\":1,\"msg\":{v}}}")),
        "[a-z_]{0,12}".prop_map(|t| format!("{{\"v\":1,\"msg\":{{\"type\":\"{t}\"}}}}")),
    ];
    runner
        .run(&strategy, |text| {
            let mut channel = channel.borrow_mut();
            let reply = rt.block_on(async {
                channel.send_raw(text.clone()).await.unwrap();
                channel.next(Duration::from_secs(5)).await
            });
            match reply {
                Ok(ServerMessage::Error { error }) => {
                    prop_assert!(error.code.http_status() < 500, "{text:?} -> {error:?}");
                }
                // Valid by chance: a pong, or a room state for a real subscription.
                Ok(ServerMessage::Pong { .. }) => {}
                other => prop_assert!(false, "{text:?} -> {other:?}"),
            }
            Ok(())
        })
        .unwrap();
    let mut channel = channel.into_inner();
    rt.block_on(async {
        channel
            .send(sotto_proto::channel::ClientMessage::Ping { nonce: 7 })
            .await
            .unwrap();
        assert_eq!(
            channel.next(Duration::from_secs(5)).await.unwrap(),
            ServerMessage::Pong { nonce: 7 }
        );
        channel.close().await;
        srv.stop().await;
    });
}

#[tokio::test]
async fn channel_needs_hello_with_a_valid_token() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let srv = TestServer::start(Db::Sqlite).await;
    let ws_url = format!("{}/api/ws", srv.url.replacen("http://", "ws://", 1));
    for first in [
        r#"{"v":1,"msg":{"type":"ping","nonce":1}}"#.to_string(),
        r#"{"v":1,"msg":{"type":"hello","token":"bogus"}}"#.to_string(),
        r#"{"v":9,"msg":{"type":"hello","token":"x"}}"#.to_string(),
        "garbage".to_string(),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        ws.send(Message::text(first.clone())).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        let msg = sotto_proto::channel::parse_server_message(reply.to_text().unwrap()).unwrap();
        let ServerMessage::Error { error } = msg else {
            panic!("{first}: {msg:?}")
        };
        assert!(error.code.http_status() < 500);
        // Then the server closes the channel.
        match ws.next().await {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
            Some(Ok(other)) => panic!("{first}: unexpected {other:?}"),
        }
    }
    // Subscribing to a room you are not in is refused.
    let (alice, _) = srv.user("alice").await;
    let (bob, _) = srv.user("bob").await;
    let room = alice
        .create_room("Private", sotto_proto::room::RoomKind::Open, None)
        .await
        .unwrap();
    let mut ch = Channel::connect(&bob).await.unwrap();
    ch.subscribe(&room.id).await.unwrap();
    match ch.next(Duration::from_secs(5)).await.unwrap() {
        ServerMessage::Error { error } => assert_eq!(error.code, ErrorCode::NotInRoom),
        other => panic!("{other:?}"),
    }
    ch.close().await;
    srv.stop().await;
}

/// What a refused body gets is said plainly, with the field's name, and
/// never in serde's or axum's words ("invalid type: map, expected …",
/// "Failed to deserialize the JSON body …").
#[tokio::test]
async fn refused_bodies_are_explained_without_serde_internals() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (alice, _) = srv.user("alice").await;
    let token = alice.token().unwrap().to_string();
    let http = raw_http();
    let cases = [
        (
            r#"{"kind":"open"}"#,
            ErrorCode::MalformedRequest,
            "field `title` is missing",
        ),
        (
            r#"{"title":"t","kind":"secret"}"#,
            ErrorCode::MalformedRequest,
            "`kind` must be one of open, social, closed",
        ),
        (
            r#"{"title":{"a":1},"kind":"open"}"#,
            ErrorCode::MalformedRequest,
            "`title` must be a string",
        ),
        (
            r#"{"title":"t","kind":"open","colour":"red"}"#,
            ErrorCode::MalformedRequest,
            "field `colour` is not part of this request; this request takes title, kind, description",
        ),
        (
            r#"{"title":"t","#,
            ErrorCode::MalformedRequest,
            "the body is not valid JSON: it ends too early",
        ),
        (
            "[]",
            ErrorCode::MalformedRequest,
            "the body must be a JSON object",
        ),
    ];
    for (body, code, message) in cases {
        let r = http
            .post(format!("{}/api/rooms", srv.url))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let err: ErrorResponse = r.json().await.unwrap();
        assert_eq!(
            (err.error.code, err.error.message.as_str()),
            (code, message)
        );
    }
    let r = http
        .post(format!("{}/api/invites", srv.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"uses": -1, "expires_in_secs": 60}))
        .send()
        .await
        .unwrap();
    let err: ErrorResponse = r.json().await.unwrap();
    assert_eq!(
        err.error.message,
        "`uses` must be a whole number from 0 to 4294967295"
    );
    // Not a WebSocket request on the channel route.
    let r = http
        .get(format!("{}/api/ws", srv.url))
        .send()
        .await
        .unwrap();
    let err: ErrorResponse = r.json().await.unwrap();
    assert!(
        err.error.message.contains("WebSocket"),
        "{}",
        err.error.message
    );
    srv.stop().await;
}

/// The document says an optional body may be JSON `null`; the server takes
/// `null` as no body (it used to refuse it as not an object).
#[tokio::test]
async fn a_null_body_is_no_body() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (alice, _) = srv.user("alice").await;
    srv.user("bob").await;
    let r = raw_http()
        .put(format!("{}/api/users/bob/follow", srv.url))
        .bearer_auth(alice.token().unwrap())
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(alice.following("alice").await.unwrap().len(), 1);
    srv.stop().await;
}

/// A bio is one line: the document's pattern refuses control characters,
/// and so does the server (it used to take any number of trailing line
/// feeds, which the document could not say).
#[tokio::test]
async fn a_bio_has_no_control_characters() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (alice, _) = srv.user("alice").await;
    for bio in ["two\nlines", "trailing\n", "tab\there"] {
        let r = raw_http()
            .patch(format!("{}/api/me", srv.url))
            .bearer_auth(alice.token().unwrap())
            .json(&serde_json::json!({ "bio": bio }))
            .send()
            .await
            .unwrap();
        expect_error(r, 400, ErrorCode::InvalidProfile).await;
    }
    srv.stop().await;
}

/// schemathesis: `{"uses": 273, "expires_in_secs": 29058.0}` is valid by the
/// document (JSON Schema counts 29058.0 as an integer) and was refused.
#[tokio::test]
async fn whole_numbers_written_with_a_fraction_are_integers() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (alice, _) = srv
        .user_with_invite("alice", &srv.bootstrap_code.clone().unwrap())
        .await;
    let r = raw_http()
        .post(format!("{}/api/invites", srv.url))
        .bearer_auth(alice.token().unwrap())
        .header("content-type", "application/json")
        .body(r#"{"uses": 273, "expires_in_secs": 29058.0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let invite: sotto_proto::api::InviteCreated = r.json().await.unwrap();
    assert_eq!(invite.uses, 273);
    srv.stop().await;
}

/// A 429 is what the document says: the `rate_limited` code and a
/// `Retry-After` header of at least one second, which the document marks
/// required.
#[tokio::test]
async fn rate_limited_answers_match_the_document() {
    let srv = TestServer::start_with(Db::Sqlite, |cfg| cfg.auth_per_minute = 2).await;
    let doc: serde_json::Value = serde_json::from_str(&sotto_server::http::openapi_json()).unwrap();
    let documented = &doc["paths"]["/api/auth/challenge"]["post"]["responses"]["429"];
    assert_eq!(documented["headers"]["Retry-After"]["required"], true);
    let key = sotto_client::Profile::open_or_create(&srv.dir.path().join("k"))
        .unwrap()
        .public_key()
        .to_base64();
    let mut limited = None;
    for _ in 0..20 {
        let r = raw_http()
            .post(format!("{}/api/auth/challenge", srv.url))
            .json(&serde_json::json!({ "device_public_key": key }))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("no 429 after 20 challenges at 2 a minute");
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs >= 1);
    expect_error(r, 429, ErrorCode::RateLimited).await;
    srv.stop().await;
}

/// The channel's handshake needs a Sec-WebSocket-Key of 16 bytes in base64,
/// as the document says (axum alone took any value).
#[tokio::test]
async fn the_channel_handshake_needs_a_well_formed_key() {
    let srv = TestServer::start(Db::Sqlite).await;
    for key in ["x", "AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAA!A=="] {
        let r = raw_http()
            .get(format!("{}/api/ws", srv.url))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", key)
            .send()
            .await
            .unwrap();
        expect_error(r, 400, ErrorCode::MalformedRequest).await;
    }
    // And a client's own handshake still opens it.
    let (alice, _) = srv.user("alice").await;
    Channel::connect(&alice).await.unwrap().close().await;
    srv.stop().await;
}
