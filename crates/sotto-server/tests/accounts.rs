//! Invites, registration, login, sessions and devices.

mod common;

use std::time::Duration;

use common::{Db, ManualClock, TestServer, raw_http};
use sotto_client::api::is_code;
use sotto_client::{Client, Profile};
use sotto_proto::ErrorCode;
use sotto_proto::api::{AddDeviceRequest, LoginRequest, RegisterRequest, UpdateProfileRequest};
use sotto_proto::chain::LinkOp;
use sotto_proto::keys::{add_device_transcript, register_transcript};

/// 50 concurrent redemptions of a single-use invite create exactly one account.
async fn concurrent_redemption(db: Db) {
    let srv = TestServer::start(db).await;
    let code = srv.invite(1).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let dir = srv.dir.path().join(format!("racer{i}"));
        let url = srv.url.clone();
        let code = code.clone();
        tasks.push(tokio::spawn(async move {
            let mut profile = Profile::open_or_create(&dir).unwrap();
            let mut client = Client::new(&url, None).unwrap();
            client
                .register(&mut profile, &code, &format!("racer{i}"), "Racer")
                .await
        }));
    }
    let mut ok = 0;
    let mut used_up = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.code() == Some(ErrorCode::InviteUsedUp) => used_up += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!((ok, used_up), (1, 49));
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(srv.store().pool())
        .await
        .unwrap();
    assert_eq!(users, 1);
    let devices: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices")
        .fetch_one(srv.store().pool())
        .await
        .unwrap();
    assert_eq!(devices, 1, "failed registrations leave nothing behind");
    srv.stop().await;
}

both_backends!(invite_race, super::concurrent_redemption);

/// A multi-use invite counts down; a failed registration does not spend a use.
async fn invite_uses(db: Db) {
    let srv = TestServer::start(db).await;
    let code = srv.invite(2).await;
    srv.user_with_invite("first", &code).await;
    // Taken username: refused, and the use is not spent.
    let mut p = Profile::open_or_create(&srv.dir.path().join("dup")).unwrap();
    let r = srv.client().register(&mut p, &code, "first", "Dup").await;
    assert!(is_code(&r, ErrorCode::UsernameTaken), "{r:?}");
    srv.user_with_invite("second", &code).await;
    let mut p = Profile::open_or_create(&srv.dir.path().join("third")).unwrap();
    let r = srv.client().register(&mut p, &code, "third", "T").await;
    assert!(is_code(&r, ErrorCode::InviteUsedUp), "{r:?}");
    let r = srv
        .client()
        .register(&mut p, "no-such-code", "third", "T")
        .await;
    assert!(is_code(&r, ErrorCode::InviteNotFound), "{r:?}");
    srv.stop().await;
}

both_backends!(invite_counts, super::invite_uses);

#[tokio::test]
async fn expired_invite_and_session() {
    let clock = ManualClock::new();
    let c2 = clock.clone();
    let srv = TestServer::start_with(Db::Sqlite, move |cfg| {
        cfg.clock = c2;
        cfg.session_ttl = Duration::from_secs(3600);
    })
    .await;
    let (alice, _) = srv
        .user_with_invite("alice", &srv.bootstrap_code.clone().unwrap())
        .await;
    let invite = alice.create_invite(1, 60).await.unwrap();
    clock.advance(Duration::from_secs(61));
    let mut p = Profile::open_or_create(&srv.dir.path().join("late")).unwrap();
    let r = srv
        .client()
        .register(&mut p, &invite.code, "late", "Late")
        .await;
    assert!(is_code(&r, ErrorCode::InviteExpired), "{r:?}");
    // The session made at registration expires after its TTL.
    alice.me().await.unwrap();
    clock.advance(Duration::from_secs(3600));
    let r = alice.me().await;
    assert!(is_code(&r, ErrorCode::SessionExpired), "{r:?}");
    srv.stop().await;
}

#[tokio::test]
async fn login_challenges_are_single_use_and_signed() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (_, profile) = srv.user("dana").await;
    let mut client = srv.client();
    client.login(&profile).await.unwrap();
    client.me().await.unwrap();

    // Answer a challenge by hand, then replay the same answer.
    let http = raw_http();
    let good = signed_login(&http, &srv.url, &profile, &profile).await;
    let first = http
        .post(format!("{}/api/auth/login", srv.url))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let replay = http
        .post(format!("{}/api/auth/login", srv.url))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
    let body: sotto_proto::ErrorResponse = replay.json().await.unwrap();
    assert_eq!(body.error.code, ErrorCode::ChallengeInvalid);

    // A signature by another key over the right transcript.
    let other = Profile::open_or_create(&srv.dir.path().join("other-key")).unwrap();
    let forged = signed_login(&http, &srv.url, &profile, &other).await;
    let r = http
        .post(format!("{}/api/auth/login", srv.url))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<sotto_proto::ErrorResponse>()
            .await
            .unwrap()
            .error
            .code,
        ErrorCode::BadSignature
    );

    // A key with no account cannot log in.
    let r = srv.client().login(&other).await;
    assert!(is_code(&r, ErrorCode::BadSignature), "{r:?}");
    srv.stop().await;
}

#[tokio::test]
async fn registration_needs_proof_of_the_key() {
    let srv = TestServer::start(Db::Sqlite).await;
    let code = srv.invite(1).await;
    let victim = Profile::open_or_create(&srv.dir.path().join("victim")).unwrap();
    let attacker = Profile::open_or_create(&srv.dir.path().join("attacker")).unwrap();
    // Registering someone else's public key without their signature.
    let req = RegisterRequest {
        invite_code: code.clone(),
        username: "squatter".into(),
        display_name: "S".into(),
        device_public_key: victim.public_key(),
        device_name: None,
        signature: attacker.sign(&register_transcript(
            &code,
            "squatter",
            &victim.public_key(),
        )),
        device_link: sotto_proto::keys::encode_b64(
            &attacker
                .sign_link(None, LinkOp::Add, &victim.public_key())
                .to_bytes(),
        ),
    };
    let r = raw_http()
        .post(format!("{}/api/register", srv.url))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<sotto_proto::ErrorResponse>()
            .await
            .unwrap()
            .error
            .code,
        ErrorCode::BadSignature
    );
    // The invite was not spent.
    srv.user_with_invite("rightful", &code).await;
    srv.stop().await;
}

async fn sessions_and_devices(db: Db) {
    let srv = TestServer::start(db).await;
    let (mut phone, phone_profile) = srv.user("erin").await;
    phone.login(&phone_profile).await.unwrap();

    // Add a laptop: signed by the phone's key and by the laptop's key.
    let laptop_profile = Profile::open_or_create(&srv.dir.path().join("erin-laptop")).unwrap();
    let me = phone.me().await.unwrap();
    let t = add_device_transcript(
        &me.id.0,
        &phone_profile.public_key(),
        &laptop_profile.public_key(),
    );
    let chain = phone.own_chain().await.unwrap();
    assert_eq!(chain.len(), 1, "registration made the chain's first link");
    let link = |p: &Profile| {
        sotto_proto::keys::encode_b64(
            &p.sign_link(chain.last(), LinkOp::Add, &laptop_profile.public_key())
                .to_bytes(),
        )
    };
    let bad = AddDeviceRequest {
        device_public_key: laptop_profile.public_key(),
        name: "laptop".into(),
        authorizer_signature: laptop_profile.sign(&t),
        new_device_signature: laptop_profile.sign(&t),
        device_link: link(&phone_profile),
    };
    let r = phone.add_device(&bad).await;
    assert!(is_code(&r, ErrorCode::BadSignature), "{r:?}");
    // A chain link signed by a key that is not a device of the account.
    let forged = AddDeviceRequest {
        authorizer_signature: phone_profile.sign(&t),
        device_link: link(&laptop_profile),
        ..bad.clone()
    };
    let r = phone.add_device(&forged).await;
    assert!(is_code(&r, ErrorCode::InvalidDeviceLink), "{r:?}");
    let good = AddDeviceRequest {
        authorizer_signature: phone_profile.sign(&t),
        ..bad
    };
    let device = phone.add_device(&good).await.unwrap();
    // The same request again: its link no longer follows the chain.
    let r = phone.add_device(&good).await;
    assert!(is_code(&r, ErrorCode::DeviceChainConflict), "{r:?}");
    // Re-signed after the new head: a key can be added only once.
    let chain = phone.own_chain().await.unwrap();
    let again = AddDeviceRequest {
        device_link: sotto_proto::keys::encode_b64(
            &phone_profile
                .sign_link(chain.last(), LinkOp::Add, &laptop_profile.public_key())
                .to_bytes(),
        ),
        ..good.clone()
    };
    let r = phone.add_device(&again).await;
    assert!(is_code(&r, ErrorCode::InvalidDeviceLink), "{r:?}");
    let mut laptop = srv.client();
    laptop.login(&laptop_profile).await.unwrap();
    assert_eq!(laptop.me().await.unwrap().id, me.id);
    let devices = phone.devices().await.unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices.iter().filter(|d| d.current).count(), 1);

    // Profile edits.
    let updated = laptop
        .update_me(&UpdateProfileRequest {
            display_name: Some("Erin E.".into()),
            bio: Some("hi".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        (updated.display_name.as_str(), updated.bio.as_str()),
        ("Erin E.", "hi")
    );
    let r = laptop
        .update_me(&UpdateProfileRequest {
            display_name: Some("".into()),
            bio: None,
        })
        .await;
    assert!(is_code(&r, ErrorCode::InvalidProfile), "{r:?}");

    // Revoking needs a chain link too.
    let r = phone
        .request_empty::<()>(
            reqwest::Method::DELETE,
            &format!("/api/me/devices/{}", device.id),
            None,
        )
        .await;
    assert!(r.is_err(), "a revocation without a chain link: {r:?}");
    // Revoking the laptop ends its sessions and its logins.
    phone.revoke_device(&phone_profile, &device).await.unwrap();
    let chain = phone.own_chain().await.unwrap();
    let verified = sotto_proto::chain::verify_chain(&chain).unwrap();
    assert!(verified.is_revoked(device.public_key.as_bytes()));
    assert!(verified.is_active(phone_profile.public_key().as_bytes()));
    let r = laptop.me().await;
    assert!(is_code(&r, ErrorCode::SessionRevoked), "{r:?}");
    let r = srv.client().login(&laptop_profile).await;
    assert!(is_code(&r, ErrorCode::BadSignature), "{r:?}");

    // The last device cannot be revoked (nothing could sign in again).
    let phone_device = phone
        .devices()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.current)
        .unwrap();
    let r = phone.revoke_device(&phone_profile, &phone_device).await;
    assert!(is_code(&r, ErrorCode::LastDevice), "{r:?}");
    phone.me().await.unwrap();

    // Logout revokes the session used.
    phone.logout().await.unwrap();
    let r = phone.me().await;
    assert!(is_code(&r, ErrorCode::SessionRevoked), "{r:?}");
    srv.stop().await;
}

both_backends!(devices, super::sessions_and_devices);

#[tokio::test]
async fn only_admins_create_invites() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (plain, _) = srv.user("frank").await;
    let r = plain.create_invite(1, 3600).await;
    assert!(is_code(&r, ErrorCode::AdminOnly), "{r:?}");
    let (admin, _) = srv
        .user_with_invite("root_admin", &srv.bootstrap_code.clone().unwrap())
        .await;
    let r = admin.create_invite(0, 3600).await;
    assert!(is_code(&r, ErrorCode::InvalidParameter), "{r:?}");
    let r = admin.create_invite(1, 10).await;
    assert!(is_code(&r, ErrorCode::InvalidParameter), "{r:?}");
    srv.stop().await;
}

#[tokio::test]
async fn rate_limit_on_login_and_registration() {
    let srv = TestServer::start_with(Db::Sqlite, |cfg| cfg.auth_per_minute = 3).await;
    let http = raw_http();
    let body = serde_json::json!({ "device_public_key": Profile::open_or_create(&srv.dir.path().join("rl")).unwrap().public_key().to_base64() });
    for _ in 0..3 {
        let r = http
            .post(format!("{}/api/auth/challenge", srv.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .post(format!("{}/api/auth/challenge", srv.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(
        r.json::<sotto_proto::ErrorResponse>()
            .await
            .unwrap()
            .error
            .code,
        ErrorCode::RateLimited
    );
    // Registration shares the bucket.
    let r = http
        .post(format!("{}/api/register", srv.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Authenticated endpoints are not limited by it.
    let r = http
        .get(format!("{}/healthz", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    srv.stop().await;
}

#[tokio::test]
async fn first_start_invite_only_on_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let first = sotto_server::start(common::test_config(dir.path()))
        .await
        .unwrap();
    let url = first.bootstrap_invite.clone().unwrap();
    let page = raw_http().get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    // The link opens the web client when it is built in (it signs up in
    // the browser), else a page with the CLI command.
    let text = page.text().await.unwrap();
    if sotto_server::http::ui::embedded() {
        assert!(text.contains("<div id=\"app\">"), "{text}");
    } else {
        assert!(text.contains("sotto register"), "{text}");
    }
    let code = url.rsplit('/').next().unwrap().to_string();
    let mut profile = Profile::open_or_create(&dir.path().join("p")).unwrap();
    Client::new(&first.base_url, None)
        .unwrap()
        .register(&mut profile, &code, "owner", "Owner")
        .await
        .unwrap();
    let page = raw_http().get(&url).send().await.unwrap();
    assert_eq!(page.status(), 410, "a used invite says so");
    first.shutdown().await.unwrap();
    let second = sotto_server::start(common::test_config(dir.path()))
        .await
        .unwrap();
    assert!(
        second.bootstrap_invite.is_none(),
        "accounts exist: no new admin invite"
    );
    second.shutdown().await.unwrap();
}

/// Asks for a challenge for `profile`'s key and answers it with `signer`'s signature.
async fn signed_login(
    http: &reqwest::Client,
    url: &str,
    profile: &Profile,
    signer: &Profile,
) -> LoginRequest {
    let challenge: sotto_proto::api::ChallengeResponse = http
        .post(format!("{url}/api/auth/challenge"))
        .json(&serde_json::json!({ "device_public_key": profile.public_key().to_base64() }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nonce = sotto_proto::keys::decode_b64(&challenge.nonce).unwrap();
    LoginRequest {
        signature: signer.sign(&sotto_proto::keys::login_transcript(
            &challenge.challenge_id,
            &nonce,
            &profile.public_key(),
        )),
        challenge_id: challenge.challenge_id,
    }
}
