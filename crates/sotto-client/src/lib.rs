//! The sotto client library: a profile (one device key), the HTTP API with
//! certificate pinning, and the session channel. The `sotto` binary's client
//! commands and the server's tests use it; the media and E2EE issues build
//! the speaking and listening client on it.

pub mod api;
pub mod channel;
pub mod error;
pub mod media;
pub mod profile;
pub mod session;
pub mod tls;

pub use api::Client;
pub use channel::Channel;
pub use error::ClientError;
pub use profile::Profile;
pub use sotto_room::RoomCrypto;
/// The room protocol core (kept under its old path for callers).
pub use sotto_room::room as room_crypto;
