//! Storage: one implementation over sqlx's `Any` driver, on SQLite (the
//! embedded default, WAL mode) or PostgreSQL.
//!
//! The SQL is written once, in the subset both databases speak (`$n`
//! placeholders, `RETURNING`, integers for flags and times). What differs per
//! database is kept to two places: the migrations (`migrations/sqlite`,
//! `migrations/postgres`) and how a write transaction starts
//! ([`Store::begin_write`]). Every multi-statement change runs in one
//! transaction, so a failure leaves nothing half-written.

mod accounts;
mod follows;
mod invites;
mod privacy;
mod rooms;
mod stage_groups;

pub use accounts::{AuthedSession, NewAccount};
pub use invites::InviteRedemption;
pub use privacy::Purged;
pub use rooms::{Joined, MemberRow, RoomAccess};
pub use stage_groups::StageGroupRow;

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor as _};

use crate::error::ApiError;

pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// How long a request waits for a PostgreSQL connection before it is
/// answered `database_unavailable`. While the database restarts, the pool
/// keeps trying to connect in the background of each request; a quick 503
/// with `Retry-After` serves a client better than a request that hangs. The
/// pool checks each idle connection before use, so once the database is
/// back, the next request gets a fresh connection: no restart of sotto.
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the data lives.
#[derive(Clone, Debug)]
pub enum DatabaseLocation {
    /// `sotto.db` inside this directory (created if missing).
    SqliteDir(std::path::PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects and applies the migrations.
    pub async fn open(location: &DatabaseLocation) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let (url, backend) = match location {
            DatabaseLocation::SqliteDir(dir) => {
                std::fs::create_dir_all(dir)?;
                restrict_dir(dir)?;
                let file = dir.join("sotto.db");
                (
                    format!("sqlite://{}?mode=rwc", file.display()),
                    Backend::Sqlite,
                )
            }
            DatabaseLocation::Postgres(url) => (url.clone(), Backend::Postgres),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 15000; \
                                 PRAGMA secure_delete = ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?
            }
        };
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`), so two writers queue on the busy
    /// timeout instead of failing when one upgrades a read lock.
    pub async fn begin_write(&self) -> Result<Tx, ApiError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Names of the columns of every table of ours, for the privacy manifest test.
    pub async fn schema_columns(&self) -> Result<Vec<(String, String)>, ApiError> {
        use sqlx::Row as _;
        let rows = match self.backend {
            Backend::Sqlite => {
                sqlx::query(
                    "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx%' \
                     ORDER BY m.name, p.cid",
                )
                .fetch_all(&self.pool)
                .await?
            }
            Backend::Postgres => {
                sqlx::query(
                    "SELECT table_name::text, column_name::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name NOT LIKE '_sqlx%' \
                     ORDER BY table_name, ordinal_position",
                )
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
            .collect())
    }
}

/// The data directory holds the database and TLS keys: owner only.
fn restrict_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let _ = dir;
    Ok(())
}

/// `true` for the database's "this would break a UNIQUE/PRIMARY KEY" error.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Flags are stored as 0/1 integers on both databases.
pub(crate) fn flag(v: bool) -> i64 {
    i64::from(v)
}
