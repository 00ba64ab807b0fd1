//! Test harness: a real server on port 0 with a fresh database (SQLite in a
//! temp dir, or a new PostgreSQL database), and signed-in clients.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sotto_client::{Client, Profile};
use sotto_proto::keys::encode_b64;
use sotto_server::config::{Clock, SystemClock};
use sotto_server::{DatabaseLocation, RunningServer, ServerConfig};
use sqlx::Connection as _;

/// Where the PostgreSQL tests create their databases. CI sets nothing and
/// uses this machine's server; a missing server fails the tests.
pub fn postgres_admin_url() -> String {
    std::env::var("SOTTO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend: `both_backends!(name, body_fn)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body($crate::common::Db::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body($crate::common::Db::Postgres).await;
            }
        }
    };
}

/// A clock tests can move.
#[derive(Debug)]
pub struct ManualClock(pub AtomicI64);

impl ManualClock {
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(SystemClock.now_ms())))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub db: Db,
    pg_database: Option<String>,
    /// The first-start admin invite code.
    pub bootstrap_code: Option<String>,
}

pub fn test_config(dir: &std::path::Path) -> ServerConfig {
    let mut config = ServerConfig::new(dir);
    config.http = "127.0.0.1:0".parse().unwrap();
    config.auth_per_minute = 0;
    config
}

impl TestServer {
    pub async fn start(db: Db) -> TestServer {
        Self::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: Db, adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        let mut pg_database = None;
        if db == Db::Postgres {
            let name = format!("sotto_t_{}", hex::encode(rand::random::<[u8; 8]>()));
            let admin = postgres_admin_url();
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect(
                "PostgreSQL must be running for the PostgreSQL tests (SOTTO_TEST_POSTGRES_URL)",
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            config.database = DatabaseLocation::Postgres(replace_database(&admin, &name));
            pg_database = Some(name);
        }
        adjust(&mut config);
        let server = sotto_server::start(config).await.expect("server starts");
        let bootstrap_code = server
            .bootstrap_invite
            .as_ref()
            .map(|url| url.rsplit('/').next().unwrap().to_string());
        TestServer {
            url: server.base_url.clone(),
            server: Some(server),
            dir,
            db,
            pg_database,
            bootstrap_code,
        }
    }

    pub fn store(&self) -> &sotto_server::Store {
        &self.server.as_ref().unwrap().store
    }

    /// A fresh invite for `uses` accounts, made the way `sotto admin invite` does.
    pub async fn invite(&self, uses: u32) -> String {
        let code = encode_b64(&rand::random::<[u8; 16]>());
        let now = SystemClock.now_ms();
        self.store()
            .create_invite(
                &sotto_server::http::extract::secret_hash(&code),
                None,
                uses,
                now + 3_600_000,
                false,
                now,
            )
            .await
            .unwrap();
        code
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, None).unwrap()
    }

    /// Registers `username` with a fresh invite; returns a signed-in client
    /// and its profile.
    pub async fn user(&self, username: &str) -> (Client, Profile) {
        let code = self.invite(1).await;
        self.user_with_invite(username, &code).await
    }

    pub async fn user_with_invite(&self, username: &str, code: &str) -> (Client, Profile) {
        let dir = self.dir.path().join(format!("profile-{username}"));
        let mut profile = Profile::open_or_create(&dir).unwrap();
        let mut client = self.client();
        client
            .register(&mut profile, code, username, &format!("{username} display"))
            .await
            .unwrap_or_else(|e| panic!("register {username}: {e}"));
        (client, profile)
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
        if let Some(name) = self.pg_database.take() {
            let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rsplit_once('/') {
        Some((prefix, _)) if prefix.contains("//") && prefix.len() > "postgres://".len() => prefix,
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Raw HTTP for tests that send what a client library would never send.
pub fn raw_http() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}
