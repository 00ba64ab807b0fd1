//! The database going away: a PostgreSQL of the test's own (never the
//! machine's shared one) is restarted and crashed under a running server.
//! Requests meanwhile get `503 database_unavailable` with `Retry-After`,
//! never a 500 and never a hang; a registration cut off mid-transaction
//! leaves all of its rows or none; and the same server serves again by
//! itself once the database is back.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::raw_http;
use sotto_client::{Client, Profile};
use sotto_proto::room::RoomKind;
use sotto_proto::{ErrorCode, ErrorResponse};
use sotto_server::DatabaseLocation;
use sqlx::Connection as _;

/// A PostgreSQL cluster in a temp dir, on a free loopback port, trust auth.
/// Run as the `postgres` user when the test runs as root (postgres refuses
/// root). Stopped when dropped.
struct OwnPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let data = dir.path().join("data");
        let port = free_port();
        let pg = OwnPostgres {
            bin,
            data,
            port,
            as_postgres,
            _dir: dir,
        };
        pg.run_tool(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        pg.pg_ctl(&["start"]);
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn stop(&self, mode: &str) {
        self.pg_ctl(&["stop", "-m", mode]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.parent().unwrap().display()
        );
        let log = self.data.parent().unwrap().join("postgres.log");
        let mut all = vec![
            "-D",
            self.data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
        ];
        all.extend_from_slice(args);
        self.run_tool("pg_ctl", &all);
    }

    fn run_tool(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args);
        run(&mut cmd);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        // Best effort: it may already be stopped.
        let _ = self.pg_ctl_quiet(&["stop", "-m", "immediate"]);
    }
}

impl OwnPostgres {
    fn pg_ctl_quiet(&self, args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
        let program = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.arg("-D")
            .arg(&self.data)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    }
}

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb`, or
/// `SOTTO_TEST_POSTGRES_BIN`.
fn postgres_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("SOTTO_TEST_POSTGRES_BIN") {
        return dir.into();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect(
        "PostgreSQL server binaries (initdb, pg_ctl) are needed: install postgresql \
         or set SOTTO_TEST_POSTGRES_BIN",
    )
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Status, error code (if any) and `Retry-After` of a response.
async fn outcome(r: reqwest::Response) -> (u16, Option<ErrorCode>, Option<String>) {
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let code = if status >= 400 {
        Some(
            r.json::<ErrorResponse>()
                .await
                .expect("an error body")
                .error
                .code,
        )
    } else {
        None
    };
    (status, code, retry)
}

/// A request while the database is down: a quick 503 with the stable code
/// and `Retry-After`.
fn assert_unavailable(what: &str, got: &(u16, Option<ErrorCode>, Option<String>), took: Duration) {
    assert_eq!(
        (got.0, got.1),
        (503, Some(ErrorCode::DatabaseUnavailable)),
        "{what}: {got:?}"
    );
    let secs: u64 = got.2.as_deref().expect("Retry-After").parse().unwrap();
    assert!(secs >= 1, "{what}: Retry-After {secs}");
    assert!(took < Duration::from_secs(10), "{what} took {took:?}");
}

struct Registration {
    username: String,
    status: u16,
    took: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_and_crash_under_a_running_server() {
    // The server runs in this process: any panic in it (a handler, a
    // background task) is counted here.
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let pg = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.database = DatabaseLocation::Postgres(pg.url());
    let server = sotto_server::start(config).await.expect("server starts");
    let url = server.base_url.clone();
    let bootstrap = server
        .bootstrap_invite
        .as_ref()
        .and_then(|u| u.rsplit('/').next())
        .unwrap()
        .to_string();
    let http = raw_http();

    // A session before anything happens.
    let mut alice_profile = Profile::open_or_create(&dir.path().join("alice")).unwrap();
    let mut alice = Client::new(&url, None).unwrap();
    alice
        .register(&mut alice_profile, &bootstrap, "alice", "Alice")
        .await
        .unwrap();
    let token = alice.token().unwrap().to_string();
    let room = alice
        .create_room("Before", RoomKind::Open, None)
        .await
        .unwrap();
    let invite = alice.create_invite(1000, 3600).await.unwrap().code;
    let me = || http.get(format!("{url}/api/me")).bearer_auth(&token).send();

    // 1. A restart (fast shutdown: sessions are told 57P01). Requests while
    // it is down get 503 database_unavailable, quickly.
    tokio::task::block_in_place(|| pg.stop("fast"));
    let timed = |what: &'static str, request: reqwest::RequestBuilder| async move {
        let started = Instant::now();
        let got = outcome(request.send().await.unwrap()).await;
        (what, got, started.elapsed())
    };
    let during = tokio::join!(
        timed(
            "GET /api/me",
            http.get(format!("{url}/api/me")).bearer_auth(&token)
        ),
        timed(
            "POST /api/rooms",
            http.post(format!("{url}/api/rooms"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"title": "During", "kind": "open"}))
        ),
        timed(
            "POST /api/rooms/{id}/join",
            http.post(format!("{url}/api/rooms/{}/join", room.id))
                .bearer_auth(&token)
        ),
        timed("GET /healthz", http.get(format!("{url}/healthz"))),
    );
    for (what, got, took) in [during.0, during.1, during.2, during.3] {
        println!(
            "database down: {what} -> {} {:?} Retry-After {:?} in {took:?}",
            got.0, got.1, got.2
        );
        assert_unavailable(what, &got, took);
    }
    let mut bob_profile = Profile::open_or_create(&dir.path().join("bob")).unwrap();
    let mut bob = Client::new(&url, None).unwrap();
    let err = bob
        .register(&mut bob_profile, &invite, "bob", "Bob")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("database_unavailable"),
        "registration while down: {err}"
    );

    tokio::task::block_in_place(|| pg.pg_ctl(&["start"]));
    let recovered = wait_until_served(&me).await;
    println!("after a restart, served again {recovered:?} after the database was back");
    assert!(recovered < Duration::from_secs(5), "{recovered:?}");
    // The same session, the same room, nothing lost.
    assert_eq!(
        alice.room(&room.id).await.unwrap().title,
        "Before",
        "the room survived"
    );
    bob.register(&mut bob_profile, &invite, "bob", "Bob")
        .await
        .unwrap();
    bob.join(&room.id).await.unwrap();

    // 2. A crash (immediate shutdown) while registrations are in flight:
    // eight clients register one account after another until the database
    // goes; each account is all there afterwards, or not at all.
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let url = url.clone();
            let invite = invite.clone();
            let dir = dir.path().to_path_buf();
            tokio::spawn(async move {
                let mut done = Vec::new();
                for n in 0.. {
                    let username = format!("burst_{w}_{n}");
                    let mut profile = Profile::open_or_create(&dir.join(&username)).unwrap();
                    let mut client = Client::new(&url, None).unwrap();
                    let started = Instant::now();
                    let result = client
                        .register(&mut profile, &invite, &username, "Burst")
                        .await;
                    let status = match result {
                        Ok(_) => 201,
                        Err(e) if e.to_string().contains("database_unavailable") => 503,
                        Err(e) => panic!("{username}: {e}"),
                    };
                    done.push(Registration {
                        username,
                        status,
                        took: started.elapsed(),
                    });
                    if status == 503 {
                        return done;
                    }
                }
                unreachable!()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    tokio::task::block_in_place(|| pg.stop("immediate"));
    let mut results = Vec::new();
    for worker in workers {
        results.extend(worker.await.unwrap());
    }
    let refused: Vec<_> = results.iter().filter(|r| r.status == 503).collect();
    // Refused before the pool's 5 s wait: cut off while talking to the database.
    let cut = refused
        .iter()
        .filter(|r| r.took < Duration::from_secs(4))
        .count();
    println!(
        "crash: {} registrations done, {} refused with database_unavailable ({cut} of them cut off in flight)",
        results.len() - refused.len(),
        refused.len(),
    );
    tokio::task::block_in_place(|| pg.pg_ctl(&["start"]));
    let recovered = wait_until_served(&me).await;
    println!("after a crash, served again {recovered:?} after the database was back");
    assert!(recovered < Duration::from_secs(5), "{recovered:?}");
    check_all_or_nothing(&pg.url(), &results).await;

    // The channel and the rooms work as before.
    let view = alice.join(&room.id).await.unwrap();
    assert_eq!(view.members.len(), 2);
    server.shutdown().await.unwrap();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
}

/// Polls `request` until it answers 200; returns how long that took. Any
/// other answer than 200 or 503 database_unavailable fails.
async fn wait_until_served<F, Fut>(request: &F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let started = Instant::now();
    loop {
        let got = outcome(request().await.unwrap()).await;
        match got {
            (200, _, _) => return started.elapsed(),
            (503, Some(ErrorCode::DatabaseUnavailable), Some(_)) => {}
            other => panic!("while recovering: {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not served again after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every account of `results` has its user, device, first chain link and
/// session, or none of them; the invite spent exactly one use per account;
/// a registration that was answered 201 is there.
async fn check_all_or_nothing(url: &str, results: &[Registration]) {
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    let mut accounts = 0;
    for r in results {
        let rows: (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
               (SELECT COUNT(*) FROM users WHERE username = $1), \
               (SELECT COUNT(*) FROM devices d JOIN users u ON u.id = d.user_id WHERE u.username = $1), \
               (SELECT COUNT(*) FROM device_links l JOIN users u ON u.id = l.user_id WHERE u.username = $1), \
               (SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.username = $1)",
        )
        .bind(&r.username)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert!(
            rows == (0, 0, 0, 0) || rows == (1, 1, 1, 1),
            "{} half-written: (users, devices, links, sessions) = {rows:?}",
            r.username
        );
        if r.status == 201 {
            assert_eq!(
                rows,
                (1, 1, 1, 1),
                "{} answered 201 but is missing",
                r.username
            );
        }
        accounts += rows.0;
    }
    // alice's invite: 1000 uses, one spent by bob.
    let (left, total): (i64, i64) =
        sqlx::query_as("SELECT uses_left, uses_total FROM invites WHERE created_by IS NOT NULL")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(
        total - left,
        1 + accounts,
        "invite uses spent do not match the accounts created"
    );
}
