//! # sotto-room: the client side of sotto's room protocol, once
//!
//! One sans-IO core for every client: the native CLI (`sotto-client`) and
//! the browser (through wasm) are two thin drivers on it. It holds one
//! device's part in a room's end-to-end encryption ([`room::RoomCrypto`]:
//! stage member, key distributor, listener), what the device trusts
//! ([`trust::TrustStore`]: pinned device chains, verified accounts), the
//! replay filter every decrypted frame passes ([`replay`]) and the checks
//! whose failures a participant must see ([`alert::Alert`]).
//!
//! The threat is an operator who *acts* (docs/e2ee.md): it may present any
//! key for any account, create its own stage group, withhold, replay and
//! reorder messages. Every decision here rests on something the server
//! cannot forge: signatures by devices that the accounts' own device chains
//! hold, the host's signed binding of the stage group, MLS itself.
//!
//! Invariants: no sockets, no clock, no global RNG — time (`now_ms`, Unix
//! ms) and randomness come in; messages to send come out. Nothing a peer or
//! the server sends panics. Errors are returned; what a person must know is
//! also queued as an [`alert::Alert`].
#![forbid(unsafe_code)]

pub mod alert;
pub mod early;
pub mod replay;
pub mod room;
pub mod trust;

pub use alert::Alert;
pub use early::{EarlyFrames, Opened};
pub use room::{CryptoError, InvitePolicy, RoomCrypto, RosterEntry, RosterReport};
pub use trust::{Trust, TrustStore};
