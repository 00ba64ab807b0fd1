//! Attack 1 of the malicious-operator issue, through the real server, its
//! database, real UDP and real audio: the operator inserts one row into its
//! own `devices` table for an existing listener, with a key it holds, logs
//! in with that key and listens to the room. Before device chains it heard
//! the room (correlation 0.97); now no frame decrypts for it, the key
//! distributor (the speaker's client) says why, and the real listener
//! hears as before.

use std::time::Duration;

use sotto_audio::{aligned_correlation, speech_like};
use sotto_client::profile::ProfileInfo;
use sotto_client::session::{Mode, SessionConfig, SessionOutcome, run};
use sotto_client::{Client, Profile};
use sotto_proto::room::RoomKind;
use sotto_proto::{DeviceId, RoomId};
use sotto_server::config::{Clock as _, SystemClock};
use sotto_server::media::MediaConfig;
use sotto_server::{RunningServer, ServerConfig};

const SECOND: usize = 48_000;

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
    room: RoomId,
    mode: Mode,
    secs: u64,
) -> tokio::task::JoinHandle<SessionOutcome> {
    tokio::spawn(async move {
        let mut config = SessionConfig::new(room, mode);
        config.stop_after = Some(Duration::from_secs(secs));
        run(&client, &profile, config, |_| {}).await.unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_row_inserted_by_the_operator_hears_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path());
    config.http = "127.0.0.1:0".parse().unwrap();
    config.auth_per_minute = 0;
    config.media = Some(MediaConfig::default());
    let server = sotto_server::start(config).await.unwrap();

    let (host, host_p) = user(&server, dir.path(), "host").await;
    let room = host
        .create_room("Private talk", RoomKind::Open, None)
        .await
        .unwrap()
        .id;
    let (bob, bob_p) = user(&server, dir.path(), "bob").await;
    let bob_id = bob.me().await.unwrap().id;
    let real = session(bob, bob_p, room.clone(), Mode::Listen, 16);
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The operator's move: one row in its own database, nothing else.
    let mut op_profile = Profile::open_or_create(&dir.path().join("operator")).unwrap();
    let op_device = DeviceId::from_bytes(rand::random());
    sqlx::query(
        "INSERT INTO devices (id, user_id, public_key, name, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(op_device.0.clone())
    .bind(bob_id.0.clone())
    .bind(op_profile.public_key().as_bytes().to_vec())
    .bind("laptop".to_string())
    .bind(SystemClock.now_ms())
    .execute(server.store.pool())
    .await
    .unwrap();
    op_profile.info = ProfileInfo {
        server: Some(server.base_url.clone()),
        username: Some("bob".into()),
        user_id: Some(bob_id.clone()),
        device_id: Some(op_device),
    };
    op_profile.save().unwrap();
    let mut op_client = Client::new(&server.base_url, None).unwrap();
    op_client.login(&op_profile).await.unwrap();
    assert_eq!(
        op_client.me().await.unwrap().id,
        bob_id,
        "the operator is signed in as bob"
    );
    let op = session(op_client, op_profile, room.clone(), Mode::Listen, 14);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let input = speech_like(21, 10.0);
    let speaker = session(
        host,
        host_p,
        room.clone(),
        Mode::Speak {
            samples: input.clone(),
            repeat: false,
        },
        30,
    )
    .await
    .unwrap();
    assert!(speaker.stats.frames_sent >= 450, "{:?}", speaker.stats);

    let heard = real.await.unwrap();
    let c = aligned_correlation(&input, &heard.mix, 3 * SECOND).1;
    println!("real listener: correlation {c:.3}, {:?}", heard.stats);
    assert!(c >= 0.8, "the real listener's correlation {c:.3} < 0.8");
    assert_eq!(heard.stats.hidden_listeners, 0, "{:?}", heard.stats);

    let stolen = op.await.unwrap();
    println!("operator's device: {:?}", stolen.stats);
    assert!(
        stolen.stats.packets_received >= 100,
        "the operator's device got the ciphertext: {:?}",
        stolen.stats
    );
    assert_eq!(
        stolen.stats.decrypted, 0,
        "the operator's device decrypted frames"
    );
    assert!(
        speaker
            .stats
            .alerts
            .iter()
            .any(|a| a.contains("refused a device key")),
        "the distributor did not say it refused the operator's key: {:?}",
        speaker.stats.alerts
    );
    server.shutdown().await.unwrap();
}
