//! The rules of a room, with no IO: who may do what to whom, and what
//! happens to the stage afterwards. The store loads the rows, asks [`plan`],
//! writes the [`Change`], then asks [`succession`] — all in one transaction.
//!
//! Rank: host > moderator > speaker > listener. A moderating action needs the
//! actor to moderate (host or moderator) and to rank strictly above the target.

use serde::Deserialize;
use sotto_proto::room::Role;
use sotto_proto::{ErrorCode, UserId};
use utoipa::ToSchema;

/// Something a participant does in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Self: a listener asks to speak.
    RaiseHand,
    /// Self.
    LowerHand,
    /// Self: take the stage after a moderator's invitation.
    AcceptStage,
    /// Self: decline a moderator's invitation.
    DeclineStage,
    /// Self, moderators: end the room for everyone.
    End,
    /// Self.
    Leave,
    /// Moderators, on a listener.
    InviteToStage,
    /// Moderators on someone below them, or a speaker/moderator on themselves.
    MoveToAudience,
    /// Moderators on someone below them, or anyone on stage on themselves.
    Mute,
    /// Only on themselves.
    Unmute,
    /// Moderators, on a speaker.
    MakeModerator,
    /// Moderators on someone below them; they may come back.
    Remove,
    /// Moderators on someone below them; they cannot come back.
    Ban,
}

impl Action {
    pub const ALL: [Action; 13] = [
        Action::RaiseHand,
        Action::LowerHand,
        Action::AcceptStage,
        Action::DeclineStage,
        Action::End,
        Action::Leave,
        Action::InviteToStage,
        Action::MoveToAudience,
        Action::Mute,
        Action::Unmute,
        Action::MakeModerator,
        Action::Remove,
        Action::Ban,
    ];

    /// Whether the action names another participant.
    pub fn takes_target(self) -> bool {
        matches!(
            self,
            Action::InviteToStage
                | Action::MoveToAudience
                | Action::Mute
                | Action::Unmute
                | Action::MakeModerator
                | Action::Remove
                | Action::Ban
        )
    }

    /// The path segment of the HTTP route.
    pub fn route(self) -> &'static str {
        match self {
            Action::RaiseHand => "raise-hand",
            Action::LowerHand => "lower-hand",
            Action::AcceptStage => "accept-stage",
            Action::DeclineStage => "decline-stage",
            Action::End => "end",
            Action::Leave => "leave",
            Action::InviteToStage => "invite-to-stage",
            Action::MoveToAudience => "move-to-audience",
            Action::Mute => "mute",
            Action::Unmute => "unmute",
            Action::MakeModerator => "make-moderator",
            Action::Remove => "remove",
            Action::Ban => "ban",
        }
    }

    pub fn from_route(segment: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.route() == segment)
    }
}

/// A participant's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user_id: UserId,
    pub role: Role,
    pub hand_raised: bool,
    pub muted: bool,
    pub invited_to_stage: bool,
    /// Order of joining (the room's version when they joined).
    pub joined_seq: i64,
}

/// What to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Update(Member),
    Delete { user_id: UserId, ban: bool },
    EndRoom,
}

/// Decides what `action` by `actor` on `target` (the actor itself for
/// actions without a target) changes, or why it is refused.
pub fn plan(action: Action, actor: &Member, target: &Member) -> Result<Change, ErrorCode> {
    let is_self = actor.user_id == target.user_id;
    let mut next = target.clone();
    let moderating = |allow_self: bool| -> Result<(), ErrorCode> {
        if is_self && allow_self {
            return Ok(());
        }
        if !actor.role.moderates() {
            return Err(ErrorCode::NotPermitted);
        }
        if actor.role <= target.role {
            return Err(ErrorCode::TargetOutranksYou);
        }
        Ok(())
    };
    match action {
        Action::RaiseHand => {
            if actor.role.on_stage() {
                return Err(ErrorCode::AlreadyOnStage);
            }
            next.hand_raised = true;
        }
        Action::LowerHand => next.hand_raised = false,
        Action::AcceptStage => {
            if actor.role.on_stage() {
                return Err(ErrorCode::AlreadyOnStage);
            }
            if !actor.invited_to_stage {
                return Err(ErrorCode::NoStageInvitation);
            }
            next.role = Role::Speaker;
            next.invited_to_stage = false;
            next.hand_raised = false;
            next.muted = false;
        }
        Action::DeclineStage => {
            if !actor.invited_to_stage {
                return Err(ErrorCode::NoStageInvitation);
            }
            next.invited_to_stage = false;
        }
        Action::End => {
            if !actor.role.moderates() {
                return Err(ErrorCode::NotPermitted);
            }
            return Ok(Change::EndRoom);
        }
        Action::Leave => {
            return Ok(Change::Delete {
                user_id: actor.user_id.clone(),
                ban: false,
            });
        }
        Action::InviteToStage => {
            moderating(false)?;
            if target.role.on_stage() {
                return Err(ErrorCode::AlreadyOnStage);
            }
            next.invited_to_stage = true;
        }
        Action::MoveToAudience => {
            if is_self && actor.role == Role::Host {
                // The host hands over by leaving; the stage keeps a host.
                return Err(ErrorCode::NotPermitted);
            }
            moderating(true)?;
            if !target.role.on_stage() {
                return Err(ErrorCode::NotOnStage);
            }
            next.role = Role::Listener;
            next.muted = false;
            next.hand_raised = false;
            next.invited_to_stage = false;
        }
        Action::Mute => {
            moderating(true)?;
            if !target.role.on_stage() {
                return Err(ErrorCode::NotOnStage);
            }
            next.muted = true;
        }
        Action::Unmute => {
            if !is_self {
                return Err(ErrorCode::OnlySelf);
            }
            if !target.role.on_stage() {
                return Err(ErrorCode::NotOnStage);
            }
            next.muted = false;
        }
        Action::MakeModerator => {
            moderating(false)?;
            if target.role != Role::Speaker {
                return Err(ErrorCode::NotOnStage);
            }
            next.role = Role::Moderator;
        }
        Action::Remove | Action::Ban => {
            moderating(false)?;
            return Ok(Change::Delete {
                user_id: target.user_id.clone(),
                ban: action == Action::Ban,
            });
        }
    }
    Ok(Change::Update(next))
}

/// What the stage needs after a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Succession {
    /// It has a host.
    Settled,
    /// No host: this member (the longest-present moderator, else speaker) becomes host.
    Promote(UserId),
    /// Nobody is on stage: the room ends.
    End,
}

/// `stage` is everyone on the stage after the change.
pub fn succession(stage: &[Member]) -> Succession {
    if stage.iter().any(|m| m.role == Role::Host) {
        return Succession::Settled;
    }
    let earliest = |role: Role| {
        stage
            .iter()
            .filter(|m| m.role == role)
            .min_by_key(|m| m.joined_seq)
            .map(|m| m.user_id.clone())
    };
    match earliest(Role::Moderator).or_else(|| earliest(Role::Speaker)) {
        Some(user) => Succession::Promote(user),
        None => Succession::End,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u8, role: Role) -> Member {
        Member {
            user_id: UserId::from_bytes([n; 16]),
            role,
            hand_raised: false,
            muted: false,
            invited_to_stage: false,
            joined_seq: i64::from(n),
        }
    }

    #[test]
    fn moderators_act_only_below_themselves() {
        let host = member(1, Role::Host);
        let m1 = member(2, Role::Moderator);
        let m2 = member(3, Role::Moderator);
        let sp = member(4, Role::Speaker);
        assert_eq!(
            plan(Action::Mute, &m1, &host),
            Err(ErrorCode::TargetOutranksYou)
        );
        assert_eq!(
            plan(Action::Ban, &m1, &m2),
            Err(ErrorCode::TargetOutranksYou)
        );
        assert!(plan(Action::Ban, &host, &m1).is_ok());
        assert_eq!(
            plan(Action::Ban, &sp, &member(5, Role::Listener)),
            Err(ErrorCode::NotPermitted)
        );
    }

    #[test]
    fn stage_invitation_flow() {
        let host = member(1, Role::Host);
        let mut l = member(2, Role::Listener);
        assert_eq!(
            plan(Action::AcceptStage, &l, &l),
            Err(ErrorCode::NoStageInvitation)
        );
        let Ok(Change::Update(invited)) = plan(Action::InviteToStage, &host, &l) else {
            panic!("invite refused")
        };
        assert!(invited.invited_to_stage);
        l = invited;
        let Ok(Change::Update(speaker)) = plan(Action::AcceptStage, &l, &l) else {
            panic!("accept refused")
        };
        assert_eq!(speaker.role, Role::Speaker);
        assert!(!speaker.invited_to_stage);
    }

    #[test]
    fn only_self_unmutes() {
        let host = member(1, Role::Host);
        let mut sp = member(2, Role::Speaker);
        sp.muted = true;
        assert_eq!(plan(Action::Unmute, &host, &sp), Err(ErrorCode::OnlySelf));
        assert!(matches!(plan(Action::Unmute, &sp, &sp), Ok(Change::Update(m)) if !m.muted));
    }

    #[test]
    fn succession_prefers_moderators_then_speakers_then_ends() {
        let sp = member(2, Role::Speaker);
        let m = member(3, Role::Moderator);
        assert_eq!(
            succession(&[sp.clone(), m.clone()]),
            Succession::Promote(m.user_id.clone())
        );
        assert_eq!(
            succession(std::slice::from_ref(&sp)),
            Succession::Promote(sp.user_id.clone())
        );
        assert_eq!(succession(&[]), Succession::End);
        assert_eq!(
            succession(&[member(1, Role::Host), sp]),
            Succession::Settled
        );
    }

    #[test]
    fn routes_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_route(a.route()), Some(a));
        }
    }
}
