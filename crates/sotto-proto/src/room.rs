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
}

/// The whole live state of a room, pushed on every change.
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
    /// order of joining.
    pub members: Vec<MemberView>,
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
