//! Rooms, roles and the live state of a room.

use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

use crate::ids::{RoomId, UserId};

/// Who may enter a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum RoomKind {
    /// Any signed-in user may listen.
    Open,
    /// People the room's host or a moderator follows may listen.
    Social,
    /// Only users the moderators invited.
    Closed,
}

impl RoomKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Open => "open",
            RoomKind::Social => "social",
            RoomKind::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(RoomKind::Open),
            "social" => Some(RoomKind::Social),
            "closed" => Some(RoomKind::Closed),
            _ => None,
        }
    }
}

/// A participant's role. Host, moderators and speakers are on the stage.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema, TS,
)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum Role {
    Listener,
    Speaker,
    Moderator,
    Host,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Host, Role::Moderator, Role::Speaker, Role::Listener];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Moderator => "moderator",
            Role::Speaker => "speaker",
            Role::Listener => "listener",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "host" => Some(Role::Host),
            "moderator" => Some(Role::Moderator),
            "speaker" => Some(Role::Speaker),
            "listener" => Some(Role::Listener),
            _ => None,
        }
    }

    pub fn on_stage(self) -> bool {
        self != Role::Listener
    }

    /// Host and moderators may moderate.
    pub fn moderates(self) -> bool {
        matches!(self, Role::Host | Role::Moderator)
    }
}

/// One participant as every other participant sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct MemberView {
    pub user_id: UserId,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub hand_raised: bool,
    /// Muted by a moderator or by themselves; only they may unmute.
    pub muted: bool,
    /// A moderator invited them to the stage and they have not answered yet.
    pub invited_to_stage: bool,
    /// While the hand is up: its place in the room's hand queue (the room's
    /// version when it went up; lower is earlier). Absent while it is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub hand_order: Option<i64>,
}

/// The whole live state of a room. The session channel sends it on
/// `subscribe`, then each change as a [`RoomDelta`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct RoomView {
    pub id: RoomId,
    pub title: String,
    pub description: String,
    pub kind: RoomKind,
    pub ended: bool,
    /// Increases with every change of the room; a client keeps the highest.
    #[ts(type = "number")]
    pub version: i64,
    /// By role (host, moderators, speakers, then the audience), each role in
    /// order of joining. In a room of more than [`AUDIENCE_IN_VIEW`]
    /// listeners, the audience here is partial (see [`RoomView::light`]):
    /// the rest is paged over HTTP (`GET /api/rooms/{id}/audience`).
    pub members: Vec<MemberView>,
    /// How many listeners (members in the audience) the room has, shown
    /// in `members` or not.
    #[serde(default)]
    pub audience_count: u32,
}

/// A live room in the hallway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct RoomSummary {
    pub id: RoomId,
    pub title: String,
    pub kind: RoomKind,
    /// Everyone on the stage, host first.
    pub stage: Vec<crate::api::UserSummary>,
    pub listener_count: u32,
    /// How many of the people on stage you follow.
    pub followed_on_stage: u32,
}

/// A room's title, description, kind and whether it ended: sent in a
/// [`RoomDelta`] when one of them changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct RoomAbout {
    pub title: String,
    pub description: String,
    pub kind: RoomKind,
    pub ended: bool,
}

/// One change of a room's member list, applied in order (see
/// [`RoomView::apply`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "op", rename_all = "snake_case")]
#[ts(export)]
pub enum MemberChange {
    /// This user is no longer in the room.
    Left { user_id: UserId },
    /// This member (newly joined, or renamed) now stands at index `at` of
    /// the member list; its old entry, if any, is removed first.
    Put { at: u32, member: MemberView },
    /// Some of this member's role and flags changed (the fields present),
    /// and if `at` is present it moved there (removed, then inserted at
    /// `at`). Smaller than a `put`: no names.
    Set {
        user_id: UserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        at: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        role: Option<Role>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        hand_raised: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        muted: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        invited_to_stage: Option<bool>,
        /// The hand's new place in the queue. A hand going down
        /// (`hand_raised: false`) leaves the queue.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional, type = "number")]
        hand_order: Option<i64>,
    },
}

/// The [`MemberChange::Set`] that turns `old` (standing elsewhere unless
/// `at` is `None`) into `new`, or `None` when the names changed.
fn set_change(old: &MemberView, new: &MemberView, at: Option<u32>) -> Option<MemberChange> {
    if old.username != new.username || old.display_name != new.display_name {
        return None;
    }
    let differs = |a: bool, b: bool| (a != b).then_some(b);
    let hand_raised = differs(old.hand_raised, new.hand_raised);
    // A `set` leaves the queue only with the hand going down.
    let leaves_queue = hand_raised == Some(false);
    if new.hand_order.is_none() && old.hand_order.is_some() && !leaves_queue {
        return None;
    }
    if leaves_queue && new.hand_order.is_some() {
        return None;
    }
    Some(MemberChange::Set {
        user_id: new.user_id.clone(),
        at,
        role: (old.role != new.role).then_some(new.role),
        hand_raised,
        muted: differs(old.muted, new.muted),
        invited_to_stage: differs(old.invited_to_stage, new.invited_to_stage),
        hand_order: new.hand_order.filter(|_| new.hand_order != old.hand_order),
    })
}

/// What changed in a room from version `from` to `version`. The session
/// channel sends one on every change after a full [`RoomView`]: a client
/// holding version `from` applies it; a client holding anything else
/// missed a change and subscribes again for a full view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct RoomDelta {
    pub room_id: RoomId,
    #[ts(type = "number")]
    pub from: i64,
    #[ts(type = "number")]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub about: Option<RoomAbout>,
    pub changes: Vec<MemberChange>,
    /// The room's new audience count, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub audience_count: Option<u32>,
}

/// Why a [`RoomDelta`] could not be applied. Either way the client's view
/// is no longer to be trusted: it asks for a full one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("the delta is for another room")]
    OtherRoom,
    #[error("a change was missed: the view is at version {have}, the delta starts at {from}")]
    Gap { have: i64, from: i64 },
    #[error("the delta does not fit the view (change {index})")]
    Mismatch { index: usize },
}

/// Past this many member changes a full view is cheaper to send and to apply.
pub const MAX_DELTA_CHANGES: usize = 64;

/// A listener's view of a room (on the session channel) shows the first
/// this many listeners to join; a listener joining or leaving beyond them
/// changes only the audience count, which the channel sends at most once a
/// second. So a join in a room of 10,000 costs each participant a few
/// dozen bytes, not a member entry, and a room of up to this many
/// listeners is shown in full.
pub const AUDIENCE_IN_VIEW: usize = 50;

impl MemberView {
    /// This member as the audience sees them: no raised hand and no stage
    /// invitation (as in Clubhouse, only the stage sees hands and
    /// invitations; each listener is told their own, see
    /// `ServerMessage::RoomYou`).
    pub fn as_audience_sees(&self) -> MemberView {
        MemberView {
            hand_raised: false,
            invited_to_stage: false,
            hand_order: None,
            ..self.clone()
        }
    }

    fn shows_audience_only(&self) -> bool {
        !self.hand_raised && !self.invited_to_stage && self.hand_order.is_none()
    }
}

impl RoomView {
    /// The view a listener is sent when it subscribes: the stage and the
    /// first [`AUDIENCE_IN_VIEW`] listeners, in the same order as in
    /// `self`, everyone as [`MemberView::as_audience_sees`]; with the
    /// audience count of the whole room. Costs one pass over the members.
    pub fn light(&self) -> RoomView {
        let mut listeners = 0usize;
        self.audience_sees(None, |m| {
            if m.role != Role::Listener {
                return true;
            }
            listeners += 1;
            listeners <= AUDIENCE_IN_VIEW
        })
    }

    /// The listeners' view after a change, given their view before it
    /// (`prev`, a [`light`](Self::light) or `light_after` view) and the
    /// change of the whole room (`delta`). The listeners `prev` showed
    /// stay shown while they are listeners; new listeners (joined, or come
    /// down from the stage) are shown while fewer than
    /// [`AUDIENCE_IN_VIEW`] are. A shown listener leaving or going on stage
    /// thus costs its own change only, not a second one for whoever would
    /// move up into the view; with at most [`AUDIENCE_IN_VIEW`] listeners
    /// the room is shown in full. Without a delta (or in a small room): the
    /// view is made afresh as [`light`](Self::light).
    pub fn light_after(&self, prev: &RoomView, delta: Option<&RoomDelta>) -> RoomView {
        let Some(delta) =
            delta.filter(|_| prev.id == self.id && self.audience_count as usize > AUDIENCE_IN_VIEW)
        else {
            return self.light();
        };
        let shown_before: std::collections::HashSet<&UserId> = prev
            .members
            .iter()
            .filter(|m| m.role == Role::Listener)
            .map(|m| &m.user_id)
            .collect();
        let arrived: std::collections::HashSet<&UserId> = delta
            .changes
            .iter()
            .filter_map(|c| match c {
                MemberChange::Put { member, .. } => Some(&member.user_id),
                MemberChange::Set {
                    user_id,
                    role: Some(Role::Listener),
                    ..
                } => Some(user_id),
                _ => None,
            })
            .filter(|u| !shown_before.contains(u))
            .collect();
        let kept = self
            .members
            .iter()
            .filter(|m| m.role == Role::Listener && shown_before.contains(&m.user_id))
            .count();
        let mut room_for = AUDIENCE_IN_VIEW.saturating_sub(kept);
        self.audience_sees(None, |m| {
            if m.role != Role::Listener || shown_before.contains(&m.user_id) {
                return true;
            }
            let shown = room_for > 0 && arrived.contains(&m.user_id);
            room_for -= usize::from(shown);
            shown
        })
    }

    /// The room as `user` is shown it over HTTP: someone on the stage sees
    /// the stage, the first [`AUDIENCE_IN_VIEW`] listeners and every other
    /// listener with a hand up or a stage invitation; a listener sees the
    /// [`light`](Self::light) view plus their own entry, hand and
    /// invitation included. Costs one pass over the members.
    pub fn seen_by(&self, user: &UserId) -> RoomView {
        let stage = self
            .members
            .iter()
            .any(|m| &m.user_id == user && m.role.on_stage());
        let mut listeners = 0usize;
        let keep = |m: &MemberView| {
            if m.role != Role::Listener || &m.user_id == user {
                return true;
            }
            listeners += 1;
            listeners <= AUDIENCE_IN_VIEW || (stage && (m.hand_raised || m.invited_to_stage))
        };
        if stage {
            self.keeping(keep)
        } else {
            self.audience_sees(Some(user), keep)
        }
    }

    /// `user`'s entry (a scan of the members).
    pub fn member(&self, user: &UserId) -> Option<&MemberView> {
        self.members.iter().find(|m| &m.user_id == user)
    }

    /// The members `keep` accepts, as the audience sees them (but for
    /// `except`'s own entry).
    fn audience_sees(
        &self,
        except: Option<&UserId>,
        keep: impl FnMut(&MemberView) -> bool,
    ) -> RoomView {
        let mut view = self.keeping(keep);
        for m in view.members.iter_mut() {
            if !m.shows_audience_only() && except != Some(&m.user_id) {
                *m = m.as_audience_sees();
            }
        }
        view
    }

    /// The room with only the members `keep` accepts (in order); all else,
    /// the audience count included, as in `self`.
    pub fn keeping(&self, mut keep: impl FnMut(&MemberView) -> bool) -> RoomView {
        RoomView {
            id: self.id.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            kind: self.kind,
            ended: self.ended,
            version: self.version,
            members: self.members.iter().filter(|m| keep(m)).cloned().collect(),
            audience_count: self.audience_count,
        }
    }

    /// How many listeners the room has that `members` does not show.
    pub fn audience_unshown(&self) -> u32 {
        self.audience_count.saturating_sub(self.listeners_shown())
    }

    /// How many listeners `members` lists.
    pub fn listeners_shown(&self) -> u32 {
        let shown = self
            .members
            .iter()
            .filter(|m| m.role == Role::Listener)
            .count();
        u32::try_from(shown).unwrap_or(u32::MAX)
    }

    /// The delta from `old` to `self`, or `None` when there is none to send
    /// (another room, not newer, or more than [`MAX_DELTA_CHANGES`]
    /// changes: send the full view). Applying it to `old` gives `self`.
    /// Costs one pass over the members plus one search per changed member.
    pub fn diff_from(&self, old: &RoomView) -> Option<RoomDelta> {
        if self.id != old.id || self.version <= old.version {
            return None;
        }
        let mut changes = Vec::new();
        let staying: std::collections::HashSet<&UserId> =
            self.members.iter().map(|m| &m.user_id).collect();
        let mut cur: Vec<&MemberView> = Vec::with_capacity(old.members.len());
        for m in &old.members {
            if staying.contains(&m.user_id) {
                cur.push(m);
            } else {
                changes.push(MemberChange::Left {
                    user_id: m.user_id.clone(),
                });
            }
        }
        if changes.len() > MAX_DELTA_CHANGES {
            return None;
        }
        for (i, m) in self.members.iter().enumerate() {
            if cur.get(i).is_some_and(|c| *c == m) {
                continue;
            }
            if changes.len() >= MAX_DELTA_CHANGES {
                return None;
            }
            let at = u32::try_from(i).ok()?;
            let found = cur[i.min(cur.len())..]
                .iter()
                .position(|c| c.user_id == m.user_id);
            let change = match found {
                Some(j) => {
                    let was = cur.remove(i + j);
                    set_change(was, m, (j != 0).then_some(at))
                }
                None => None,
            };
            cur.insert(i, m);
            changes.push(change.unwrap_or_else(|| MemberChange::Put {
                at,
                member: m.clone(),
            }));
        }
        let about = RoomAbout {
            title: self.title.clone(),
            description: self.description.clone(),
            kind: self.kind,
            ended: self.ended,
        };
        let changed = self.title != old.title
            || self.description != old.description
            || self.kind != old.kind
            || self.ended != old.ended;
        Some(RoomDelta {
            room_id: self.id.clone(),
            from: old.version,
            version: self.version,
            about: changed.then_some(about),
            changes,
            audience_count: (self.audience_count != old.audience_count)
                .then_some(self.audience_count),
        })
    }

    /// Applies a delta made by [`diff_from`](Self::diff_from). On an error
    /// the view may be half changed: drop it and ask for a full one.
    pub fn apply(&mut self, delta: &RoomDelta) -> Result<(), DeltaError> {
        if delta.room_id != self.id {
            return Err(DeltaError::OtherRoom);
        }
        if delta.from != self.version || delta.version <= delta.from {
            return Err(DeltaError::Gap {
                have: self.version,
                from: delta.from,
            });
        }
        for (index, change) in delta.changes.iter().enumerate() {
            match change {
                MemberChange::Left { user_id } => {
                    let Some(j) = self.members.iter().position(|m| &m.user_id == user_id) else {
                        return Err(DeltaError::Mismatch { index });
                    };
                    self.members.remove(j);
                }
                MemberChange::Put { at, member } => {
                    let at = *at as usize;
                    if let Some(j) = self
                        .members
                        .iter()
                        .position(|m| m.user_id == member.user_id)
                    {
                        self.members.remove(j);
                    }
                    if at > self.members.len() {
                        return Err(DeltaError::Mismatch { index });
                    }
                    self.members.insert(at, member.clone());
                }
                MemberChange::Set {
                    user_id,
                    at,
                    role,
                    hand_raised,
                    muted,
                    invited_to_stage,
                    hand_order,
                } => {
                    let Some(j) = self.members.iter().position(|m| &m.user_id == user_id) else {
                        return Err(DeltaError::Mismatch { index });
                    };
                    let m = &mut self.members[j];
                    m.role = role.unwrap_or(m.role);
                    m.hand_raised = hand_raised.unwrap_or(m.hand_raised);
                    m.muted = muted.unwrap_or(m.muted);
                    m.invited_to_stage = invited_to_stage.unwrap_or(m.invited_to_stage);
                    if *hand_raised == Some(false) {
                        m.hand_order = None;
                    }
                    if let Some(order) = hand_order {
                        m.hand_order = Some(*order);
                    }
                    if let Some(at) = at {
                        let at = *at as usize;
                        let m = self.members.remove(j);
                        if at > self.members.len() {
                            return Err(DeltaError::Mismatch { index });
                        }
                        self.members.insert(at, m);
                    }
                }
            }
        }
        if let Some(a) = &delta.about {
            self.title.clone_from(&a.title);
            self.description.clone_from(&a.description);
            self.kind = a.kind;
            self.ended = a.ended;
        }
        if let Some(count) = delta.audience_count {
            self.audience_count = count;
        }
        self.version = delta.version;
        Ok(())
    }
}
