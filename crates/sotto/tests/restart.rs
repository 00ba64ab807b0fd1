//! A server restart does not end a room: the stopping server tells its
//! clients when to come back; the restarted one resumes the same stage group
//! from its saved public state and external-sender key; clients reconnect
//! the session channel and media by themselves, and speech is heard again.

use std::time::{Duration, Instant};

use sotto_audio::{aligned_correlation, speech_like};
use sotto_client::session::{Mode, SessionConfig, SessionOutcome, run};
use sotto_client::{Channel, Client, Profile};
use sotto_proto::RoomId;
use sotto_proto::channel::ServerMessage;
use sotto_proto::room::RoomKind;
use sotto_server::config::{Clock as _, SystemClock};
use sotto_server::media::MediaConfig;
use sotto_server::{RunningServer, ServerConfig};

const SECOND: usize = 48_000;

/// A server on fixed ports (a restart must come back where clients look).
fn config(dir: &std::path::Path) -> ServerConfig {
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = ServerConfig::new(dir);
    config.http = http;
    config.auth_per_minute = 0;
    config.media = Some(MediaConfig {
        bind: udp,
        ..MediaConfig::default()
    });
    config
}

async fn user(server: &RunningServer, dir: &std::path::Path, name: &str) -> (Client, Profile) {
    let code = sotto_proto::keys::encode_b64(&rand::random::<[u8; 16]>());
    let now = SystemClock.now_ms();
    server
        .store
        .create_invite(
            &sotto_server::http::extract::secret_hash(&code),
            None,
            1,
            now + 3_600_000,
            false,
            now,
        )
        .await
        .unwrap();
    let mut profile = Profile::open_or_create(&dir.join(name)).unwrap();
    let mut client = Client::new(&server.base_url, None).unwrap();
    client
        .register(&mut profile, &code, name, name)
        .await
        .unwrap();
    (client, profile)
}

fn session(
    client: Client,
    profile: Profile,
    config: SessionConfig,
) -> tokio::task::JoinHandle<SessionOutcome> {
    tokio::spawn(async move { run(&client, &profile, config, |_| {}).await.unwrap() })
}

/// Waits until the relay shows `members` devices in the room's stage group.
async fn stage_of(server: &RunningServer, room: &RoomId, members: usize) -> (Vec<u8>, u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = server.e2ee.snapshot(room)
            && s.stage_members == members
        {
            return (s.group_id, s.epoch);
        }
        assert!(
            Instant::now() < deadline,
            "the stage group never held {members} devices: {:?}",
            server
                .e2ee
                .snapshot(room)
                .map(|s| (s.stage_members, s.epoch))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_and_its_stage_group_survive_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = sotto_server::start(config.clone()).await.unwrap();
    let (host, host_p) = user(&server, dir.path(), "host").await;
    let (guest, guest_p) = user(&server, dir.path(), "guest").await;
    let (listener, listener_p) = user(&server, dir.path(), "listener").await;
    let room = host
        .create_room("Restart", RoomKind::Open, None)
        .await
        .unwrap()
        .id;
    let guest_id = guest.me().await.unwrap().id;

    // The listener records 24 s; the host speaks A through the restart
    // (which comes about 6 s in); the guest, invited to the stage before
    // it, speaks B only after it (from about 13 s), alone.
    let mut listen = SessionConfig::new(room.clone(), Mode::Listen);
    listen.stop_after = Some(Duration::from_secs(24));
    let heard = session(listener, listener_p, listen);
    // A (9 s) then silence: the host's session (the key distributor) stays.
    let mut a = speech_like(41, 9.0);
    a.extend(std::iter::repeat_n(0.0, 11 * SECOND));
    let mut host_config = SessionConfig::new(
        room.clone(),
        Mode::Speak {
            samples: a,
            repeat: false,
        },
    );
    host_config.invite = vec![guest_id.clone()];
    let host_task = session(host.clone(), host_p, host_config);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = speech_like(42, 6.0);
    let mut b_input = vec![0.0; 12 * SECOND];
    b_input.extend_from_slice(&b);
    let guest_task = session(
        guest.clone(),
        guest_p,
        SessionConfig::new(
            room.clone(),
            Mode::Speak {
                samples: b_input,
                repeat: false,
            },
        ),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    host.member_action(&room, &guest_id, "invite-to-stage")
        .await
        .unwrap();
    guest.room_action(&room, "accept-stage").await.unwrap();
    let (group_before, epoch_before) = stage_of(&server, &room, 2).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Restart: drain (clients are told), stop, start on the same data.
    let stopping = Instant::now();
    server.shutdown().await.unwrap();
    let down = stopping.elapsed();
    let key_file = dir.path().join("relay/external-sender.key");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the external-sender key is the server's alone"
        );
    }
    let server = sotto_server::start(config).await.unwrap();
    let restarted = stopping.elapsed();
    // The same group, resumed from the saved state: nobody was invited again.
    let resumed = server.e2ee.snapshot(&room).expect("the room's relay state");
    assert_eq!(resumed.group_id, group_before, "the same stage group");
    assert!(resumed.epoch >= epoch_before);
    assert_eq!(
        resumed.stage_members, 2,
        "host and guest are still on stage"
    );

    let host_out = host_task.await.unwrap();
    let guest_out = guest_task.await.unwrap();
    let heard = heard.await.unwrap();
    println!(
        "drain and stop {down:?}, back up after {restarted:?}\nhost {:?}\nguest {:?}\nlistener {:?}",
        host_out.stats, guest_out.stats, heard.stats
    );
    let (group_after, _) = stage_of(&server, &room, 2).await;
    assert_eq!(group_after, group_before, "no new group after the restart");
    for (who, out) in [
        ("host", &host_out),
        ("guest", &guest_out),
        ("listener", &heard),
    ] {
        assert!(
            out.stats.reconnects >= 1,
            "{who} reconnected: {:?}",
            out.stats
        );
        assert_eq!(out.ended_by, None, "{who}'s session went on");
    }
    assert_eq!(heard.stats.decrypt_failures, 0, "{:?}", heard.stats);
    // The host was speaking A when the server stopped: from the moment
    // the listener was told, to the next frame it decrypted.
    assert_eq!(heard.stats.reconnect_gaps_ms.len(), 1, "{:?}", heard.stats);
    let gap = heard.stats.reconnect_gaps_ms[0];
    assert!(
        gap <= 3_000,
        "audio back within 3 s of the restart: the listener heard nothing for {gap} ms"
    );
    // B was spoken only after the restart, by a speaker invited before it.
    // Each 2 s of B is looked for on its own: a reconnect may change the
    // playout delay, so one lag need not fit the whole recording.
    let cb: Vec<f64> = b
        .chunks(2 * SECOND)
        .map(|chunk| aligned_correlation(chunk, &heard.mix, 24 * SECOND).1)
        .collect();
    println!(
        "audio back {} ms after the server said it was going away; B heard in 2 s pieces with correlations {cb:.3?}",
        heard.stats.reconnect_gaps_ms[0]
    );
    for (i, c) in cb.iter().enumerate() {
        assert!(
            *c >= 0.8,
            "the guest's speech after the restart, piece {i}: {c:.3}"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_tells_its_channels_when_to_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = sotto_server::start(config(dir.path())).await.unwrap();
    let (client, _profile) = user(&server, dir.path(), "ann").await;
    let mut channel = Channel::connect(&client).await.unwrap();
    let started = Instant::now();
    let stop = tokio::spawn(server.shutdown());
    let told = channel.next(Duration::from_secs(5)).await.unwrap();
    let ServerMessage::GoingAway { reconnect_after_ms } = told else {
        panic!("expected going_away, got {told:?}");
    };
    assert!(
        (300..1_400).contains(&reconnect_after_ms),
        "{reconnect_after_ms}"
    );
    assert!(
        channel.next(Duration::from_secs(5)).await.is_err(),
        "the channel closes after going_away"
    );
    stop.await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took < sotto_server::server::DRAIN_TIMEOUT,
        "the server stopped once its channels closed ({took:?})"
    );
}
