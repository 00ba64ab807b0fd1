//! Bodies of the HTTP API. Times are Unix milliseconds.

use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

use crate::ids::{DeviceId, UserId};
use crate::keys::DevicePublicKey;
use crate::room::RoomKind;

/// Create an account with an invite. `signature` is the device's Ed25519
/// signature over [`crate::keys::register_transcript`].
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct RegisterRequest {
    /// The code of an invite (or the last part of its link).
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$")]
    pub invite_code: String,
    /// 3–20 characters of `a-z`, `0-9` and `_`.
    #[schema(min_length = 3, max_length = 20, pattern = r"^[a-z0-9_]{3,20}$")]
    pub username: String,
    /// 1–50 characters, not only spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub display_name: String,
    /// The device's Ed25519 public key: 32 bytes, base64url without padding.
    #[schema(value_type = String, min_length = 43, max_length = 43, pattern = r"^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
    #[ts(type = "string")]
    pub device_public_key: DevicePublicKey,
    /// 1–50 characters, not only spaces, no control characters (default `device`).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub device_name: Option<String>,
    /// Ed25519 signature (64 bytes, base64url) over
    /// [`crate::keys::register_transcript`].
    #[schema(
        min_length = 86,
        max_length = 86,
        pattern = r"^[A-Za-z0-9_-]{85}[AQgw]$"
    )]
    pub signature: String,
    /// The first link of the account's device chain (base64url of
    /// [`crate::chain::DeviceLink`], 169 bytes): the key adding itself, self-signed.
    #[schema(
        min_length = 226,
        max_length = 226,
        pattern = r"^[A-Za-z0-9_-]{225}[AQgw]$"
    )]
    pub device_link: String,
}

/// A new session: send `token` as `Authorization: Bearer …`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct SessionResponse {
    pub token: String,
    #[ts(type = "number")]
    pub expires_at: i64,
    pub user_id: UserId,
    pub device_id: DeviceId,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct ChallengeRequest {
    /// The device's Ed25519 public key: 32 bytes, base64url without padding.
    #[schema(value_type = String, min_length = 43, max_length = 43, pattern = r"^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
    #[ts(type = "string")]
    pub device_public_key: DevicePublicKey,
}

/// Sign [`crate::keys::login_transcript`] of these and send it to `/api/auth/login`
/// before `expires_at`. A challenge answers once.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct ChallengeResponse {
    pub challenge_id: String,
    /// base64url
    pub nonce: String,
    #[ts(type = "number")]
    pub expires_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct LoginRequest {
    /// As `/api/auth/challenge` gave it.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pub challenge_id: String,
    /// Ed25519 signature (64 bytes, base64url) over [`crate::keys::login_transcript`].
    #[schema(
        min_length = 86,
        max_length = 86,
        pattern = r"^[A-Za-z0-9_-]{85}[AQgw]$"
    )]
    pub signature: String,
}

/// The signed-in account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct Me {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub bio: String,
    pub is_admin: bool,
    #[ts(type = "number")]
    pub created_at: i64,
}

/// A user's public profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct Profile {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub bio: String,
    pub followers: u32,
    pub following: u32,
    /// Whether the signed-in user follows them.
    pub followed_by_you: bool,
    /// Their device chain (base64url of the concatenated links): verify it
    /// and pin its root; never trust a device key the chain does not hold.
    pub device_chain: String,
}

/// A user in a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct UserSummary {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct UpdateProfileRequest {
    /// 1–50 characters, not only spaces, no control characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub display_name: Option<String>,
    /// At most 300 characters, no control characters (one line).
    #[serde(default)]
    #[schema(max_length = 300, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub bio: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct DeviceView {
    pub id: DeviceId,
    pub name: String,
    #[schema(value_type = String)]
    #[ts(type = "string")]
    pub public_key: DevicePublicKey,
    #[ts(type = "number")]
    pub created_at: i64,
    /// The device of the session making the request.
    pub current: bool,
}

/// Authorize another device key for this account. The device of the current
/// session and the new device each sign [`crate::keys::add_device_transcript`].
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct AddDeviceRequest {
    /// The new device's Ed25519 public key: 32 bytes, base64url without padding.
    #[schema(value_type = String, min_length = 43, max_length = 43, pattern = r"^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
    #[ts(type = "string")]
    pub device_public_key: DevicePublicKey,
    /// 1–50 characters, not only spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    /// This session's device's signature (64 bytes, base64url).
    #[schema(
        min_length = 86,
        max_length = 86,
        pattern = r"^[A-Za-z0-9_-]{85}[AQgw]$"
    )]
    pub authorizer_signature: String,
    /// The new device's signature (64 bytes, base64url).
    #[schema(
        min_length = 86,
        max_length = 86,
        pattern = r"^[A-Za-z0-9_-]{85}[AQgw]$"
    )]
    pub new_device_signature: String,
    /// The next link of the account's device chain: `add` of the new key,
    /// signed by this session's device (base64url, 169 bytes).
    #[schema(
        min_length = 226,
        max_length = 226,
        pattern = r"^[A-Za-z0-9_-]{225}[AQgw]$"
    )]
    pub device_link: String,
}

/// Revoke a device: the next link of the account's device chain, `revoke`
/// of that device's key, signed by this session's device (base64url).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct RevokeDeviceRequest {
    /// base64url, 169 bytes.
    #[schema(
        min_length = 226,
        max_length = 226,
        pattern = r"^[A-Za-z0-9_-]{225}[AQgw]$"
    )]
    pub device_link: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct CreateInviteRequest {
    /// How many accounts it may create: 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub uses: u32,
    /// 60 s to 90 days (7,776,000 s).
    #[schema(minimum = 60, maximum = 7776000)]
    #[ts(type = "number")]
    pub expires_in_secs: u64,
}

/// A new invite. The code is shown once; the server keeps only its hash.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct InviteCreated {
    pub code: String,
    pub url: String,
    pub uses: u32,
    #[ts(type = "number")]
    pub expires_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct CreateRoomRequest {
    /// 1–100 characters, not only spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub title: String,
    pub kind: RoomKind,
    /// At most 500 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 500, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
}

/// Let a user into a closed room.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct RoomInviteRequest {
    #[schema(min_length = 3, max_length = 20, pattern = r"^[a-z0-9_]{3,20}$")]
    pub username: String,
    /// An allow statement for the user and the room, signed by this
    /// session's device ([`crate::access`], base64url): the room's key
    /// distributor admits a closed room's listener only with one.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = r"^[A-Za-z0-9_-]*$")]
    pub statement: Option<String>,
}

/// Optional body of `PUT /api/users/{username}/follow` and of the `ban`
/// member action: the access statement signed by this session's device
/// ([`crate::access`], base64url) — a follow, or a ban of the member.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct StatementRequest {
    /// base64url.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = r"^[A-Za-z0-9_-]*$")]
    pub statement: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct Health {
    pub status: String,
}

/// Everything the server stores about the signed-in user (`GET /api/me/export`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct AccountExport {
    #[ts(type = "number")]
    pub exported_at: i64,
    pub account: Me,
    pub devices: Vec<DeviceView>,
    /// Session tokens are stored only as hashes; these are their times.
    pub sessions: Vec<SessionRecord>,
    pub invites_created: Vec<InviteRecord>,
    pub following: Vec<UserSummary>,
    pub followers: Vec<UserSummary>,
    pub rooms_created: Vec<RoomRecord>,
    pub room_memberships: Vec<MembershipRecord>,
    /// Rooms that banned you.
    pub room_bans: Vec<RoomMark>,
    /// Closed rooms a moderator let you into.
    pub room_access: Vec<RoomMark>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct SessionRecord {
    pub device_id: DeviceId,
    #[ts(type = "number")]
    pub created_at: i64,
    #[ts(type = "number")]
    pub expires_at: i64,
    #[ts(type = "number | null")]
    pub revoked_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct InviteRecord {
    pub uses_total: u32,
    pub uses_left: u32,
    #[ts(type = "number")]
    pub created_at: i64,
    #[ts(type = "number")]
    pub expires_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct RoomRecord {
    pub id: crate::RoomId,
    pub title: String,
    pub description: String,
    pub kind: RoomKind,
    #[ts(type = "number")]
    pub created_at: i64,
    #[ts(type = "number | null")]
    pub ended_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct MembershipRecord {
    pub room_id: crate::RoomId,
    pub role: crate::room::Role,
    pub hand_raised: bool,
    pub muted: bool,
    pub invited_to_stage: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct RoomMark {
    pub room_id: crate::RoomId,
    #[ts(type = "number")]
    pub created_at: i64,
}

/// Delete the account: signed by the session's device over
/// [`crate::keys::delete_account_transcript`].
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct DeleteAccountRequest {
    /// Ed25519 signature (64 bytes, base64url).
    #[schema(
        min_length = 86,
        max_length = 86,
        pattern = r"^[A-Za-z0-9_-]{85}[AQgw]$"
    )]
    pub signature: String,
}

/// Largest page of [`AudiencePage`].
pub const MAX_AUDIENCE_PAGE: u32 = 200;

/// Which page of a room's audience to read: `GET
/// /api/rooms/{room_id}/audience?after=…&limit=…&q=…`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams, TS)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
#[ts(export)]
pub struct AudienceQuery {
    /// The `next` of the previous page (absent: the first page).
    #[serde(default)]
    #[param(max_length = 18, pattern = r"^[0-9]{1,18}$")]
    #[ts(optional)]
    pub after: Option<String>,
    /// 1–200 listeners; 50 if absent.
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    #[ts(optional)]
    pub limit: Option<u32>,
    /// Only listeners whose username or display name starts with this
    /// (1–50 characters, not only spaces, no control characters;
    /// case-insensitive for ASCII).
    #[serde(default)]
    #[param(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    #[ts(optional)]
    pub q: Option<String>,
}

/// A page of a room's audience (the listeners), in order of joining. The
/// stage is in the room state; a large audience is read here page by page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct AudiencePage {
    pub members: Vec<crate::room::MemberView>,
    /// How many listeners match (the whole audience without `q`).
    pub total: u32,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub next: Option<String>,
}
