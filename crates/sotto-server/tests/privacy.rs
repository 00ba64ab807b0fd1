//! Data minimisation: the privacy manifest lists every column; a user can
//! export everything about them and delete it; expired rows are deleted.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Db, ManualClock, TestServer};
use sotto_client::api::is_code;
use sotto_proto::ErrorCode;
use sotto_proto::room::{Role, RoomKind};

/// (table, column) pairs documented in docs/privacy.md: a `### \`table\``
/// heading, then rows that start with `` | `column` | ``.
fn manifest() -> BTreeSet<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/privacy.md");
    let text = std::fs::read_to_string(path).expect("docs/privacy.md");
    let mut table = None;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("### `") {
            table = rest.split('`').next().map(str::to_string);
        } else if line.starts_with("## ") {
            table = None;
        } else if let (Some(t), Some(rest)) = (&table, line.strip_prefix("| `"))
            && let Some(col) = rest.split('`').next()
        {
            out.insert((t.clone(), col.to_string()));
        }
    }
    out
}

async fn manifest_matches_schema(db: Db) {
    let srv = TestServer::start(db).await;
    let schema: BTreeSet<(String, String)> = srv
        .store()
        .schema_columns()
        .await
        .unwrap()
        .into_iter()
        .collect();
    let documented = manifest();
    let undocumented: Vec<_> = schema.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&schema).collect();
    assert!(
        undocumented.is_empty(),
        "columns missing from docs/privacy.md: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "docs/privacy.md lists columns the schema does not have: {stale:?}"
    );
    assert!(
        schema.len() > 40,
        "schema read back only {} columns",
        schema.len()
    );
    srv.stop().await;
}

both_backends!(privacy_manifest, super::manifest_matches_schema);

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

async fn export_and_delete(db: Db) {
    let srv = TestServer::start(db).await;
    let (alice, _) = srv
        .user_with_invite("alice", &srv.bootstrap_code.clone().unwrap())
        .await;
    let (bob, bob_profile) = srv.user("bobby_tables").await;
    let (carol, _) = srv.user("carol").await;
    let bob_me = bob
        .update_me(&sotto_proto::api::UpdateProfileRequest {
            display_name: Some("Bob Unique Display".into()),
            bio: Some("bio-marker-7f3a".into()),
        })
        .await
        .unwrap();
    let bob_key = bob_profile.public_key();
    bob.follow("alice").await.unwrap();
    alice.follow("bobby_tables").await.unwrap();
    // Bob hosts a room with Alice on stage and Carol listening.
    let room = bob
        .create_room("Bob's room", RoomKind::Open, None)
        .await
        .unwrap();
    alice.join(&room.id).await.unwrap();
    carol.join(&room.id).await.unwrap();
    let alice_id = alice.me().await.unwrap().id;
    bob.member_action(&room.id, &alice_id, "invite-to-stage")
        .await
        .unwrap();
    alice.room_action(&room.id, "accept-stage").await.unwrap();
    // Bob is banned from one room and let into a closed one.
    let other = alice
        .create_room("Alice's", RoomKind::Open, None)
        .await
        .unwrap();
    bob.join(&other.id).await.unwrap();
    alice
        .member_action(&other.id, &bob_me.id, "ban")
        .await
        .unwrap();
    let closed = alice
        .create_room("Closed", RoomKind::Closed, None)
        .await
        .unwrap();
    alice
        .grant_access(&closed.id, "bobby_tables")
        .await
        .unwrap();

    // The export holds all of it.
    let export = bob.export().await.unwrap();
    assert_eq!(export.account.id, bob_me.id);
    assert_eq!(export.account.bio, "bio-marker-7f3a");
    assert_eq!(export.devices.len(), 1);
    assert_eq!(export.devices[0].public_key, bob_key);
    assert!(!export.sessions.is_empty());
    assert_eq!(export.following[0].username, "alice");
    assert_eq!(export.followers[0].username, "alice");
    assert_eq!(export.rooms_created.len(), 1);
    assert_eq!(export.rooms_created[0].title, "Bob's room");
    assert_eq!(export.room_memberships.len(), 1);
    assert_eq!(export.room_memberships[0].role, Role::Host);
    assert_eq!(export.room_bans[0].room_id, other.id);
    assert_eq!(export.room_access[0].room_id, closed.id);
    let text = serde_json::to_string(&export).unwrap();
    assert!(
        !text.contains("token"),
        "no token or token hash in the export"
    );

    // Deleting needs the device's signature, not just the session.
    let r = bob
        .request_empty(
            reqwest::Method::DELETE,
            "/api/me",
            Some(&sotto_proto::api::DeleteAccountRequest {
                signature: "AAAA".into(),
            }),
        )
        .await;
    assert!(is_code(&r, ErrorCode::BadSignature), "{r:?}");
    bob.delete_account(&bob_profile).await.unwrap();

    // Gone: the session, logins, the profile.
    assert!(bob.me().await.is_err());
    let mut fresh = srv.client();
    assert!(is_code(
        &fresh.login(&bob_profile).await,
        ErrorCode::BadSignature
    ));
    assert!(is_code(
        &alice.profile("bobby_tables").await,
        ErrorCode::UserNotFound
    ));
    // Bob's room goes on: Alice (on stage) became host, Carol still listens.
    let view = alice.room(&room.id).await.unwrap();
    assert!(!view.ended);
    assert_eq!(
        view.members
            .iter()
            .find(|m| m.user_id == alice_id)
            .unwrap()
            .role,
        Role::Host
    );
    assert!(view.members.iter().all(|m| m.user_id != bob_me.id));

    // Nothing in any table names Bob any more.
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("user id", bob_me.id.0.clone().into_bytes()),
        ("username", b"bobby_tables".to_vec()),
        ("display name", b"Bob Unique Display".to_vec()),
        ("bio", b"bio-marker-7f3a".to_vec()),
        ("device key", bob_key.as_bytes().to_vec()),
        ("device key (base64)", bob_key.to_base64().into_bytes()),
    ];
    let values = srv.store().all_values().await.unwrap();
    assert!(
        values.len() > 20,
        "the scan read only {} values",
        values.len()
    );
    for (what, needle) in &needles {
        for (table, column, value) in &values {
            assert!(
                !contains(value, needle),
                "{what} of the deleted user is still in {table}.{column}"
            );
        }
    }
    // On SQLite, the file itself (secure_delete, after a checkpoint).
    if db == Db::Sqlite {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(srv.store().pool())
            .await
            .unwrap();
        let bytes = std::fs::read(srv.dir.path().join("sotto.db")).unwrap();
        for (what, needle) in &needles {
            assert!(
                !contains(&bytes, needle),
                "{what} of the deleted user is still in sotto.db's bytes"
            );
        }
    }
    srv.stop().await;
}

both_backends!(export_and_deletion, super::export_and_delete);

#[tokio::test]
async fn retention_deletes_expired_sessions_and_ended_rooms() {
    let clock = ManualClock::new();
    let c2 = clock.clone();
    let srv = TestServer::start_with(Db::Sqlite, move |cfg| {
        cfg.clock = c2;
        cfg.retention_interval = Duration::from_millis(50);
        cfg.ended_room_retention = Duration::from_secs(24 * 3600);
        cfg.session_ttl = Duration::from_secs(48 * 3600);
        // Presence is tested on its own below.
        cfg.presence_ttl = Duration::from_secs(365 * 24 * 3600);
    })
    .await;
    let (alice, profile) = srv.user("alice").await;
    let live = alice
        .create_room("Still live", RoomKind::Open, None)
        .await
        .unwrap();
    let ended = alice
        .create_room("Ended", RoomKind::Open, None)
        .await
        .unwrap();
    alice.room_action(&ended.id, "end").await.unwrap();
    let mut second = srv.client();
    second.login(&profile).await.unwrap();
    second.logout().await.unwrap();

    let store = srv.store().clone();
    // The revoked session goes at the next pass; the ended room stays for 24 h.
    wait_until(
        &store,
        "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL",
        0,
    )
    .await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM rooms").await, 2);
    clock.advance(Duration::from_secs(23 * 3600));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM rooms").await,
        2,
        "kept within the retention period"
    );
    clock.advance(Duration::from_secs(2 * 3600));
    wait_until(&store, "SELECT COUNT(*) FROM rooms", 1).await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM room_members").await,
        1,
        "the ended room's roster is gone"
    );
    alice.room(&live.id).await.unwrap();
    // Sessions past their expiry go too.
    clock.advance(Duration::from_secs(48 * 3600));
    wait_until(&store, "SELECT COUNT(*) FROM sessions", 0).await;
    assert!(is_code(&alice.me().await, ErrorCode::Unauthenticated));
    srv.stop().await;
}

async fn count(store: &sotto_server::Store, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Polls until the retention task has brought `sql` to `want`.
async fn wait_until(store: &sotto_server::Store, sql: &'static str, want: i64) {
    for _ in 0..200 {
        if count(store, sql).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{sql} never reached {want}");
}

#[tokio::test]
async fn absent_participants_leave_live_rooms() {
    let clock = ManualClock::new();
    let c2 = clock.clone();
    let srv = TestServer::start_with(Db::Sqlite, move |cfg| {
        cfg.clock = c2;
        cfg.retention_interval = Duration::from_millis(50);
        cfg.presence_ttl = Duration::from_secs(90);
        cfg.presence_refresh = Duration::from_secs(3600);
    })
    .await;
    let (alice, _) = srv.user("alice").await;
    let (bob, _) = srv.user("bob").await;
    let alice_id = alice.me().await.unwrap().id;
    let bob_id = bob.me().await.unwrap().id;
    let room = alice
        .create_room("Presence", RoomKind::Open, None)
        .await
        .unwrap();
    bob.join(&room.id).await.unwrap();
    let mut channel = sotto_client::Channel::connect(&alice).await.unwrap();
    channel.subscribe(&room.id).await.unwrap();
    channel.next(Duration::from_secs(5)).await.unwrap();

    // Alice's open channel keeps her present; Bob has no channel and does nothing.
    clock.advance(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        alice.room(&room.id).await.unwrap().members.len(),
        2,
        "nobody is absent for 90 s yet"
    );
    channel.subscribe(&room.id).await.unwrap();
    channel.next(Duration::from_secs(5)).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let left = channel
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, sotto_proto::channel::ServerMessage::RoomState { room } if room.members.iter().all(|x| x.user_id != bob_id))
        })
        .await;
    assert!(
        left.is_ok(),
        "Bob, absent for 120 s, was taken out: {left:?}"
    );
    let view = alice.room(&room.id).await.unwrap();
    assert_eq!(view.members.len(), 1);
    assert_eq!(view.members[0].user_id, alice_id);
    assert!(!view.ended);

    // When the host is gone too, the stage is empty and the room ends.
    channel.close().await;
    clock.advance(Duration::from_secs(100));
    let store = srv.store().clone();
    wait_until(
        &store,
        "SELECT COUNT(*) FROM rooms WHERE ended_at IS NULL",
        0,
    )
    .await;
    srv.stop().await;
}
