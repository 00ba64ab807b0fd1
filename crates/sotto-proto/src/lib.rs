//! Wire types shared by the sotto server, the native client and (through
//! generated TypeScript) the web client.
//!
//! Nothing here does IO. Everything that crosses the network is one of these
//! types, so a reviewer can read in one crate what the server can see:
//!
//! - [`api`]: JSON bodies of the HTTP API.
//! - [`room`]: rooms, roles and the live room state.
//! - [`channel`]: the versioned envelope of the per-session WebSocket.
//! - [`error`]: every error code the server returns, with its HTTP status,
//!   mapped in exactly one place ([`ErrorCode::http_status`]).
//! - [`keys`]: device public keys and the domain-separated transcripts that a
//!   device signs (registration, login, adding a device).
//! - [`ids`]: opaque random identifiers and the username rule.
//!
//! Invariant: parsing anything a peer sends returns a typed error; it never
//! panics. `tests/no_panic.rs` checks this with arbitrary input.

pub mod access;
pub mod api;
pub mod chain;
pub mod channel;
pub mod error;
pub mod ids;
pub mod keys;
pub mod plain;
pub mod room;

pub use error::{ErrorBody, ErrorCode, ErrorResponse};
pub use ids::{DeviceId, RoomId, UserId};
