//! The session channel: one WebSocket per client session, carrying JSON text
//! frames in a versioned envelope.
//!
//! ```text
//! client → server  {"v":1,"msg":{"type":"hello","token":"…"}}
//! server → client  {"v":1,"msg":{"type":"welcome","user_id":"…"}}
//! client → server  {"v":1,"msg":{"type":"subscribe","room_id":"…"}}
//! server → client  {"v":1,"msg":{"type":"room_state","room":{…}}}
//! server → client  {"v":1,"msg":{"type":"room_delta","room_id":"…","from":7,"version":8,"changes":[…]}}   (on every change)
//! ```
//!
//! The first client message must be `hello`; the token travels inside the
//! channel, never in a URL. Later issues add message types (SDP, MLS
//! handshakes, sealed keys) to these enums; a peer that receives an unknown
//! type answers with an error and keeps the channel open.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::error::{ErrorBody, ErrorCode};
use crate::ids::{DeviceId, RoomId, UserId};
use crate::keys::DevicePublicKey;
use crate::room::{MemberView, RoomDelta, RoomView};

/// The version both sides speak.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest text frame either side accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct ClientEnvelope {
    pub v: u32,
    pub msg: ClientMessage,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct ServerEnvelope {
    pub v: u32,
    pub msg: ServerMessage,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
// (ts-rs skips a serde attribute that holds `deny_unknown_fields`: the shape
// is said again for the generated TypeScript.)
#[ts(export, tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Authenticate the channel with a session token. Must come first.
    Hello {
        token: String,
    },
    /// Receive the state of a room you are in, now and on every change.
    Subscribe {
        room_id: RoomId,
    },
    Unsubscribe {
        room_id: RoomId,
    },
    Ping {
        nonce: u32,
    },
    /// Join the room's audio: an SDP offer with one `sendonly` audio m-line
    /// (the microphone; present even for listeners, so going on stage needs
    /// no renegotiation) and up to 3 `recvonly` audio m-lines (receive slots).
    MediaOffer {
        room_id: RoomId,
        sdp: String,
    },
    /// Leave the room's audio.
    MediaLeave {
        room_id: RoomId,
    },
    /// End-to-end encryption for a room you subscribed to (see
    /// [`E2eeUp`] and `docs/e2ee.md`, "Wire protocol").
    E2ee {
        room_id: RoomId,
        e2ee: E2eeUp,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
#[ts(export)]
pub enum ServerMessage {
    Welcome {
        user_id: UserId,
    },
    /// The whole room: on `subscribe`, and when a change cannot be sent
    /// as a delta.
    RoomState {
        room: RoomView,
    },
    /// A change of a room since the last `room_state` or `room_delta`
    /// (see [`RoomDelta`]).
    RoomDelta(RoomDelta),
    /// Your own entry in a room whose state you are sent as a listener:
    /// after each `room_state` of it, and whenever your entry changes.
    /// A listener's room state shows nobody's hand or stage invitation
    /// (only the stage sees those) and may not show you at all; this does,
    /// for you alone. In a room whose stage you are on, your entry in the
    /// room state is the one to read.
    RoomYou {
        room_id: RoomId,
        you: MemberView,
    },
    /// You are no longer in the room (left, removed, or banned); no more
    /// state follows for it.
    RoomLeft {
        room_id: RoomId,
        banned: bool,
    },
    RoomEnded {
        room_id: RoomId,
    },
    Pong {
        nonce: u32,
    },
    /// The media plane's answer. The SDP carries only random ICE
    /// credentials and the server's UDP address: no account or room id.
    MediaAnswer {
        room_id: RoomId,
        sdp: String,
    },
    Error {
        error: ErrorBody,
    },
    /// End-to-end encryption relay for a room (see [`E2eeDown`]).
    E2ee {
        room_id: RoomId,
        e2ee: E2eeDown,
    },
    /// The media plane dropped this channel's media connection in the room
    /// (nothing came from it for too long, e.g. after a network outage):
    /// offer media again.
    MediaGone {
        room_id: RoomId,
    },
    /// The server is stopping (a restart or a deploy): the channel closes
    /// next. Reconnect after about this long (plus some random jitter, so
    /// that a room does not come back all at once); rooms and their stage
    /// groups carry on.
    GoingAway {
        reconnect_after_ms: u32,
    },
}

/// E2EE messages from a client. Every binary field is base64url without
/// padding ([`encode_payload`]). The server parses only what the delivery
/// service must (MLS handshakes, KeyPackages, GroupInfo, ratchet tree); the
/// rest is opaque to it. All but `hello` and `join_request` need the sender's
/// device to be a member of the room's stage group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[ts(export, tag = "kind", rename_all = "snake_case")]
pub enum E2eeUp {
    /// Take part in the room's E2EE with this session's device. The server
    /// answers `info` (and the latest roster, if any).
    Hello {},
    /// The host's new stage group: its GroupInfo and ratchet tree, and the
    /// host's signed binding of the group to the room (candidates join only
    /// the bound group). Replaces an existing group (the other stage members
    /// get `group_reset` with the new binding).
    CreateGroup {
        group_info: String,
        ratchet_tree: String,
        binding: String,
    },
    /// A stage candidate's MLS KeyPackage (its leaf signature key must be
    /// this device's registered key; the user must be on stage).
    KeyPackage { key_package: String },
    /// A host's or moderator's signed stage invitation for a candidate
    /// device. The server then proposes adding it.
    StageInvitation {
        device_id: DeviceId,
        invitation: String,
    },
    /// An MLS handshake or application message (commit, rotation notice).
    /// First valid commit per epoch wins; a later one is refused with
    /// `stale_epoch`. The answer (`accepted` or `rejected`) echoes `id`.
    Handshake {
        message: String,
        #[serde(default)]
        id: u32,
    },
    /// The GroupInfo of the epoch the sender's accepted commit created.
    GroupInfo { group_info: String },
    /// The Welcome of the sender's accepted commit; the server gives it,
    /// with the ratchet tree, to the devices the commit added.
    Welcome { welcome: String },
    /// A listener's signed join request (fresh HPKE key).
    JoinRequest { request: String },
    /// Sealed audience keys for listener devices, all of the generation the
    /// key statement vouches for.
    Sealed {
        statement: String,
        deliveries: Vec<SealedFor>,
    },
    /// The signed roster of admitted listeners (their count and a Merkle
    /// root), for everyone in the room. Sent after the `roster_leaves`
    /// chunks it commits to; the server keeps it only if they add up.
    Roster { roster: String },
    /// (The key distributor) one chunk of the listener fingerprints behind
    /// the next roster: changes since the last one, or the whole list.
    RosterLeaves { leaves: String },
    /// Ask which of these key fingerprints the latest roster lists; the
    /// answer is `roster_proofs` (any participant).
    RosterProof { fingerprints: String },
}

/// One sealed audience key for one listener device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct SealedFor {
    pub to: DeviceId,
    pub sealed: String,
}

/// Who sent a relayed E2EE message, as the server's directory knows them:
/// the account, the device, and that device's registered identity key. A
/// client trusts this binding unless people compare safety codes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct E2eePeer {
    pub user_id: UserId,
    pub device_id: DeviceId,
    #[ts(type = "string")]
    pub device_key: DevicePublicKey,
    /// The account's device chain as the server stores it (base64url of
    /// the links, [`crate::chain`]). Clients verify it against the pinned
    /// root and accept `device_key` only if the chain holds it.
    pub chain: String,
}

/// A stage group bound to the room by a host's device: the signed binding
/// (opaque to the server) and who sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct GroupBinding {
    pub binding: String,
    pub from: E2eePeer,
}

/// An access statement ([`crate::access`]) and the device chain of the
/// account that signed it, as the server stores them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct SignedAccess {
    /// The statement (base64url).
    pub statement: String,
    /// The signer's account.
    pub signer: UserId,
    /// The signer account's device chain (base64url).
    pub chain: String,
}

/// E2EE messages from the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[ts(export)]
pub enum E2eeDown {
    /// Answer to `hello`: the server's external-sender key for the stage
    /// group (Ed25519, and its credential), and whether the room has a
    /// stage group yet.
    Info {
        external_sender_key: String,
        external_sender_credential: String,
        has_group: bool,
        /// The current stage group's binding, if the room has a group.
        group: Option<GroupBinding>,
    },
    /// The host replaced the stage group; stage members join the new one
    /// (upload a KeyPackage) only if the binding verifies.
    GroupReset { group: GroupBinding },
    /// A stage handshake or application message, in delivery-service order
    /// (`seq`); proposals come from the server (`from` absent).
    Handshake {
        #[ts(type = "number")]
        seq: u64,
        message: String,
        from: Option<E2eePeer>,
    },
    /// Your handshake `id` was accepted at `seq`; the group is now at `epoch`.
    Accepted {
        #[ts(type = "number")]
        seq: u64,
        #[ts(type = "number")]
        epoch: u64,
        commit: bool,
        #[serde(default)]
        id: u32,
    },
    /// Your handshake `id` was refused (e.g. `stale_epoch`: another commit
    /// won the epoch).
    Rejected {
        id: u32,
        code: ErrorCode,
        message: String,
    },
    /// You were added to the stage group.
    Welcome {
        welcome: String,
        ratchet_tree: String,
    },
    /// (Hosts and moderators) a device on stage asks to join the stage
    /// group: sign an invitation for it if you invited it.
    Candidate { candidate: E2eePeer },
    /// (Stage members) a stage invitation signed by a host or moderator.
    StageInvitation { invitation: String, from: E2eePeer },
    /// (The key distributor) a listener's join request; verify it against
    /// `from.device_key`. `grants`: the statements that let the listener
    /// in (a moderator's allow for a closed room; the host's and the
    /// moderators' follows for a social room).
    JoinRequest {
        request: String,
        from: E2eePeer,
        #[serde(default)]
        grants: Vec<SignedAccess>,
    },
    /// (The key distributor) a host or moderator banned an account.
    Ban { ban: SignedAccess },
    /// (A listener) your sealed audience key and the key statement that
    /// vouches for it.
    Sealed {
        sealed: String,
        statement: String,
        from: E2eePeer,
    },
    /// The signed roster of admitted listeners.
    Roster { roster: String, from: E2eePeer },
    /// (The key distributor) the server does not hold what the last
    /// roster's changes apply to: send the whole list with the next one.
    RosterResync {},
    /// Proofs, against the latest roster the server holds, of whether each
    /// fingerprint asked about is listed.
    RosterProofs { proofs: String },
    /// You are (or are no longer) the room's key distributor and committer.
    Distributor { active: bool },
    /// (The key distributor) a device was revoked or logged out: drop it
    /// from the admitted listeners and rotate.
    DeviceGone { device_id: DeviceId },
}

/// Encodes a binary E2EE field (base64url, no padding).
pub fn encode_payload(bytes: &[u8]) -> String {
    crate::keys::encode_b64(bytes)
}

/// Decodes a binary E2EE field. Unlike [`crate::keys::decode_b64`] it
/// accepts up to a whole message's size. Never panics.
pub fn decode_payload(text: &str) -> Result<Vec<u8>, (ErrorCode, String)> {
    use base64::Engine as _;
    if text.len() > MAX_MESSAGE_BYTES {
        return Err((ErrorCode::PayloadTooLarge, "field too large".into()));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| (ErrorCode::MalformedRequest, "not base64url".into()))
}

impl ServerEnvelope {
    pub fn new(msg: ServerMessage) -> Self {
        ServerEnvelope {
            v: PROTOCOL_VERSION,
            msg,
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ServerMessage::Error {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        })
    }

    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl ClientEnvelope {
    pub fn new(msg: ClientMessage) -> Self {
        ClientEnvelope {
            v: PROTOCOL_VERSION,
            msg,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Parses one text frame from a client. Never panics.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, (ErrorCode, String)> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err((ErrorCode::PayloadTooLarge, "message too large".into()));
    }
    // Check the version before the shape, so a future client gets the right error.
    #[derive(Deserialize)]
    struct VersionOnly {
        v: u32,
    }
    let version: VersionOnly = serde_json::from_str(text).map_err(|e| {
        let why = if e.is_syntax() || e.is_eof() {
            "not JSON".to_string()
        } else {
            crate::plain::refused(".", &e.to_string()).1
        };
        (
            ErrorCode::MalformedRequest,
            format!("not an envelope ({{\"v\": {PROTOCOL_VERSION}, \"msg\": {{…}}}}): {why}"),
        )
    })?;
    if version.v != PROTOCOL_VERSION {
        return Err((
            ErrorCode::UnsupportedVersion,
            format!(
                "version {} is not supported; use {}",
                version.v, PROTOCOL_VERSION
            ),
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, ClientEnvelope>(&mut de)
        .map(|env| env.msg)
        .map_err(|e| {
            let (code, why) = crate::plain::refused(&e.path().to_string(), &e.inner().to_string());
            (code, format!("bad message: {why}"))
        })
}

/// Parses one text frame from the server. Never panics.
pub fn parse_server_message(text: &str) -> Result<ServerMessage, (ErrorCode, String)> {
    let env: ServerEnvelope = serde_json::from_str(text)
        .map_err(|e| (ErrorCode::MalformedRequest, format!("bad message: {}", e)))?;
    if env.v != PROTOCOL_VERSION {
        return Err((ErrorCode::UnsupportedVersion, format!("version {}", env.v)));
    }
    Ok(env.msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let msg = ClientMessage::Subscribe {
            room_id: RoomId::from_bytes([1; 16]),
        };
        let text = ClientEnvelope::new(msg.clone()).to_json();
        assert_eq!(parse_client_message(&text), Ok(msg));
    }

    #[test]
    fn wire_shape_is_stable() {
        let text = ClientEnvelope::new(ClientMessage::Hello { token: "t".into() }).to_json();
        assert_eq!(text, r#"{"v":1,"msg":{"type":"hello","token":"t"}}"#);
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(
            parse_client_message(r#"{"v":2,"msg":{"type":"ping","nonce":1}}"#)
                .unwrap_err()
                .0,
            ErrorCode::UnsupportedVersion
        );
        for bad in [
            "",
            "{",
            "[]",
            r#"{"v":1}"#,
            r#"{"v":1,"msg":{"type":"nope"}}"#,
            r#"{"v":1,"msg":{"type":"ping","nonce":-1}}"#,
            r#"{"v":1,"msg":{"type":"ping","nonce":1,"extra":2}}"#,
        ] {
            let (code, message) = parse_client_message(bad).unwrap_err();
            assert_eq!(code, ErrorCode::MalformedRequest, "{bad}");
            for internal in [
                "invalid type",
                "invalid value",
                ", expected",
                "line 1",
                "u32",
            ] {
                assert!(!message.contains(internal), "{bad}: {message}");
            }
        }
    }

    #[test]
    fn refusals_are_in_plain_words() {
        let said = |text: &str| parse_client_message(text).unwrap_err().1;
        assert_eq!(
            said(r#"{"v":1,"msg":{"type":"ping"}}"#),
            "bad message: field `nonce` is missing"
        );
        assert!(
            said(r#"{"v":1,"msg":{"type":"ping","nonce":-1}}"#)
                .contains("must be a whole number from 0 to 4294967295"),
            "{}",
            said(r#"{"v":1,"msg":{"type":"ping","nonce":-1}}"#)
        );
        assert!(said(r#"{"v":1,"msg":{"type":"nope"}}"#).contains("must be one of"));
        assert!(said("{").contains("not JSON"));
    }
}
