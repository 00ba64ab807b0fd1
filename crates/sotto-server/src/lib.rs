//! The sotto control plane: accounts (invite-only, device keys, no
//! passwords), follows, rooms and roles, and the session channel that pushes
//! live room state — on SQLite or PostgreSQL.
//!
//! Layout:
//! - [`rooms`]: the rules of a room, sans-IO (who may do what to whom).
//! - [`store`]: the database, one implementation for both backends.
//! - [`http`]: the API (one module per concept) and the session channel.
//! - [`server`]: binding, TLS, the first-start invite, graceful shutdown.
//! - [`e2ee_relay`]: the E2EE delivery service and relay (public state only).
//!
//! Invariants: nothing a client sends panics a handler or yields a 500; every
//! change is one transaction; logs carry no IP address, username, room title
//! or key, and ids only shortened.

pub mod admin;
pub mod bus;
pub mod config;
pub mod e2ee_relay;
pub mod error;
pub mod http;
pub mod media;
pub mod metrics;
pub mod ratelimit;
pub mod rooms;
pub mod server;
pub mod store;
pub mod tls;

pub use config::{Clock, ServerConfig, SystemClock, TlsSetting};
pub use server::{RunningServer, start};
pub use store::{DatabaseLocation, Store};
