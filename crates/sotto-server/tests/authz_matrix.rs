//! Every room action as every role (and as a non-member), on every target:
//! exactly the permitted ones succeed. The permitted list is written out
//! below by hand, not computed from the server's rules.

mod common;

use common::{Db, TestServer};
use sotto_client::Client;
use sotto_proto::UserId;
use sotto_proto::room::{Role, RoomKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Host,
    Moderator,
    Speaker,
    Listener,
    Outsider,
}

const ACTORS: [Who; 5] = [
    Who::Host,
    Who::Moderator,
    Who::Speaker,
    Who::Listener,
    Who::Outsider,
];
const TARGETS: [Who; 4] = [Who::Host, Who::Moderator, Who::Speaker, Who::Listener];

const SELF_ACTIONS: [&str; 6] = [
    "raise-hand",
    "lower-hand",
    "accept-stage",
    "decline-stage",
    "end",
    "leave",
];
const MEMBER_ACTIONS: [&str; 7] = [
    "invite-to-stage",
    "move-to-audience",
    "mute",
    "unmute",
    "make-moderator",
    "remove",
    "ban",
];

use Who::*;

/// Self actions that succeed. (accept/decline run after the listener was
/// invited to the stage.)
fn self_allowed(action: &str, actor: Who) -> bool {
    let allowed: &[Who] = match action {
        "raise-hand" => &[Listener],
        "lower-hand" => &[Host, Moderator, Speaker, Listener],
        "accept-stage" => &[Listener],
        "decline-stage" => &[Listener],
        "end" => &[Host, Moderator],
        "leave" => &[Host, Moderator, Speaker, Listener],
        _ => unreachable!(),
    };
    allowed.contains(&actor)
}

/// Member actions that succeed: (actor, target), `None` target = on themselves.
fn member_allowed(action: &str, actor: Who, target: Option<Who>) -> bool {
    let allowed: &[(Who, Option<Who>)] = match action {
        "invite-to-stage" => &[(Host, Some(Listener)), (Moderator, Some(Listener))],
        "move-to-audience" => &[
            (Host, Some(Moderator)),
            (Host, Some(Speaker)),
            (Moderator, Some(Speaker)),
            (Moderator, None),
            (Speaker, None),
        ],
        "mute" => &[
            (Host, Some(Moderator)),
            (Host, Some(Speaker)),
            (Moderator, Some(Speaker)),
            (Host, None),
            (Moderator, None),
            (Speaker, None),
        ],
        "unmute" => &[(Host, None), (Moderator, None), (Speaker, None)],
        "make-moderator" => &[(Host, Some(Speaker)), (Moderator, Some(Speaker))],
        "remove" | "ban" => &[
            (Host, Some(Moderator)),
            (Host, Some(Speaker)),
            (Host, Some(Listener)),
            (Moderator, Some(Speaker)),
            (Moderator, Some(Listener)),
        ],
        _ => unreachable!(),
    };
    allowed.contains(&(actor, target))
}

struct Cast {
    clients: Vec<(Who, Client, UserId)>,
}

impl Cast {
    fn get(&self, who: Who) -> (&Client, &UserId) {
        let (_, c, id) = self.clients.iter().find(|(w, _, _)| *w == who).unwrap();
        (c, id)
    }

    /// A new room with one member in each role; the outsider stays out.
    async fn room(&self) -> sotto_proto::RoomId {
        let (host, _) = self.get(Host);
        let room = host
            .create_room("Matrix", RoomKind::Open, None)
            .await
            .unwrap()
            .id;
        for who in [Moderator, Speaker, Listener] {
            let (c, id) = self.get(who);
            c.join(&room).await.unwrap();
            if who != Listener {
                host.member_action(&room, id, "invite-to-stage")
                    .await
                    .unwrap();
                c.room_action(&room, "accept-stage").await.unwrap();
            }
        }
        let (_, mod_id) = self.get(Moderator);
        host.member_action(&room, mod_id, "make-moderator")
            .await
            .unwrap();
        let view = host.room(&room).await.unwrap();
        for (who, role) in [
            (Host, Role::Host),
            (Moderator, Role::Moderator),
            (Speaker, Role::Speaker),
            (Listener, Role::Listener),
        ] {
            let (_, id) = self.get(who);
            assert_eq!(
                view.members.iter().find(|m| &m.user_id == id).unwrap().role,
                role
            );
        }
        room
    }
}

async fn matrix(db: Db) {
    let srv = TestServer::start(db).await;
    let mut clients = Vec::new();
    for (who, name) in [
        (Host, "mx_host"),
        (Moderator, "mx_mod"),
        (Speaker, "mx_speaker"),
        (Listener, "mx_listener"),
        (Outsider, "mx_outsider"),
    ] {
        let (c, _) = srv.user(name).await;
        let id = c.me().await.unwrap().id;
        clients.push((who, c, id));
    }
    let cast = Cast { clients };
    let mut checked = 0;
    let mut failures = Vec::new();

    for action in SELF_ACTIONS {
        for actor in ACTORS {
            let room = cast.room().await;
            if matches!(action, "accept-stage" | "decline-stage") {
                let (host, _) = cast.get(Host);
                let (_, l) = cast.get(Listener);
                host.member_action(&room, l, "invite-to-stage")
                    .await
                    .unwrap();
            }
            let (c, _) = cast.get(actor);
            let result = c.room_action(&room, action).await;
            let expected = self_allowed(action, actor);
            check(
                &mut failures,
                format!("{actor:?} {action}"),
                expected,
                &result,
            );
            checked += 1;
        }
    }

    for action in MEMBER_ACTIONS {
        for actor in ACTORS {
            for target in TARGETS.iter().map(|t| Some(*t)).chain([None]) {
                if target == Some(actor) || (actor == Outsider && target.is_none()) {
                    continue; // "on themselves" is the `None` case
                }
                let room = cast.room().await;
                let (c, self_id) = cast.get(actor);
                let target_id = match target {
                    Some(t) => cast.get(t).1.clone(),
                    None => self_id.clone(),
                };
                if action == "unmute" {
                    // Unmuting needs someone muted: the host mutes the target first.
                    let (host, host_id) = cast.get(Host);
                    let who = target.unwrap_or(actor);
                    if matches!(who, Moderator | Speaker) || (who == Host && &target_id == host_id)
                    {
                        host.member_action(&room, &target_id, "mute").await.unwrap();
                    }
                }
                let result = c.member_action(&room, &target_id, action).await;
                let expected = member_allowed(action, actor, target);
                check(
                    &mut failures,
                    format!("{actor:?} {action} {target:?}"),
                    expected,
                    &result,
                );
                checked += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cases wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 150, "only {checked} cases ran");
    srv.stop().await;
}

fn check<T: std::fmt::Debug>(
    failures: &mut Vec<String>,
    case: String,
    expected: bool,
    result: &Result<T, sotto_client::ClientError>,
) {
    match (expected, result) {
        (true, Ok(_)) => {}
        (false, Err(sotto_client::ClientError::Api { status, .. }))
            if (400..500).contains(status) => {}
        (true, Err(e)) => failures.push(format!("{case}: expected success, got {e}")),
        (false, Ok(_)) => failures.push(format!("{case}: expected refusal, but it succeeded")),
        (false, Err(e)) => failures.push(format!("{case}: expected a 4xx refusal, got {e}")),
    }
}

both_backends!(authorization_matrix, super::matrix);
