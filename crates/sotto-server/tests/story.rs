//! The story of a room, on SQLite and on PostgreSQL: register, follow, create
//! a room, a second user joins, raises a hand, is invited to the stage,
//! accepts, is muted, is moved back, is banned, cannot rejoin, the room ends.
//! Every step is checked through the API and through the session channels.

mod common;

use std::time::Duration;

use common::{Db, TestServer};
use sotto_client::Channel;
use sotto_client::api::is_code;
use sotto_proto::channel::ServerMessage;
use sotto_proto::room::{Role, RoomKind, RoomView};
use sotto_proto::{ErrorCode, UserId};

const WAIT: Duration = Duration::from_secs(10);

fn member<'a>(view: &'a RoomView, user: &UserId) -> Option<&'a sotto_proto::room::MemberView> {
    view.members.iter().find(|m| &m.user_id == user)
}

/// Waits for the room state in which `check` holds.
async fn state_where(channel: &mut Channel, check: impl Fn(&RoomView) -> bool) -> RoomView {
    match channel
        .wait_for(
            WAIT,
            |m| matches!(m, ServerMessage::RoomState { room } if check(room)),
        )
        .await
        .unwrap()
    {
        ServerMessage::RoomState { room } => room,
        _ => unreachable!(),
    }
}

async fn story(db: Db) {
    let srv = TestServer::start(db).await;

    // The first account comes from the first-start invite and is an admin.
    let code = srv
        .bootstrap_code
        .clone()
        .expect("bootstrap invite on an empty database");
    let (alice, _) = srv.user_with_invite("alice", &code).await;
    let me = alice.me().await.unwrap();
    assert!(me.is_admin);
    // The bootstrap invite is single-use.
    let mut again = sotto_client::Profile::open_or_create(&srv.dir.path().join("again")).unwrap();
    let r = srv
        .client()
        .register(&mut again, &code, "mallory", "M")
        .await;
    assert!(is_code(&r, ErrorCode::InviteUsedUp), "{r:?}");

    // Alice invites Bob and Carol over the API.
    let invite = alice.create_invite(2, 3600).await.unwrap();
    assert!(invite.url.ends_with(&invite.code));
    let (bob, _) = srv.user_with_invite("bob", &invite.code).await;
    let (carol, _) = srv.user_with_invite("carol", &invite.code).await;
    let bob_id = bob.me().await.unwrap().id;
    let carol_id = carol.me().await.unwrap().id;

    // Follows.
    bob.follow("alice").await.unwrap();
    carol.follow("alice").await.unwrap();
    bob.follow("alice").await.unwrap(); // idempotent
    let profile = bob.profile("alice").await.unwrap();
    assert_eq!(profile.followers, 2);
    assert!(profile.followed_by_you);
    let followers: Vec<String> = alice
        .followers("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(followers.len(), 2);
    assert!(followers.contains(&"bob".to_string()) && followers.contains(&"carol".to_string()));
    assert_eq!(bob.following("bob").await.unwrap()[0].username, "alice");

    // Alice follows them back and starts a social room: people its host
    // or moderators follow may enter.
    alice.follow("bob").await.unwrap();
    alice.follow("carol").await.unwrap();
    let room = alice
        .create_room("Morning show", RoomKind::Social, Some("coffee"))
        .await
        .unwrap();
    assert_eq!(member(&room, &me.id).unwrap().role, Role::Host);
    let hall = bob.hallway().await.unwrap();
    assert_eq!(hall.len(), 1);
    assert_eq!(hall[0].id, room.id);
    assert_eq!(hall[0].followed_on_stage, 1);

    let mut alice_ch = Channel::connect(&alice).await.unwrap();
    alice_ch.subscribe(&room.id).await.unwrap();
    state_where(&mut alice_ch, |r| r.id == room.id).await;

    // Bob joins and subscribes; everyone sees him.
    let view = bob.join(&room.id).await.unwrap();
    assert_eq!(member(&view, &bob_id).unwrap().role, Role::Listener);
    state_where(&mut alice_ch, |r| member(r, &bob_id).is_some()).await;
    let mut bob_ch = Channel::connect(&bob).await.unwrap();
    bob_ch.subscribe(&room.id).await.unwrap();
    state_where(&mut bob_ch, |r| member(r, &bob_id).is_some()).await;
    carol.join(&room.id).await.unwrap();
    let mut carol_ch = Channel::connect(&carol).await.unwrap();
    carol_ch.subscribe(&room.id).await.unwrap();

    // Raise hand → invited → accepts.
    bob.room_action(&room.id, "raise-hand").await.unwrap();
    state_where(&mut alice_ch, |r| {
        member(r, &bob_id).is_some_and(|m| m.hand_raised)
    })
    .await;
    alice
        .member_action(&room.id, &bob_id, "invite-to-stage")
        .await
        .unwrap();
    // A listener's room state shows no invitations (they are the stage's
    // to see): Bob is told his own entry.
    bob_ch
        .wait_for(
            WAIT,
            |m| matches!(m, ServerMessage::RoomYou { you, .. } if you.invited_to_stage),
        )
        .await
        .unwrap();
    assert!(bob_ch.you(&room.id).is_some_and(|m| m.invited_to_stage));
    let view = bob.room_action(&room.id, "accept-stage").await.unwrap();
    let b = member(&view, &bob_id).unwrap();
    assert_eq!(b.role, Role::Speaker);
    assert!(!b.hand_raised && !b.invited_to_stage);
    state_where(&mut carol_ch, |r| {
        member(r, &bob_id).is_some_and(|m| m.role == Role::Speaker)
    })
    .await;

    // Muted by the host; only Bob may unmute.
    alice
        .member_action(&room.id, &bob_id, "mute")
        .await
        .unwrap();
    state_where(&mut bob_ch, |r| member(r, &bob_id).is_some_and(|m| m.muted)).await;
    let r = alice.member_action(&room.id, &bob_id, "unmute").await;
    assert!(is_code(&r, ErrorCode::OnlySelf), "{r:?}");
    let view = bob
        .member_action(&room.id, &bob_id, "unmute")
        .await
        .unwrap();
    assert!(!member(&view, &bob_id).unwrap().muted);
    alice
        .member_action(&room.id, &bob_id, "mute")
        .await
        .unwrap();

    // Moved back to the audience.
    let view = alice
        .member_action(&room.id, &bob_id, "move-to-audience")
        .await
        .unwrap();
    let b = member(&view, &bob_id).unwrap();
    assert_eq!(b.role, Role::Listener);
    assert!(!b.muted);
    state_where(&mut carol_ch, |r| {
        member(r, &bob_id).is_some_and(|m| m.role == Role::Listener)
    })
    .await;

    // Banned: Bob's channel says so, he is gone from the room, and cannot rejoin.
    let view = alice.member_action(&room.id, &bob_id, "ban").await.unwrap();
    assert!(member(&view, &bob_id).is_none());
    let left = bob_ch
        .wait_for(WAIT, |m| matches!(m, ServerMessage::RoomLeft { .. }))
        .await
        .unwrap();
    assert_eq!(
        left,
        ServerMessage::RoomLeft {
            room_id: room.id.clone(),
            banned: true
        }
    );
    let r = bob.join(&room.id).await;
    assert!(is_code(&r, ErrorCode::BannedFromRoom), "{r:?}");
    assert!(
        bob.hallway().await.unwrap().is_empty(),
        "a banned room leaves the hallway"
    );
    let r = bob.room_action(&room.id, "raise-hand").await;
    assert!(is_code(&r, ErrorCode::NotInRoom), "{r:?}");
    state_where(&mut carol_ch, |r| member(r, &bob_id).is_none()).await;

    // The host leaves; the stage is empty, so the room ends for everyone.
    alice.room_action(&room.id, "leave").await.unwrap();
    let ended = carol_ch
        .wait_for(WAIT, |m| matches!(m, ServerMessage::RoomEnded { .. }))
        .await
        .unwrap();
    assert_eq!(
        ended,
        ServerMessage::RoomEnded {
            room_id: room.id.clone()
        }
    );
    let r = carol.room_action(&room.id, "raise-hand").await;
    assert!(is_code(&r, ErrorCode::RoomEnded), "{r:?}");
    let r = carol.join(&room.id).await;
    assert!(is_code(&r, ErrorCode::RoomEnded), "{r:?}");
    assert!(carol.hallway().await.unwrap().is_empty());
    let _ = carol_id;

    alice_ch.close().await;
    bob_ch.close().await;
    carol_ch.close().await;
    srv.stop().await;
}

both_backends!(room_story, super::story);

/// When the host leaves, the longest-present moderator becomes host, and a
/// room whose stage empties ends.
async fn host_succession(db: Db) {
    let srv = TestServer::start(db).await;
    let (host, _) = srv.user("host1").await;
    let (m, _) = srv.user("mod1").await;
    let (s, _) = srv.user("spk1").await;
    let m_id = m.me().await.unwrap().id;
    let s_id = s.me().await.unwrap().id;
    let room = host
        .create_room("Succession", RoomKind::Open, None)
        .await
        .unwrap();
    for (c, id) in [(&s, &s_id), (&m, &m_id)] {
        c.join(&room.id).await.unwrap();
        host.member_action(&room.id, id, "invite-to-stage")
            .await
            .unwrap();
        c.room_action(&room.id, "accept-stage").await.unwrap();
    }
    host.member_action(&room.id, &m_id, "make-moderator")
        .await
        .unwrap();
    host.room_action(&room.id, "leave").await.unwrap();
    let view = m.room(&room.id).await.unwrap();
    assert_eq!(
        member(&view, &m_id).unwrap().role,
        Role::Host,
        "the moderator became host"
    );
    assert_eq!(member(&view, &s_id).unwrap().role, Role::Speaker);
    m.room_action(&room.id, "leave").await.unwrap();
    let view = s.room(&room.id).await.unwrap();
    assert_eq!(
        member(&view, &s_id).unwrap().role,
        Role::Host,
        "with no moderator, a speaker"
    );
    assert!(!view.ended);
    s.room_action(&room.id, "leave").await.unwrap();
    let r = s.join(&room.id).await;
    assert!(is_code(&r, ErrorCode::RoomEnded), "{r:?}");
    srv.stop().await;
}

both_backends!(succession, super::host_succession);

/// Who may enter which kind of room, and the hallway's order.
async fn kinds_and_hallway(db: Db) {
    let srv = TestServer::start(db).await;
    let (a, _) = srv.user("anna").await;
    let (b, _) = srv.user("ben").await;
    let (c, _) = srv.user("cleo").await;
    let open = a.create_room("Open", RoomKind::Open, None).await.unwrap();
    let social = a
        .create_room("Social", RoomKind::Social, None)
        .await
        .unwrap();
    let closed = a
        .create_room("Closed", RoomKind::Closed, None)
        .await
        .unwrap();
    let big = b.create_room("Big", RoomKind::Open, None).await.unwrap();
    c.join(&big.id).await.unwrap();

    // Cleo follows nobody: sees the open rooms, larger first; not social or closed.
    let hall: Vec<String> = c
        .hallway()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.title)
        .collect();
    assert_eq!(hall, vec!["Big", "Open"]);
    assert!(is_code(
        &c.join(&social.id).await,
        ErrorCode::RoomAccessDenied
    ));
    assert!(is_code(
        &c.join(&closed.id).await,
        ErrorCode::RoomAccessDenied
    ));
    assert!(is_code(
        &c.room(&closed.id).await,
        ErrorCode::RoomAccessDenied
    ));

    // Following Anna puts her rooms first, but does not open her social
    // room: a follow is one-sided.
    c.follow("anna").await.unwrap();
    let titles = |c: &sotto_client::Client| {
        let c = c.clone();
        async move {
            c.hallway()
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.title)
                .collect::<Vec<String>>()
        }
    };
    let hall = titles(&c).await;
    assert_eq!(hall, vec!["Open", "Big"], "{hall:?}");
    assert!(is_code(
        &c.join(&social.id).await,
        ErrorCode::RoomAccessDenied
    ));
    // Anna (the host) follows Cleo: the social room opens for her.
    a.follow("cleo").await.unwrap();
    let hall = titles(&c).await;
    assert_eq!(
        hall[2], "Big",
        "rooms with people I follow come first: {hall:?}"
    );
    assert!(hall.contains(&"Social".to_string()));
    c.join(&social.id).await.unwrap();

    // Closed: only after a moderator lets her in.
    assert!(is_code(
        &b.grant_access(&closed.id, "cleo").await,
        ErrorCode::NotInRoom
    ));
    a.grant_access(&closed.id, "cleo").await.unwrap();
    c.join(&closed.id).await.unwrap();
    assert!(c.hallway().await.unwrap().iter().any(|r| r.id == closed.id));
    let _ = open;
    srv.stop().await;
}

both_backends!(room_kinds, super::kinds_and_hallway);
