//! Access statements over the API (follows, allows for closed rooms, bans):
//! the server keeps a statement only if this session's device signed it and
//! it says what the request does; anything else is `invalid_access_statement`
//! and changes nothing. What it keeps is what a room's key distributor gets
//! with a join request.

mod common;

use common::{Db, TestServer, raw_http};
use ed25519_dalek::SigningKey;
use sotto_proto::access::{AccessStatement, AccessVerb, sign_access};
use sotto_proto::channel::decode_payload;
use sotto_proto::keys::encode_b64;
use sotto_proto::room::{RoomKind, RoomView};
use sotto_proto::{ErrorCode, ErrorResponse};

async fn expect_invalid(r: reqwest::Response) {
    assert_eq!(r.status().as_u16(), 400);
    let body: ErrorResponse = r.json().await.unwrap();
    assert_eq!(body.error.code, ErrorCode::InvalidAccessStatement);
}

async fn access_statements(db: Db) {
    let srv = TestServer::start(db).await;
    let (alice, alice_p) = srv.user("alice").await;
    let (bob, _) = srv.user("bob").await;
    let (_carol, _) = srv.user("carol").await;
    let alice_key = SigningKey::from_bytes(&alice_p.device_seed());
    let other_key = SigningKey::from_bytes(&[7; 32]);
    let bob_id = bob.me().await.unwrap().id;
    let carol_id = alice.profile("carol").await.unwrap().id;
    let http = raw_http();
    let url = |p: &str| format!("{}{}", srv.url, p);
    let token = alice.token().unwrap().to_string();
    let send = |method: reqwest::Method, path: String, statement: String| {
        http.request(method, url(&path))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "statement": statement }))
            .send()
    };

    // Follows: another key, another followee, another verb, junk.
    for bad in [
        encode_b64(&sign_access(&other_key, AccessVerb::Follow, "", &bob_id, 1)),
        encode_b64(&sign_access(
            &alice_key,
            AccessVerb::Follow,
            "",
            &carol_id,
            1,
        )),
        encode_b64(&sign_access(&alice_key, AccessVerb::Allow, "r", &bob_id, 1)),
        "not base64!".into(),
        encode_b64(b"SAS1 nothing"),
    ] {
        expect_invalid(
            send(reqwest::Method::PUT, "/api/users/bob/follow".into(), bad)
                .await
                .unwrap(),
        )
        .await;
    }
    assert!(
        alice.following("alice").await.unwrap().is_empty(),
        "a refused follow was stored"
    );
    // A body that is not JSON is refused too, not ignored.
    let r = http
        .put(url("/api/users/bob/follow"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // The signed follow (the client signs it).
    alice.follow("bob").await.unwrap();

    // A social room of alice's: bob's join request comes with alice's
    // signed follow; carol (followed by nobody) gets nothing.
    let social = alice
        .create_room("Social", RoomKind::Social, None)
        .await
        .unwrap()
        .id;
    let grants = srv.store().access_grants(&social, &bob_id).await.unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].signer, alice.me().await.unwrap().id);
    let st = AccessStatement::parse(&decode_payload(&grants[0].statement).unwrap()).unwrap();
    assert_eq!(
        (st.verb, st.target.clone()),
        (AccessVerb::Follow, bob_id.clone())
    );
    assert!(
        srv.store()
            .access_grants(&social, &carol_id)
            .await
            .unwrap()
            .is_empty()
    );

    // Allows for a closed room: for another room or user, or not signed by
    // this device, are refused; the signed one is kept.
    let closed = alice
        .create_room("Closed", RoomKind::Closed, None)
        .await
        .unwrap()
        .id;
    let access = format!("/api/rooms/{}/access", closed.as_str());
    for bad in [
        sign_access(&alice_key, AccessVerb::Allow, "another-room", &carol_id, 1),
        sign_access(&alice_key, AccessVerb::Allow, closed.as_str(), &bob_id, 1),
        sign_access(&other_key, AccessVerb::Allow, closed.as_str(), &carol_id, 1),
        sign_access(&alice_key, AccessVerb::Ban, closed.as_str(), &carol_id, 1),
    ] {
        let r = http
            .post(url(&access))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "username": "carol", "statement": encode_b64(&bad) }))
            .send()
            .await
            .unwrap();
        expect_invalid(r).await;
    }
    assert!(
        srv.store()
            .access_grants(&closed, &carol_id)
            .await
            .unwrap()
            .is_empty()
    );
    alice.grant_access(&closed, "carol").await.unwrap();
    let grants = srv.store().access_grants(&closed, &carol_id).await.unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");

    // Bans: a statement about someone else, or on another action, is
    // refused and nobody is banned or moved.
    bob.join(&social).await.unwrap();
    let bob_path = |action: &str| {
        format!(
            "/api/rooms/{}/members/{}/{action}",
            social.as_str(),
            bob_id.as_str()
        )
    };
    let wrong_user = encode_b64(&sign_access(
        &alice_key,
        AccessVerb::Ban,
        social.as_str(),
        &carol_id,
        1,
    ));
    expect_invalid(
        send(reqwest::Method::POST, bob_path("ban"), wrong_user)
            .await
            .unwrap(),
    )
    .await;
    let right = encode_b64(&sign_access(
        &alice_key,
        AccessVerb::Ban,
        social.as_str(),
        &bob_id,
        1,
    ));
    expect_invalid(
        send(reqwest::Method::POST, bob_path("remove"), right.clone())
            .await
            .unwrap(),
    )
    .await;
    let view: RoomView = alice.room(&social).await.unwrap();
    assert!(
        view.members.iter().any(|m| m.user_id == bob_id),
        "a refused ban removed bob"
    );
    // The signed ban (the client signs it).
    alice.member_action(&social, &bob_id, "ban").await.unwrap();
    assert!(bob.join(&social).await.is_err());
    srv.stop().await;
}

both_backends!(
    access_statements_are_checked_and_kept,
    super::access_statements
);
