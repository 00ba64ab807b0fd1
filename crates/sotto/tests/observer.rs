//! The Stanford Internet Observatory's method, as regression tests: run a
//! room over TLS with real clients — follows, hand raises, stage changes, a
//! mute, a ban, speech — then look where they looked.
//!
//! - **Network observer**: dumpcap captures every packet to and from the
//!   server's address; no identifier may appear in any form, and no packet
//!   may go anywhere but the server's two configured ports.
//! - **Operator**: the database (SQLite and PostgreSQL), the data directory
//!   and the server's log at its default level hold none of the secrets the
//!   clients held (audience secrets, SFrame keys, HPKE private keys), no
//!   audio, no IP address; the log names no user and no room.
//!
//! Each scenario's server has a loopback address of its own, so the two tests
//! can run at once without one capturing the other.

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use sotto_audio::speech_like;
use sotto_client::session::{Mode, SessionConfig, run};
use sotto_client::{Client, Profile};
use sotto_proto::room::RoomKind;
use sotto_server::media::MediaConfig;
use sotto_server::{DatabaseLocation, ServerConfig, TlsSetting};
use sqlx::Connection as _;

struct Capture {
    child: std::process::Child,
    path: std::path::PathBuf,
}

fn start_capture(dir: &std::path::Path, server_ip: Ipv4Addr) -> Capture {
    let path = dir.join("observer.pcap");
    let mut child = Command::new("dumpcap")
        .args([
            "-q",
            "-P",
            "-i",
            "lo",
            "-f",
            &format!("host {server_ip}"),
            "-w",
        ])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("dumpcap (Debian's wireshark tools; scripts/test installs them)");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        if line.contains("Capturing on") {
            break;
        }
        line.clear();
    }
    assert!(
        line.contains("Capturing on"),
        "dumpcap did not start: {line}"
    );
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    Capture { child, path }
}

fn stop_capture(mut capture: Capture) -> Vec<u8> {
    let pid = capture.child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    capture.child.wait().unwrap();
    std::fs::read(&capture.path).unwrap()
}

/// Each captured packet: (source, destination, IP protocol, bytes after the IP header).
fn packets(pcap: &[u8]) -> Vec<(SocketAddr, SocketAddr, u8, Vec<u8>)> {
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    assert_eq!(
        u32::from_le_bytes(pcap[20..24].try_into().unwrap()),
        1,
        "Ethernet link type"
    );
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..at + 16 + len];
        at += 16 + len;
        assert_eq!(
            &frame[12..14],
            &[0x08, 0x00],
            "only IPv4 on the server's address"
        );
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let proto = ip[9];
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let l4 = &ip[ihl..];
        let (sport, dport) = match proto {
            6 | 17 => (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            ),
            _ => (0, 0),
        };
        out.push((
            SocketAddr::new(IpAddr::V4(src), sport),
            SocketAddr::new(IpAddr::V4(dst), dport),
            proto,
            l4.to_vec(),
        ));
    }
    out
}

/// A value in every form the method searches for: raw, UTF-16 (both byte
/// orders), base64 (standard and URL-safe, at each alignment) and hex.
fn encodings(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![
        value.to_vec(),
        hex::encode(value).into_bytes(),
        hex::encode_upper(value).into_bytes(),
    ];
    if let Ok(text) = std::str::from_utf8(value) {
        forms.push(text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect());
        forms.push(text.encode_utf16().flat_map(|u| u.to_be_bytes()).collect());
    }
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for shift in 0..3 {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(value);
            let text = engine.encode(&shifted);
            // Drop the characters that depend on the neighbouring bytes.
            let start = if shift == 0 {
                0
            } else {
                (shift * 8).div_ceil(6)
            };
            let end = text.len() - usize::from((shifted.len() % 3) != 0);
            if end > start + 8 {
                forms.push(text.as_bytes()[start..end].to_vec());
            }
        }
    }
    forms
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The server's log, at the binary's default level, collected in memory.
fn log_buffer() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOG: std::sync::OnceLock<std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        struct Writer;
        impl std::io::Write for Writer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                log_buffer().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,sqlx=warn"))
            .with_writer(|| Writer)
            .with_ansi(false)
            .try_init();
        std::sync::Mutex::new(Vec::new())
    })
}

struct Outcome {
    dir: tempfile::TempDir,
    /// Identifiers an observer must not learn, named.
    identifiers: Vec<(String, Vec<u8>)>,
    /// Every secret the clients' devices held during the scenario.
    held: std::collections::HashSet<Vec<u8>>,
    server_ports: [u16; 2],
    values: Vec<(String, String, Vec<u8>)>,
}

/// The room: 2 speakers and 5 listeners over TLS; follows, a raised hand, an
/// invitation to the stage, speech from both speakers, a mute and a ban.
async fn scenario(
    server_ip: Ipv4Addr,
    database: Option<String>,
    capture: bool,
) -> (Outcome, Option<Vec<u8>>) {
    log_buffer();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().join("data"));
    if let Some(url) = database {
        config.database = DatabaseLocation::Postgres(url);
    }
    config.http = SocketAddr::new(IpAddr::V4(server_ip), 0);
    config.tls = TlsSetting::SelfSigned;
    config.auth_per_minute = 0;
    config.media = Some(MediaConfig {
        bind: SocketAddr::new(IpAddr::V4(server_ip), 0),
        ..MediaConfig::default()
    });
    let capture = capture.then(|| start_capture(dir.path(), server_ip));
    let server = sotto_server::start(config).await.unwrap();
    let ca = server.pinned_cert.clone().unwrap().0.unwrap();
    let server_ports = [server.local_addr.port(), server.media_addr.unwrap().port()];

    let mut identifiers: Vec<(String, Vec<u8>)> = Vec::new();
    let title = format!("Clandestine observatory chat {}", server_ip.octets()[3]);
    identifiers.push(("room title".into(), title.as_bytes().to_vec()));
    let bootstrap = server.bootstrap_invite.clone().unwrap();
    let code = bootstrap.rsplit('/').next().unwrap().to_string();
    identifiers.push(("invite code".into(), code.as_bytes().to_vec()));

    let names = [
        "obshostess",
        "obsguest77",
        "obslistener1",
        "obslistener2",
        "obslistener3",
        "obslistener4",
        "obslistener5",
    ];
    let mut users: Vec<(Client, Profile)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let invite = match users.first() {
            None => code.clone(),
            Some((admin, _)) => {
                let invite = admin.create_invite(1, 3600).await.unwrap();
                identifiers.push((
                    format!("invite for {name}"),
                    invite.code.as_bytes().to_vec(),
                ));
                invite.code
            }
        };
        let mut profile = Profile::open_or_create(&dir.path().join(name)).unwrap();
        let mut client = Client::new(&server.base_url, Some(&ca)).unwrap();
        let display = format!("Display of {name}");
        let session = client
            .register(&mut profile, &invite, name, &display)
            .await
            .unwrap();
        identifiers.push((format!("username {name}"), name.as_bytes().to_vec()));
        identifiers.push((format!("display name {name}"), display.as_bytes().to_vec()));
        identifiers.push((
            format!("account id {name}"),
            session.user_id.0.as_bytes().to_vec(),
        ));
        identifiers.push((
            format!("session token {name}"),
            session.token.as_bytes().to_vec(),
        ));
        identifiers.push((
            format!("device key {name}"),
            profile.public_key().as_bytes().to_vec(),
        ));
        assert_eq!(i, users.len());
        users.push((client, profile));
    }
    for (client, _) in &users[1..] {
        client.follow("obshostess").await.unwrap();
        // A social room is for people its host follows.
        let them = client.me().await.unwrap().username;
        users[0].0.follow(&them).await.unwrap();
    }
    let host = users[0].0.clone();
    let room = host
        .create_room(&title, RoomKind::Social, None)
        .await
        .unwrap()
        .id;
    identifiers.push(("room id".into(), room.0.as_bytes().to_vec()));

    // The guest and five listeners follow the room with full sessions.
    let mut sessions = Vec::new();
    for (client, profile) in users.drain(1..) {
        let room = room.clone();
        let is_guest = client.me().await.unwrap().username == "obsguest77";
        sessions.push(tokio::spawn(async move {
            let mode = if is_guest {
                let mut speech = vec![0.0; 3 * 48_000];
                speech.extend(speech_like(5, 5.0));
                Mode::Speak {
                    samples: speech,
                    repeat: false,
                }
            } else {
                Mode::Listen
            };
            let mut config = SessionConfig::new(room, mode);
            config.stop_after = Some(Duration::from_secs(12));
            run(&client, &profile, config, |_| {}).await.unwrap()
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let guest = host.profile("obsguest77").await.unwrap().id;
    let banned = host.profile("obslistener5").await.unwrap().id;
    let (host_client, host_profile) = users.pop().unwrap();
    let (host_room, host_guest) = (room.clone(), guest.clone());
    let host_session = tokio::spawn(async move {
        let mut samples = speech_like(4, 6.0);
        samples.extend(std::iter::repeat_n(0.0, 5 * 48_000));
        let mut config = SessionConfig::new(
            host_room,
            Mode::Speak {
                samples,
                repeat: false,
            },
        );
        config.invite = vec![host_guest];
        run(&host_client, &host_profile, config, |_| {})
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Hand, stage, mute, ban.
    let mut guest_client = Client::new(&server.base_url, Some(&ca)).unwrap();
    guest_client
        .login(&Profile::open(&dir.path().join("obsguest77")).unwrap())
        .await
        .unwrap();
    guest_client.room_action(&room, "raise-hand").await.unwrap();
    host.member_action(&room, &guest, "invite-to-stage")
        .await
        .unwrap();
    guest_client
        .room_action(&room, "accept-stage")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    host.member_action(&room, &guest, "mute").await.unwrap();
    host.member_action(&room, &banned, "ban").await.unwrap();
    let mut held = std::collections::HashSet::new();
    let mut heard = 0;
    for s in sessions {
        let outcome = s.await.unwrap();
        heard = heard.max(outcome.stats.decrypted);
        held.extend(outcome.held_secrets);
    }
    held.extend(host_session.await.unwrap().held_secrets);
    assert!(heard > 100, "the scenario carried audio");
    assert!(held.len() > 100, "the clients held {} secrets", held.len());
    let values = server.store.all_values().await.unwrap();
    server.shutdown().await.unwrap();
    let pcap = capture.map(stop_capture);
    (
        Outcome {
            dir,
            identifiers,
            held,
            server_ports,
            values,
        },
        pcap,
    )
}

/// The operator's view: database rows, files in the data directory, the log.
fn operator_audit(outcome: &Outcome, files: bool) {
    let secret_forms: Vec<Vec<u8>> = outcome.held.iter().flat_map(|s| encodings(s)).collect();
    // The database: no secret, no audio, no address.
    assert!(
        outcome.values.len() > 50,
        "read only {} values",
        outcome.values.len()
    );
    for (table, column, value) in &outcome.values {
        for form in &secret_forms {
            assert!(
                !find(value, form),
                "a client's secret is stored in {table}.{column}"
            );
        }
        // The saved public group state of a live room (GroupInfo, ratchet
        // tree, the host's binding with its device chain; docs/privacy.md)
        // is larger than a row of ours, but bounded by one MLS message;
        // that it holds no client secret is checked just above.
        let public_group_state = table == "stage_groups";
        let cap = if public_group_state {
            sotto_proto::channel::MAX_MESSAGE_BYTES
        } else {
            512
        };
        assert!(
            value.len() <= cap,
            "{table}.{column} holds {} bytes: no recordings",
            value.len()
        );
        let text = String::from_utf8_lossy(value);
        assert!(
            !text.contains("127.0.0."),
            "{table}.{column} holds an IP address"
        );
    }
    // The data directory: only the database and the TLS files, none holding a secret.
    if files {
        let data = outcome.dir.path().join("data");
        let mut names = Vec::new();
        for entry in walk(&data) {
            let name = entry.strip_prefix(&data).unwrap().display().to_string();
            names.push(name.clone());
            let bytes = std::fs::read(&entry).unwrap();
            for form in &secret_forms {
                assert!(!find(&bytes, form), "a client's secret is in {name}");
            }
            assert!(
                !find(&bytes, b"127.0.0."),
                "{name} holds an IP address as text"
            );
        }
        let allowed = [
            "sotto.db",
            "sotto.db-wal",
            "sotto.db-shm",
            "tls/ca.pem",
            "tls/cert.pem",
            "tls/key.pem",
            // The server's MLS external-sender signing key (docs/e2ee.md,
            // "Restarts"): it signs the server's proposals, decrypts nothing.
            "relay/external-sender.key",
        ];
        for name in &names {
            assert!(
                allowed.contains(&name.as_str()),
                "unexpected file in the data directory: {name}"
            );
        }
    }
    // The log at the default level: no user, room, invite, token, key or address.
    let log = String::from_utf8_lossy(&log_buffer().lock().unwrap()).to_string();
    assert!(log.contains("account created"), "the log was captured");
    for (what, value) in &outcome.identifiers {
        for form in encodings(value) {
            assert!(!find(log.as_bytes(), &form), "the log contains the {what}");
        }
    }
    for form in &secret_forms {
        assert!(
            !find(log.as_bytes(), form),
            "the log contains a client's secret"
        );
    }
    assert!(!log.contains("127.0.0."), "the log contains an IP address");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_observer_and_operator_see_nothing_on_sqlite() {
    let server_ip = Ipv4Addr::new(127, 0, 0, 77);
    let (outcome, pcap) = scenario(server_ip, None, true).await;
    let pcap = pcap.unwrap();
    let captured = packets(&pcap);
    assert!(
        captured.len() > 1000,
        "captured only {} packets",
        captured.len()
    );
    // Every packet is between a client and the server's two configured ports.
    let is_server = |a: &SocketAddr| {
        a.ip() == IpAddr::V4(server_ip) && outcome.server_ports.contains(&a.port())
    };
    for (src, dst, proto, _) in &captured {
        let icmp_about_server =
            *proto == 1 && (src.ip() == IpAddr::V4(server_ip) || dst.ip() == IpAddr::V4(server_ip));
        assert!(
            is_server(src) || is_server(dst) || icmp_about_server,
            "a packet not to or from the server's configured ports: proto {proto} {src} -> {dst}"
        );
    }
    // No identifier, and no client secret, in any form in anything an observer saw.
    for (what, value) in &outcome.identifiers {
        for form in encodings(value) {
            assert!(
                !find(&pcap, &form),
                "{what} is visible on the wire (as {:?})",
                String::from_utf8_lossy(&form)
            );
        }
    }
    for secret in &outcome.held {
        for form in encodings(secret) {
            assert!(
                !find(&pcap, &form),
                "a client's secret is visible on the wire"
            );
        }
    }
    operator_audit(&outcome, true);
    println!(
        "{} packets, {} bytes captured; {} identifiers and {} client secrets searched",
        captured.len(),
        pcap.len(),
        outcome.identifiers.len(),
        outcome.held.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_sees_nothing_on_postgres() {
    let admin = std::env::var("SOTTO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("sotto_obs_{}", hex::encode(rand::random::<[u8; 6]>()));
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL for the operator audit");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("SOTTO_TEST_POSTGRES_URL has no database part"),
    };
    let (outcome, _) = scenario(Ipv4Addr::new(127, 0, 0, 78), Some(url), false).await;
    operator_audit(&outcome, false);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
}
