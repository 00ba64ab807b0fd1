//! How a server is set up. The binary fills this from its flags; tests build
//! it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::store::DatabaseLocation;

/// Where the TLS certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSetting {
    /// Plain HTTP: only allowed on a loopback address.
    Off,
    /// PEM files given by the operator.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate made on first start, kept in `<data-dir>/tls/`.
    SelfSigned,
}

/// The time, passed in so tests can move it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
}

#[derive(Debug)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub database: DatabaseLocation,
    pub http: SocketAddr,
    pub tls: TlsSetting,
    /// The URL people reach this server at (for invite links); derived from
    /// the bound address when absent.
    pub public_url: Option<String>,
    pub session_ttl: Duration,
    /// Registrations, challenges and logins allowed per client address per
    /// minute (0 turns the limit off).
    pub auth_per_minute: u32,
    /// How long the first-start admin invite is valid.
    pub bootstrap_invite_ttl: Duration,
    /// How long an ended room's roster, bans and access list are kept.
    pub ended_room_retention: Duration,
    /// How often the retention task runs.
    pub retention_interval: Duration,
    /// A participant not seen for this long (no open session channel
    /// following the room, no action) leaves the room.
    pub presence_ttl: Duration,
    /// How often an open session channel marks its user present.
    pub presence_refresh: Duration,
    pub clock: Arc<dyn Clock>,
    /// The media plane (UDP); `None` runs the control plane alone.
    pub media: Option<crate::media::MediaConfig>,
}

impl ServerConfig {
    /// Defaults of `sotto serve`: SQLite in `data_dir`, loopback, no TLS.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        ServerConfig {
            database: DatabaseLocation::SqliteDir(data_dir.clone()),
            data_dir,
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: TlsSetting::Off,
            public_url: None,
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            auth_per_minute: 60,
            bootstrap_invite_ttl: Duration::from_secs(7 * 24 * 3600),
            ended_room_retention: Duration::from_secs(24 * 3600),
            retention_interval: Duration::from_secs(600),
            presence_ttl: Duration::from_secs(90),
            presence_refresh: Duration::from_secs(20),
            clock: Arc::new(SystemClock),
            media: Some(crate::media::MediaConfig::default()),
        }
    }
}

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a login challenge may be answered.
pub const CHALLENGE_TTL_MS: i64 = 60_000;
