//! Room state on the session channel: the whole room once on `subscribe`,
//! then each change as a delta whose size does not grow with the room; a
//! client that misses a delta notices and gets the whole room again. In a
//! large audience, listeners see the stage and the first listeners, with a
//! count for the rest (sent at most once a second); the stage sees everyone.
//! Hands and stage invitations are the stage's to see, and each listener's
//! own.

mod common;

use std::time::Duration;

use common::{Db, TestServer};
use sotto_client::{Channel, Client};
use sotto_proto::UserId;
use sotto_proto::channel::ServerMessage;
use sotto_proto::room::{AUDIENCE_IN_VIEW, MemberView, Role, RoomKind, RoomView};

const WAIT: Duration = Duration::from_secs(10);

/// What a member looks like after an action.
type Check = fn(&MemberView) -> bool;

fn has(view: &RoomView, user: &UserId) -> bool {
    view.members.iter().any(|m| &m.user_id == user)
}

/// Reads frames as they come, applying deltas to `view` itself, until the
/// next room message; returns it and its size on the wire.
async fn next_room_frame(ch: &mut Channel, view: &mut RoomView) -> (ServerMessage, usize) {
    loop {
        let (msg, bytes) = ch.next_frame(WAIT).await.unwrap();
        match &msg {
            ServerMessage::RoomDelta(d) => {
                view.apply(d)
                    .expect("each delta starts where the last ended");
                return (msg, bytes);
            }
            ServerMessage::RoomState { room } => {
                *view = room.clone();
                return (msg, bytes);
            }
            _ => continue,
        }
    }
}

/// A new user, `host`, and the room they just started.
async fn hosted_room(
    srv: &TestServer,
    host: &str,
    title: &str,
    kind: RoomKind,
) -> (Client, RoomView) {
    let (host, _) = srv.user(host).await;
    let room = host.create_room(title, kind, None).await.unwrap();
    (host, room)
}

/// A new user who joined `room`, and their id.
async fn joiner(srv: &TestServer, name: &str, room: &RoomView) -> (Client, UserId) {
    let (c, _) = srv.user(name).await;
    c.join(&room.id).await.unwrap();
    let id = c.me().await.unwrap().id;
    (c, id)
}

/// `who`'s channel, subscribed to `room`; the room as the first frame
/// gave it, that frame and its size.
async fn watching(who: &Client, room: &RoomView) -> (Channel, RoomView, ServerMessage, usize) {
    let mut ch = Channel::connect(who).await.unwrap();
    ch.subscribe(&room.id).await.unwrap();
    let mut view = room.clone();
    let (first, bytes) = next_room_frame(&mut ch, &mut view).await;
    (ch, view, first, bytes)
}

/// Bytes a listener's channel receives when one more listener joins a
/// room of `others` listeners, and whether it came as a delta.
async fn join_cost(srv: &TestServer, tag: &str, others: usize) -> (usize, bool) {
    let (host, room) = hosted_room(srv, &format!("{tag}host"), "Deltas", RoomKind::Open).await;
    for i in 0..others {
        joiner(srv, &format!("{tag}l{i}"), &room).await;
    }
    let (bob, _) = joiner(srv, &format!("{tag}bob"), &room).await;
    let (mut ch, mut view, first, whole) = watching(&bob, &room).await;
    assert!(
        matches!(first, ServerMessage::RoomState { .. }),
        "subscribe answers with the whole room"
    );
    let listeners = others + 1;
    assert_eq!(view.audience_count as usize, listeners);
    assert_eq!(view.members.len(), 1 + listeners.min(AUDIENCE_IN_VIEW));

    let (_, carol_id) = joiner(srv, &format!("{tag}carol"), &room).await;
    let (msg, bytes) = next_room_frame(&mut ch, &mut view).await;
    assert_eq!(view.audience_count as usize, listeners + 1);
    // Shown while the audience fits the view; else only counted.
    assert_eq!(has(&view, &carol_id), listeners < AUDIENCE_IN_VIEW);
    // What the client built equals the server's view.
    assert_eq!(view, host.room(&room.id).await.unwrap());
    ch.close().await;
    eprintln!(
        "{} members: the whole room is {whole} B (what every change cost before deltas), the next join's delta {bytes} B",
        others + 2
    );
    (bytes, matches!(msg, ServerMessage::RoomDelta(_)))
}

async fn deltas_do_not_grow_with_the_room(db: Db) {
    let srv = TestServer::start(db).await;
    let (small, small_delta) = join_cost(&srv, "a", 3).await;
    let (big, big_delta) = join_cost(&srv, "b", 60).await;
    assert!(small_delta && big_delta, "a join is sent as a delta");
    // The same size up to the digits of the position and the names.
    assert!(
        big <= small + 8,
        "a join costs {small} B in a room of 5 and {big} B in a room of 62"
    );
    eprintln!("bytes per listener for a join: {small} (5 in the room), {big} (62 in the room)");
    srv.stop().await;
}

#[tokio::test]
async fn deltas_do_not_grow_with_the_room_sqlite() {
    deltas_do_not_grow_with_the_room(Db::Sqlite).await;
}

#[tokio::test]
async fn deltas_do_not_grow_with_the_room_postgres() {
    deltas_do_not_grow_with_the_room(Db::Postgres).await;
}

/// The own entry `ch` is told (`room_you`) within `quiet`.
async fn told_you(ch: &mut Channel, quiet: Duration) -> Option<MemberView> {
    let until = tokio::time::Instant::now() + quiet;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match ch.next_frame(left).await {
            Ok((ServerMessage::RoomYou { you, .. }, _)) => return Some(you),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// Every kind of change arrives as a delta, and the view a client builds
/// from them is the server's. Hands and stage invitations are the stage's
/// to see (as in Clubhouse): the stage gets them as deltas, the listener
/// whose hand or invitation it is gets its own entry (`room_you`), and the
/// other listeners get nothing at all.
#[tokio::test]
async fn hands_stage_and_mutes_arrive_as_deltas() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (host, room) = hosted_room(&srv, "host", "Deltas", RoomKind::Open).await;
    let (bob, bob_id) = joiner(&srv, "bob", &room).await;
    let (carol, _) = joiner(&srv, "carol", &room).await;
    let (mut ch, mut view, _, _) = watching(&carol, &room).await;
    let (mut host_ch, mut host_view, _, _) = watching(&host, &room).await;
    let mut bob_ch = Channel::connect(&bob).await.unwrap();
    bob_ch.subscribe(&room.id).await.unwrap();
    let mine = told_you(&mut bob_ch, WAIT)
        .await
        .expect("a listener is told its own entry");
    assert!(mine.user_id == bob_id && !mine.hand_raised);

    let mut sizes = Vec::new();
    let steps: [(&str, Check, bool); 4] = [
        ("raise-hand", |m| m.hand_raised, false),
        ("invite-to-stage", |m| m.invited_to_stage, false),
        ("accept-stage", |m| m.role == Role::Speaker, true),
        ("mute", |m| m.muted, true),
    ];
    for (action, check, listeners_see) in steps {
        match action {
            "invite-to-stage" | "mute" => host.member_action(&room.id, &bob_id, action).await,
            _ => bob.room_action(&room.id, action).await,
        }
        .unwrap();
        let (msg, _) = next_room_frame(&mut host_ch, &mut host_view).await;
        assert!(
            matches!(msg, ServerMessage::RoomDelta(_)),
            "{action}: {msg:?}"
        );
        let bob_now = host_view.member(&bob_id).unwrap();
        assert!(check(bob_now), "{action} shows to the stage");
        if listeners_see {
            let (msg, bytes) = next_room_frame(&mut ch, &mut view).await;
            assert!(
                matches!(msg, ServerMessage::RoomDelta(_)),
                "{action}: {msg:?}"
            );
            assert!(
                check(view.member(&bob_id).unwrap()),
                "{action} shows to listeners"
            );
            sizes.push((action, bytes));
        } else {
            let you = told_you(&mut bob_ch, WAIT).await;
            assert!(
                you.as_ref().is_some_and(check),
                "{action}: bob is told: {you:?}"
            );
            let seen = frames_within(&mut ch, &mut view, Duration::from_millis(700)).await;
            assert!(
                seen.is_empty(),
                "{action} reaches another listener: {seen:?}"
            );
            assert!(
                !view
                    .members
                    .iter()
                    .any(|m| m.hand_raised || m.invited_to_stage)
            );
            sizes.push((action, 0));
        }
    }
    assert_eq!(host_view, host.room(&room.id).await.unwrap());
    assert_eq!(
        view,
        host.room(&room.id).await.unwrap(),
        "no hands left to hide"
    );
    eprintln!("bytes per listener per change: {sizes:?}");
    srv.stop().await;
}

/// A client that loses a delta (here on purpose) notices at the next one,
/// subscribes again, and ends up with the server's view, not a wrong one.
#[tokio::test]
async fn a_client_that_misses_a_delta_resyncs() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (host, room) = hosted_room(&srv, "host", "Deltas", RoomKind::Open).await;
    let (bob, _) = joiner(&srv, "bob", &room).await;
    let mut ch = Channel::connect(&bob).await.unwrap();
    ch.subscribe(&room.id).await.unwrap();
    ch.wait_for(WAIT, |m| matches!(m, ServerMessage::RoomState { .. }))
        .await
        .unwrap();

    ch.drop_next_delta();
    let (carol, carol_id) = joiner(&srv, "carol", &room).await;
    // Carol's join is lost; Dave's delta then does not start where this
    // client stands.
    let (_, dave_id) = joiner(&srv, "dave", &room).await;
    let msg = ch
        .wait_for(
            WAIT,
            |m| matches!(m, ServerMessage::RoomState { room } if has(room, &dave_id)),
        )
        .await
        .unwrap();
    let ServerMessage::RoomState { room: view } = msg else {
        unreachable!()
    };
    assert!(
        has(&view, &carol_id),
        "the resynced view holds the change whose delta was lost"
    );
    assert_eq!(view, host.room(&room.id).await.unwrap());

    // And deltas flow again after the resync.
    carol.room_action(&room.id, "leave").await.unwrap();
    let msg = ch
        .wait_for(
            WAIT,
            |m| matches!(m, ServerMessage::RoomState { room } if !has(room, &carol_id)),
        )
        .await
        .unwrap();
    let ServerMessage::RoomState { room: view } = msg else {
        unreachable!()
    };
    assert_eq!(view, host.room(&room.id).await.unwrap());
    srv.stop().await;
}

/// The audience page by page, in order of joining, with a search; and
/// every malformed query a typed 400.
async fn audience_pages(db: Db) {
    use sotto_proto::api::AudienceQuery;
    let srv = TestServer::start(db).await;
    let (host, room) = hosted_room(&srv, "host", "Pages", RoomKind::Open).await;
    let mut joined = Vec::new();
    let mut first = None;
    for i in 0..25 {
        let name = if i % 5 == 0 {
            format!("zed{i}")
        } else {
            format!("amy{i}")
        };
        let (c, id) = joiner(&srv, &name, &room).await;
        joined.push(id);
        first.get_or_insert(c);
    }
    // The first to join goes on stage: no longer in the audience.
    let first = first.unwrap();
    host.member_action(&room.id, &joined[0], "invite-to-stage")
        .await
        .unwrap();
    first.room_action(&room.id, "accept-stage").await.unwrap();
    joined.remove(0);

    let mut seen = Vec::new();
    let mut query = AudienceQuery {
        limit: Some(10),
        ..Default::default()
    };
    let mut pages = 0;
    loop {
        let page = host.audience(&room.id, &query).await.unwrap();
        pages += 1;
        assert_eq!(page.total, 24);
        assert!(page.members.len() <= 10);
        seen.extend(page.members.iter().map(|m| m.user_id.clone()));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, joined, "the whole audience, in order of joining");

    // Search: by the start of a name, case-insensitive; % and _ are literal.
    let page = host
        .audience(
            &room.id,
            &AudienceQuery {
                q: Some("ZED".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.total, 4,
        "zed5, zed10, zed15, zed20 (zed0 is on stage)"
    );
    assert!(page.members.iter().all(|m| m.username.starts_with("zed")));
    assert!(page.next.is_none());
    for q in ["%", "_", "amy1_"] {
        let page = host
            .audience(
                &room.id,
                &AudienceQuery {
                    q: Some(q.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.total, 0, "{q} matches only itself");
    }

    // Malformed queries: typed 400s.
    let http = common::raw_http();
    let token = host.token().unwrap().to_string();
    for bad in [
        "limit=0",
        "limit=201",
        "limit=ten",
        "after=-1",
        "after=x",
        "q=",
        "colour=blue",
    ] {
        let r = http
            .get(format!(
                "{}/api/rooms/{}/audience?{bad}",
                srv.url, room.id.0
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "malformed_request", "{bad}: {body}");
    }
    // Someone who may not enter a closed room may not read its audience.
    let (_, closed) = hosted_room(&srv, "closer", "Closed", RoomKind::Closed).await;
    let (outsider, _) = srv.user("outsider").await;
    let r = outsider
        .audience(&closed.id, &AudienceQuery::default())
        .await;
    assert!(r.is_err(), "{r:?}");
    srv.stop().await;
}

#[tokio::test]
async fn audience_pages_sqlite() {
    audience_pages(Db::Sqlite).await;
}

#[tokio::test]
async fn audience_pages_postgres() {
    audience_pages(Db::Postgres).await;
}

/// Hands form a queue: who raised first comes first, a hand lowered and
/// raised again goes to the back, and the queue travels in the deltas.
#[tokio::test]
async fn hands_are_a_queue() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (host, room) = hosted_room(&srv, "host", "Hands", RoomKind::Open).await;
    let mut people = Vec::new();
    for name in ["ann", "ben", "cat"] {
        people.push(joiner(&srv, name, &room).await);
    }
    let (mut ch, mut view, _, _) = watching(&host, &room).await;

    // Joined ann, ben, cat; hands go up cat, ann, ben; then ann lowers
    // and raises again.
    for (i, action) in [
        (2, "raise-hand"),
        (0, "raise-hand"),
        (1, "raise-hand"),
        (0, "lower-hand"),
        (0, "raise-hand"),
    ] {
        people[i].0.room_action(&room.id, action).await.unwrap();
        let (msg, _) = next_room_frame(&mut ch, &mut view).await;
        assert!(matches!(msg, ServerMessage::RoomDelta(_)), "{msg:?}");
    }
    let queue = |v: &RoomView| {
        let mut hands: Vec<&MemberView> = v.members.iter().filter(|m| m.hand_raised).collect();
        assert!(hands.iter().all(|m| m.hand_order.is_some()));
        hands.sort_by_key(|m| m.hand_order);
        hands
            .into_iter()
            .map(|m| m.username.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(queue(&view), ["cat", "ben", "ann"]);
    let server = host.room(&room.id).await.unwrap();
    assert_eq!(view, server, "the queue built from deltas is the server's");
    // A hand that went down is out of the queue.
    people[1]
        .0
        .room_action(&room.id, "lower-hand")
        .await
        .unwrap();
    next_room_frame(&mut ch, &mut view).await;
    assert_eq!(queue(&view), ["cat", "ann"]);
    let ben = view
        .members
        .iter()
        .find(|m| m.user_id == people[1].1)
        .unwrap();
    assert_eq!(ben.hand_order, None);
    assert_eq!(view, host.room(&room.id).await.unwrap());
    srv.stop().await;
}

/// Frames `ch` receives within `quiet` (each applied to `view`), with
/// their sizes.
async fn frames_within(
    ch: &mut Channel,
    view: &mut RoomView,
    quiet: Duration,
) -> Vec<(ServerMessage, usize)> {
    let until = tokio::time::Instant::now() + quiet;
    let mut got = Vec::new();
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return got;
        }
        match ch.next_frame(left).await {
            Ok((msg, bytes)) => {
                match &msg {
                    ServerMessage::RoomDelta(d) => view.apply(d).expect("deltas chain"),
                    ServerMessage::RoomState { room } => *view = room.clone(),
                    _ => continue,
                }
                got.push((msg, bytes));
            }
            Err(_) => return got,
        }
    }
}

/// A room of more listeners than its view shows: a listener is sent the
/// stage and the first listeners with a count; joins beyond those reach it
/// as counts, coalesced (at most one a second), each ≤ 200 B; a hand or an
/// invitation does not reach it at all; a stage change reaches it as one
/// small delta; the stage is sent everyone.
#[tokio::test]
async fn a_large_audience_is_a_count_for_listeners() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (host, room) = hosted_room(&srv, "host", "Large", RoomKind::Open).await;
    let mut lis = Vec::new();
    for i in 0..AUDIENCE_IN_VIEW + 5 {
        lis.push(joiner(&srv, &format!("lis{i}"), &room).await);
    }
    let (bob, _) = joiner(&srv, "bob", &room).await;
    let listeners = AUDIENCE_IN_VIEW + 6;
    let (mut ch, mut view, first, whole) = watching(&bob, &room).await;
    assert!(matches!(first, ServerMessage::RoomState { .. }));
    assert_eq!(view.audience_count as usize, listeners);
    assert_eq!(
        view.members.len(),
        1 + AUDIENCE_IN_VIEW,
        "host and the first listeners"
    );
    assert_eq!(
        view.audience_unshown() as usize,
        listeners - AUDIENCE_IN_VIEW
    );
    let (mut host_ch, mut host_view, _, host_whole) = watching(&host, &room).await;
    assert_eq!(
        host_view.members.len(),
        1 + listeners,
        "the stage is sent every listener"
    );

    // Five joins at once: counts for bob, coalesced; members for the host.
    let mut late = Vec::new();
    for i in 0..5 {
        late.push(joiner(&srv, &format!("late{i}"), &room).await);
    }
    let frames = frames_within(&mut ch, &mut view, Duration::from_millis(2_500)).await;
    assert!(
        (1..=3).contains(&frames.len()),
        "5 joins reach a listener as 1 to 3 counts (one a second), not {}",
        frames.len()
    );
    for (msg, bytes) in &frames {
        let ServerMessage::RoomDelta(d) = msg else {
            panic!("a join beyond the view is a count: {msg:?}")
        };
        assert!(d.changes.is_empty() && d.audience_count.is_some());
        assert!(*bytes <= 200, "a count is {bytes} B");
    }
    assert_eq!(view.audience_count as usize, listeners + 5);
    let join_bytes = frames.iter().map(|(_, b)| b).sum::<usize>();
    let host_frames = frames_within(&mut host_ch, &mut host_view, Duration::from_millis(500)).await;
    assert_eq!(host_view.members.len(), 1 + listeners + 5);
    assert!(!host_frames.is_empty());

    // A hand from a listener bob does not see: nothing reaches bob, the
    // stage sees it, carol is told her own.
    let (carol, carol_id) = &late[4];
    let mut carol_ch = Channel::connect(carol).await.unwrap();
    carol_ch.subscribe(&room.id).await.unwrap();
    let mine = told_you(&mut carol_ch, WAIT)
        .await
        .expect("carol's own entry");
    assert!(view.member(carol_id).is_none() && !mine.hand_raised);
    carol.room_action(&room.id, "raise-hand").await.unwrap();
    assert!(
        told_you(&mut carol_ch, WAIT)
            .await
            .is_some_and(|m| m.hand_raised)
    );
    next_room_frame(&mut host_ch, &mut host_view).await;
    assert!(host_view.member(carol_id).is_some_and(|m| m.hand_raised));
    let hand_bytes: usize = frames_within(&mut ch, &mut view, Duration::from_millis(1_500))
        .await
        .iter()
        .map(|(_, b)| b)
        .sum();
    // Onto the stage: the invitation reaches nobody but carol and the stage.
    host.member_action(&room.id, carol_id, "invite-to-stage")
        .await
        .unwrap();
    assert!(
        told_you(&mut carol_ch, WAIT)
            .await
            .is_some_and(|m| m.invited_to_stage)
    );
    let invite_bytes: usize = frames_within(&mut ch, &mut view, Duration::from_millis(1_500))
        .await
        .iter()
        .map(|(_, b)| b)
        .sum();
    assert_eq!(
        (hand_bytes, invite_bytes),
        (0, 0),
        "nothing for other listeners"
    );
    carol.room_action(&room.id, "accept-stage").await.unwrap();
    let (_, stage_bytes) = next_room_frame(&mut ch, &mut view).await;
    assert!(
        view.member(carol_id)
            .is_some_and(|m| m.role == Role::Speaker)
    );
    // A listener bob sees comes on stage: one small change; nobody moves
    // up into the view in their place.
    let shown = view.listeners_shown();
    let (first, first_id) = &lis[0];
    assert!(
        view.member(first_id).is_some(),
        "the first to join is shown"
    );
    host.member_action(&room.id, first_id, "invite-to-stage")
        .await
        .unwrap();
    first.room_action(&room.id, "accept-stage").await.unwrap();
    let (msg, shown_stage_bytes) = next_room_frame(&mut ch, &mut view).await;
    let ServerMessage::RoomDelta(d) = &msg else {
        panic!("a stage change is a delta: {msg:?}")
    };
    assert_eq!(d.changes.len(), 1, "{d:?}");
    assert_eq!(view.listeners_shown(), shown - 1);
    let more = frames_within(&mut ch, &mut view, Duration::from_millis(1_500)).await;
    assert!(
        more.is_empty(),
        "one frame for a stage change: then {more:?}"
    );
    // Bob's view is the one the server serves to a new subscriber.
    let (again, fresh, _, _) = watching(&bob, &room).await;
    assert_eq!(view, fresh);
    again.close().await;
    // A shown listener's stage change is one `set` and the new count
    // (~217 B: the 200 B is missed by the envelope's and the
    // count's few bytes); an unshown one's brings their whole entry (names
    // and id).
    assert!(shown_stage_bytes <= 240, "{shown_stage_bytes} B: {msg:?}");
    assert!(stage_bytes <= 400, "{stage_bytes} B");
    eprintln!(
        "{listeners} listeners: a listener's first view {whole} B (the stage's {host_whole} B); \
         5 joins cost it {join_bytes} B in {} frame(s); a hand {hand_bytes} B, \
         an invitation {invite_bytes} B, taking the stage {stage_bytes} B (unshown) \
         and {shown_stage_bytes} B (shown)",
        frames.len()
    );
    ch.close().await;
    host_ch.close().await;
    srv.stop().await;
}
