//! Room deltas: applying `new.diff_from(old)` to `old` gives `new`, for any
//! two member lists; a delta that does not start where the view stands, or
//! does not fit it, is refused (the client then asks for a full view).

use proptest::prelude::*;
use sotto_proto::channel::{ServerEnvelope, ServerMessage};
use sotto_proto::room::{
    AUDIENCE_IN_VIEW, DeltaError, MAX_DELTA_CHANGES, MemberChange, MemberView, Role, RoomKind,
    RoomView,
};
use sotto_proto::{RoomId, UserId};

fn user(n: u8) -> UserId {
    UserId::from_bytes([n; 16])
}

fn member(n: u8, role: Role, hand: bool, muted: bool) -> MemberView {
    MemberView {
        user_id: user(n),
        username: format!("user{n}"),
        display_name: format!("User {n}"),
        role,
        hand_raised: hand,
        muted,
        invited_to_stage: false,
        hand_order: hand.then_some(i64::from(n)),
    }
}

fn view(version: i64, members: Vec<MemberView>) -> RoomView {
    RoomView {
        id: RoomId::from_bytes([7; 16]),
        title: "A room".into(),
        description: String::new(),
        kind: RoomKind::Open,
        ended: false,
        version,
        audience_count: u32::try_from(members.iter().filter(|m| m.role == Role::Listener).count())
            .unwrap(),
        members,
    }
}

fn role(r: u8) -> Role {
    Role::ALL[usize::from(r) % 4]
}

/// A member list: distinct users, in any order, any role and flags, a
/// raised hand anywhere in the queue.
fn members() -> impl Strategy<Value = Vec<MemberView>> {
    proptest::collection::vec(
        (0u8..40, 0u8..4, any::<bool>(), any::<bool>(), 0i64..4),
        0..30,
    )
    .prop_map(|raw| {
        let mut seen = std::collections::HashSet::new();
        raw.into_iter()
            .filter(|(n, ..)| seen.insert(*n))
            .map(|(n, r, h, m, o)| MemberView {
                hand_order: h.then_some(o),
                ..member(n, role(r), h, m)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn a_delta_turns_the_old_view_into_the_new_one(old in members(), new in members(), ended in any::<bool>()) {
        let old = view(3, old);
        let mut new = view(4, new);
        new.ended = ended;
        match new.diff_from(&old) {
            Some(delta) => {
                prop_assert!(delta.changes.len() <= MAX_DELTA_CHANGES);
                let mut applied = old.clone();
                applied.apply(&delta).expect("a delta applies to the view it was made from");
                prop_assert_eq!(&applied, &new);
                // It survives the wire.
                let text = serde_json::to_string(&ServerEnvelope { v: 1, msg: ServerMessage::RoomDelta(delta.clone()) }).unwrap();
                let back = sotto_proto::channel::parse_server_message(&text).unwrap();
                prop_assert_eq!(back, ServerMessage::RoomDelta(delta));
            }
            None => prop_assert!(false, "30 members never need more than {} changes", MAX_DELTA_CHANGES),
        }
    }

    #[test]
    fn deltas_chain(a in members(), b in members(), c in members()) {
        let (a, b, c) = (view(1, a), view(2, b), view(5, c));
        let mut v = a.clone();
        v.apply(&b.diff_from(&a).unwrap()).unwrap();
        v.apply(&c.diff_from(&b).unwrap()).unwrap();
        prop_assert_eq!(v, c);
    }
}

#[test]
fn one_join_is_one_change_however_big_the_room() {
    let mut all: Vec<MemberView> = vec![member(0, Role::Host, false, false)];
    all.extend((1..200).map(|n| member(n, Role::Listener, false, false)));
    let old = view(10, all.clone());
    all.push(member(200, Role::Listener, false, false));
    let new = view(11, all);
    let delta = new.diff_from(&old).unwrap();
    assert_eq!(delta.changes.len(), 1);
    assert!(matches!(
        &delta.changes[0],
        MemberChange::Put { at: 200, .. }
    ));
    assert!(delta.about.is_none());
}

#[test]
fn a_promotion_moves_one_member() {
    let old = view(
        1,
        vec![
            member(0, Role::Host, false, false),
            member(1, Role::Listener, true, false),
            member(2, Role::Listener, false, false),
            member(3, Role::Listener, false, false),
        ],
    );
    let mut new = old.clone();
    new.version = 2;
    let promoted = new.members.remove(2);
    new.members.insert(
        1,
        MemberView {
            role: Role::Speaker,
            ..promoted
        },
    );
    let delta = new.diff_from(&old).unwrap();
    assert_eq!(
        delta.changes,
        vec![MemberChange::Set {
            user_id: user(2),
            at: Some(1),
            role: Some(Role::Speaker),
            hand_raised: None,
            muted: None,
            invited_to_stage: None,
            hand_order: None,
        }],
        "a move and a role, no names"
    );
    let mut applied = old;
    applied.apply(&delta).unwrap();
    assert_eq!(applied, new);
}

#[test]
fn a_missed_delta_is_a_gap_and_a_stale_one_is_refused() {
    let v1 = view(1, vec![member(0, Role::Host, false, false)]);
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.members.push(member(1, Role::Listener, false, false));
    let mut v3 = v2.clone();
    v3.version = 3;
    v3.members[1].hand_raised = true;
    let d12 = v2.diff_from(&v1).unwrap();
    let d23 = v3.diff_from(&v2).unwrap();

    // The client holds v1 and missed d12.
    let mut client = v1.clone();
    assert_eq!(
        client.apply(&d23),
        Err(DeltaError::Gap { have: 1, from: 2 })
    );
    // Nothing was changed by the refusal.
    assert_eq!(client, v1);
    client.apply(&d12).unwrap();
    client.apply(&d23).unwrap();
    assert_eq!(client, v3);
    // Applied twice: refused.
    assert!(matches!(client.apply(&d23), Err(DeltaError::Gap { .. })));
    // Not newer, or another room: no delta.
    assert!(v1.diff_from(&v3).is_none());
    let mut other = v3.clone();
    other.id = RoomId::from_bytes([8; 16]);
    assert!(other.diff_from(&v2).is_none());
}

#[test]
fn a_delta_that_does_not_fit_is_refused() {
    let v1 = view(1, vec![member(0, Role::Host, false, false)]);
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.members.push(member(1, Role::Listener, false, false));
    let mut delta = v2.diff_from(&v1).unwrap();
    // A "left" for someone the view does not hold.
    delta
        .changes
        .insert(0, MemberChange::Left { user_id: user(9) });
    let mut client = v1.clone();
    assert_eq!(client.apply(&delta), Err(DeltaError::Mismatch { index: 0 }));
    // A position past the end.
    let delta = sotto_proto::room::RoomDelta {
        changes: vec![MemberChange::Put {
            at: 5,
            member: member(1, Role::Listener, false, false),
        }],
        ..v2.diff_from(&v1).unwrap()
    };
    let mut client = v1;
    assert_eq!(client.apply(&delta), Err(DeltaError::Mismatch { index: 0 }));
}

#[test]
fn too_many_changes_send_the_full_view() {
    let old = view(
        1,
        (0..100)
            .map(|n| member(n, Role::Listener, false, false))
            .collect(),
    );
    let new = view(
        2,
        (100..200)
            .map(|n| member(n, Role::Listener, false, false))
            .collect(),
    );
    assert!(new.diff_from(&old).is_none());
}

#[test]
fn a_raised_hand_is_one_flag() {
    let old = view(
        1,
        vec![
            member(0, Role::Host, false, false),
            member(1, Role::Listener, false, false),
        ],
    );
    let mut new = old.clone();
    new.version = 2;
    new.members[1].hand_raised = true;
    new.members[1].hand_order = Some(2);
    let delta = new.diff_from(&old).unwrap();
    assert_eq!(
        delta.changes,
        vec![MemberChange::Set {
            user_id: user(1),
            at: None,
            role: None,
            hand_raised: Some(true),
            muted: None,
            invited_to_stage: None,
            hand_order: Some(2),
        }]
    );
    let text = serde_json::to_string(&delta.changes[0]).unwrap();
    assert!(!text.contains("user1") && !text.contains("muted"), "{text}");
    // A rename is a whole entry again.
    let mut renamed = new.clone();
    renamed.version = 3;
    renamed.members[1].display_name = "Someone else".into();
    let delta = renamed.diff_from(&new).unwrap();
    assert!(matches!(
        &delta.changes[..],
        [MemberChange::Put { at: 1, .. }]
    ));
}

/// The light view (what listeners are sent): the stage and the first
/// `AUDIENCE_IN_VIEW` listeners, in the room's order, with nobody's hand or
/// invitation, and the count of the whole audience; a room that fits is
/// shown whole. Over HTTP the stage also sees every hand and invitation,
/// a listener their own.
#[test]
fn the_light_view_shows_the_stage_and_the_first_listeners_and_no_hands() {
    let mut all = vec![member(0, Role::Host, false, false)];
    all.push(member(1, Role::Speaker, false, true));
    for n in 2..(AUDIENCE_IN_VIEW as u8 + 20) {
        // Every 7th listener has a hand up (some of them beyond the first page).
        all.push(member(n, Role::Listener, n % 7 == 0, false));
    }
    let mut invited = member(200, Role::Listener, false, false);
    invited.invited_to_stage = true;
    all.push(invited);
    let full = view(9, all.clone());
    let light = full.light();
    assert_eq!(light.audience_count, full.audience_count);
    assert_eq!(light.version, full.version);
    assert_eq!(light.members.len(), 2 + AUDIENCE_IN_VIEW);
    assert!(
        light
            .members
            .iter()
            .all(|m| !m.hand_raised && !m.invited_to_stage && m.hand_order.is_none()),
        "a listener sees nobody's hand or invitation"
    );
    // The same order as the room's; the speaker's mute still shows.
    let order: Vec<&UserId> = all
        .iter()
        .map(|m| &m.user_id)
        .take(2 + AUDIENCE_IN_VIEW)
        .collect();
    let shown: Vec<&UserId> = light.members.iter().map(|m| &m.user_id).collect();
    assert_eq!(order, shown);
    assert!(light.members[1].muted);
    assert_eq!(
        light.audience_unshown() as usize,
        full.audience_count as usize - AUDIENCE_IN_VIEW
    );
    // A room that fits is shown whole (hands hidden).
    let small = view(9, all[..AUDIENCE_IN_VIEW].to_vec());
    let hidden: Vec<MemberView> = small.members.iter().map(|m| m.as_audience_sees()).collect();
    assert_eq!(small.light(), view(9, hidden));
    assert_eq!(small.light().audience_unshown(), 0);

    // A join beyond the shown listeners changes the light view's count only.
    let mut bigger = all.clone();
    bigger.push(member(201, Role::Listener, false, false));
    let after = view(10, bigger).light();
    let d = after.diff_from(&light).unwrap();
    assert!(d.changes.is_empty() && d.about.is_none());
    assert_eq!(d.audience_count, Some(full.audience_count + 1));

    // Over HTTP: the host sees the first page and every later hand and
    // invitation; a listener beyond the first page sees the first page and
    // themselves, their own hand included, and nobody else's.
    let host = full.seen_by(&user(0));
    let flagged_later = all
        .iter()
        .filter(|m| m.role == Role::Listener)
        .skip(AUDIENCE_IN_VIEW)
        .filter(|m| m.hand_raised || m.invited_to_stage)
        .count();
    assert!(
        flagged_later >= 2,
        "hands and an invitation beyond the first page"
    );
    assert_eq!(host.members.len(), 2 + AUDIENCE_IN_VIEW + flagged_later);
    assert!(host.member(&user(200)).unwrap().invited_to_stage);
    let late = AUDIENCE_IN_VIEW as u8 + 6; // beyond the first page, a multiple of 7: hand up
    assert_eq!(late % 7, 0);
    let seen = full.seen_by(&user(late));
    assert_eq!(seen.members.len(), 2 + AUDIENCE_IN_VIEW + 1);
    assert!(seen.member(&user(late)).unwrap().hand_raised);
    assert!(
        seen.members
            .iter()
            .filter(|m| m.user_id != user(late))
            .all(|m| !m.hand_raised)
    );
}

/// The light view as it follows a room of more than `AUDIENCE_IN_VIEW`
/// listeners (`light_after`): whoever it shows stays shown, so a shown
/// listener going on stage or leaving costs that one change and no second
/// one for whoever would have moved up; newcomers fill free places; the
/// deltas between successive views always apply; and once the room fits
/// it is shown whole again.
#[test]
fn the_light_view_keeps_whom_it_shows() {
    let listeners = AUDIENCE_IN_VIEW as u8 + 30;
    let mut all = vec![member(0, Role::Host, false, false)];
    all.extend((1..=listeners).map(|n| member(n, Role::Listener, false, false)));
    let mut full = view(1, all);
    let mut light = full.light();
    let step = |full: &mut RoomView, light: &mut RoomView, change: &dyn Fn(&mut RoomView)| {
        let mut next = full.clone();
        change(&mut next);
        next.version += 1;
        next.audience_count = next.listeners_shown();
        let delta = next.diff_from(full).unwrap();
        let next_light = next.light_after(light, Some(&delta));
        let light_delta = next_light.diff_from(light).unwrap();
        let mut applied = light.clone();
        applied.apply(&light_delta).unwrap();
        assert_eq!(applied, next_light);
        *full = next;
        *light = next_light;
        light_delta
    };
    // The 3rd listener (shown) comes on stage: one change, no newcomer shown.
    let d = step(&mut full, &mut light, &|v| {
        let at = v.members.iter().position(|m| m.user_id == user(3)).unwrap();
        let mut m = v.members.remove(at);
        m.role = Role::Speaker;
        v.members.insert(1, m);
    });
    assert_eq!(d.changes.len(), 1, "{d:?}");
    assert_eq!(light.listeners_shown() as usize, AUDIENCE_IN_VIEW - 1);
    // A shown listener leaves: one change.
    let d = step(&mut full, &mut light, &|v| {
        v.members.retain(|m| m.user_id != user(4))
    });
    assert_eq!(d.changes.len(), 1, "{d:?}");
    assert_eq!(light.listeners_shown() as usize, AUDIENCE_IN_VIEW - 2);
    // An unshown listener raises a hand: the light view does not change.
    let d = step(&mut full, &mut light, &|v| {
        let m = v
            .members
            .iter_mut()
            .find(|m| m.user_id == user(listeners))
            .unwrap();
        m.hand_raised = true;
        m.hand_order = Some(99);
    });
    assert!(d.changes.is_empty(), "{d:?}");
    // Two newcomers: both shown (two free places), a third is not.
    for n in [200u8, 201, 202] {
        step(&mut full, &mut light, &|v| {
            v.members.push(member(n, Role::Listener, false, false))
        });
    }
    assert!(light.member(&user(200)).is_some() && light.member(&user(201)).is_some());
    assert!(light.member(&user(202)).is_none());
    assert_eq!(light.listeners_shown() as usize, AUDIENCE_IN_VIEW);
    assert_eq!(light.audience_count, full.audience_count);
    // Down to `AUDIENCE_IN_VIEW` listeners: shown whole.
    let d = step(&mut full, &mut light, &|v| {
        let mut left = 0;
        v.members.retain(|m| {
            let go = m.role == Role::Listener && m.user_id.0 < user(40).0 && left < 33;
            left += usize::from(go);
            !go
        })
    });
    assert!(!d.changes.is_empty());
    assert!(full.audience_count as usize <= AUDIENCE_IN_VIEW);
    assert_eq!(light, full.light());
    assert_eq!(light.audience_unshown(), 0);
}
