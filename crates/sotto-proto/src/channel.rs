//! The session channel: one WebSocket per client session, carrying JSON text
//! frames in a versioned envelope.
//!
//! ```text
//! client → server  {"v":1,"msg":{"type":"hello","token":"…"}}
//! server → client  {"v":1,"msg":{"type":"welcome","user_id":"…"}}
//! client → server  {"v":1,"msg":{"type":"subscribe","room_id":"…"}}
//! server → client  {"v":1,"msg":{"type":"room_state","room":{…}}}   (on every change)
//! ```
//!
//! The first client message must be `hello`; the token travels inside the
//! channel, never in a URL. Later issues add message types (SDP, MLS
//! handshakes, sealed keys) to these enums; a peer that receives an unknown
//! type answers with an error and keeps the channel open.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::error::{ErrorBody, ErrorCode};
use crate::ids::{RoomId, UserId};
use crate::room::RoomView;

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
#[ts(export)]
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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
#[ts(export)]
pub enum ServerMessage {
    Welcome {
        user_id: UserId,
    },
    RoomState {
        room: RoomView,
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
        (
            ErrorCode::MalformedRequest,
            format!("not an envelope: {}", e),
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
    serde_json::from_str::<ClientEnvelope>(text)
        .map(|env| env.msg)
        .map_err(|e| (ErrorCode::MalformedRequest, format!("bad message: {}", e)))
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
            assert_eq!(
                parse_client_message(bad).unwrap_err().0,
                ErrorCode::MalformedRequest,
                "{bad}"
            );
        }
    }
}
