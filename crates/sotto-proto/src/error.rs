//! Error codes. Each is a stable string that clients may match on; the HTTP
//! status of each is decided here and nowhere else.

use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal) ),+ $(,)?) => {
        /// Every error the API or the session channel can report.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, TS)]
        #[serde(rename_all = "snake_case")]
        #[ts(export)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )+
        }

        impl ErrorCode {
            /// All codes, for documentation and exhaustive tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The stable wire string.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)+ }
            }

            /// The HTTP status this code is sent with.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)+ }
            }
        }
    };
}

error_codes! {
    /// The body is not valid JSON or does not have the expected shape.
    MalformedRequest = ("malformed_request", 400),
    /// The request needs `Content-Type: application/json`.
    UnsupportedMediaType = ("unsupported_media_type", 415),
    /// The body is larger than the server accepts (64 KiB).
    PayloadTooLarge = ("payload_too_large", 413),
    /// No such route.
    NotFound = ("not_found", 404),
    /// The route exists but not with this method.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// Too many attempts; retry after the `Retry-After` header's seconds.
    RateLimited = ("rate_limited", 429),
    /// A username must be 3–20 characters of `a-z`, `0-9` and `_`.
    InvalidUsername = ("invalid_username", 400),
    /// A display name must be 1–50 characters, bio at most 300, no control characters.
    InvalidProfile = ("invalid_profile", 400),
    /// A room title must be 1–100 characters, a description at most 500.
    InvalidRoom = ("invalid_room", 400),
    /// A public key is not 32 bytes of base64url, or not a valid Ed25519 point.
    InvalidPublicKey = ("invalid_public_key", 400),
    /// A field is out of its allowed range (uses, expiry, ...).
    InvalidParameter = ("invalid_parameter", 400),
    /// The username is taken.
    UsernameTaken = ("username_taken", 409),
    /// The device key is already registered.
    DeviceKeyTaken = ("device_key_taken", 409),
    /// No invite has this code.
    InviteNotFound = ("invite_not_found", 404),
    /// The invite has expired.
    InviteExpired = ("invite_expired", 410),
    /// The invite has no uses left.
    InviteUsedUp = ("invite_used_up", 410),
    /// A signature does not verify.
    BadSignature = ("bad_signature", 401),
    /// The login challenge is unknown, already used, or expired.
    ChallengeInvalid = ("challenge_invalid", 401),
    /// No session token, or an unknown one.
    Unauthenticated = ("unauthenticated", 401),
    /// The session has expired.
    SessionExpired = ("session_expired", 401),
    /// The session was revoked (logout, device removed).
    SessionRevoked = ("session_revoked", 401),
    /// Only an administrator may do this.
    AdminOnly = ("admin_only", 403),
    /// No such user.
    UserNotFound = ("user_not_found", 404),
    /// No such device of yours.
    DeviceNotFound = ("device_not_found", 404),
    /// The account's only device cannot be revoked: nothing could sign in again.
    LastDevice = ("last_device", 409),
    /// A device-chain link is malformed, out of sequence or not signed by a
    /// current device of the account.
    InvalidDeviceLink = ("invalid_device_link", 400),
    /// The account's device chain changed meanwhile: fetch it and sign again.
    DeviceChainConflict = ("device_chain_conflict", 409),
    /// An access statement (follow, allow, ban) is malformed, not signed by
    /// this session's device, or not about this user, room or verb.
    InvalidAccessStatement = ("invalid_access_statement", 400),
    /// You cannot follow yourself.
    CannotFollowSelf = ("cannot_follow_self", 400),
    /// No such room, or you may not see it.
    RoomNotFound = ("room_not_found", 404),
    /// The room has ended.
    RoomEnded = ("room_ended", 410),
    /// The room's kind does not let you in (social: be followed by its host
    /// or a moderator; closed: be invited).
    RoomAccessDenied = ("room_access_denied", 403),
    /// You are banned from this room.
    BannedFromRoom = ("banned_from_room", 403),
    /// You are not in this room.
    NotInRoom = ("not_in_room", 409),
    /// The user is not in this room.
    TargetNotInRoom = ("target_not_in_room", 404),
    /// Your role does not allow this action.
    NotPermitted = ("not_permitted", 403),
    /// The target's role is equal to or above yours.
    TargetOutranksYou = ("target_outranks_you", 403),
    /// The action needs someone on stage.
    NotOnStage = ("not_on_stage", 409),
    /// The action needs someone in the audience.
    AlreadyOnStage = ("already_on_stage", 409),
    /// There is no pending invitation to the stage.
    NoStageInvitation = ("no_stage_invitation", 409),
    /// Only the user themselves may do this (for example, unmute).
    OnlySelf = ("only_self", 403),
    /// The session channel message uses a protocol version this server does not speak.
    UnsupportedVersion = ("unsupported_version", 400),
    /// The first session channel message must be `hello`.
    HelloRequired = ("hello_required", 400),
    /// The SDP offer is not one the media plane accepts (audio only, Opus,
    /// one sendonly microphone m-line, at most 3 recvonly slots).
    BadOffer = ("bad_offer", 400),
    /// This server runs without a media plane.
    MediaUnavailable = ("media_unavailable", 503),
    /// Another stage commit won this epoch: process it from the log, then
    /// rebase (redo your commit in the new epoch if it still applies).
    StaleEpoch = ("stale_epoch", 409),
    /// The delivery service refused an E2EE message: malformed, not valid
    /// for the group's state, or naming a key that is not the sender's.
    E2eeInvalid = ("e2ee_invalid", 400),
    /// The room has no stage group yet (its host has not created one).
    E2eeNoGroup = ("e2ee_no_group", 409),
    /// Send the room's E2EE `hello` first.
    E2eeHelloRequired = ("e2ee_hello_required", 409),
    /// Something failed on the server; nothing was changed.
    Internal = ("internal", 500),
    /// The server is shutting down.
    Unavailable = ("unavailable", 503),
    /// The server cannot reach its database right now (restarting, down,
    /// overloaded, or locked). Nothing was changed: retry after the
    /// `Retry-After` header's seconds.
    DatabaseUnavailable = ("database_unavailable", 503),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error":{"code":"…","message":"…"}}`: the body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// The code is for programs, the message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[ts(export)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorResponse {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorResponse {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_string_matches_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!((400..600).contains(&code.http_status()), "{code}");
        }
    }

    #[test]
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
        }
    }
}
