//! Real audio through the real path: WAV-like speech → Opus → SFrame (E2EE)
//! → RTP over UDP on loopback → the server's SFU → listeners → decrypt →
//! Opus → mix. The output must match the input; what the SFU forwarded must
//! not (it only ever saw ciphertext).

use std::time::Duration;

use sotto_audio::{OpusDecoder, aligned_correlation, speech_like};
use sotto_client::profile::ProfileInfo;
use sotto_client::session::{Mode, SessionConfig, SessionOutcome, run};
use sotto_client::{Client, Profile};
use sotto_proto::room::RoomKind;
use sotto_proto::{DeviceId, RoomId};
use sotto_server::config::{Clock as _, SystemClock};
use sotto_server::media::MediaConfig;
use sotto_server::{RunningServer, ServerConfig};

const SECOND: usize = 48_000;

struct World {
    server: RunningServer,
    dir: tempfile::TempDir,
}

async fn start(loss: f64) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path());
    config.http = "127.0.0.1:0".parse().unwrap();
    config.auth_per_minute = 0;
    config.media = Some(MediaConfig {
        inject_loss: loss,
        // `SOTTO_TEST_RTC_PATH=1`: the SFU's older send path, through
        // each listener's `Rtc` (the default seals each copy itself).
        direct_send: std::env::var_os("SOTTO_TEST_RTC_PATH").is_none(),
        ..MediaConfig::default()
    });
    let server = sotto_server::start(config).await.unwrap();
    World { server, dir }
}

impl World {
    async fn user(&self, name: &str) -> (Client, Profile) {
        let code = sotto_proto::keys::encode_b64(&rand::random::<[u8; 16]>());
        let now = SystemClock.now_ms();
        self.server
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
        let mut profile = Profile::open_or_create(&self.dir.path().join(name)).unwrap();
        let mut client = Client::new(&self.server.base_url, None).unwrap();
        client
            .register(&mut profile, &code, name, name)
            .await
            .unwrap();
        (client, profile)
    }
}

fn listen(
    client: Client,
    profile: Profile,
    room: RoomId,
    secs: u64,
) -> tokio::task::JoinHandle<SessionOutcome> {
    run_session(client, profile, room, Mode::Listen, secs)
}

fn speak(
    client: Client,
    profile: Profile,
    room: RoomId,
    samples: Vec<f32>,
) -> tokio::task::JoinHandle<SessionOutcome> {
    tokio::spawn(async move {
        let config = SessionConfig::new(
            room,
            Mode::Speak {
                samples,
                repeat: false,
            },
        );
        run(&client, &profile, config, |_| {}).await.unwrap()
    })
}

/// Correlation of `heard` with `said`, after alignment (up to 3 s of lag).
fn ncc(said: &[f32], heard: &[f32]) -> f64 {
    aligned_correlation(said, heard, 3 * SECOND).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_speaker_three_listeners_hear_the_speaker_and_the_sfu_hears_nothing() {
    let world = start(0.0).await;
    let (host, host_p) = world.user("host").await;
    let room = host
        .create_room("Audio", RoomKind::Open, None)
        .await
        .unwrap()
        .id;
    let mut listeners = Vec::new();
    for name in ["lis1", "lis2", "lis3"] {
        let (c, p) = world.user(name).await;
        listeners.push(listen(c, p, room.clone(), 16));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let input = speech_like(11, 12.0);
    let speaker = speak(host, host_p, room.clone(), input.clone())
        .await
        .unwrap();
    assert!(speaker.stats.frames_sent >= 550, "{:?}", speaker.stats);

    for (i, l) in listeners.into_iter().enumerate() {
        let heard = l.await.unwrap();
        let c = ncc(&input, &heard.mix);
        println!("listener {i}: correlation {c:.3}, {:?}", heard.stats);
        assert!(
            c >= 0.9,
            "listener {i} correlation {c:.3} < 0.9 ({:?})",
            heard.stats
        );
        assert_eq!(heard.stats.renegotiations, 0);
    }

    // What the SFU forwarded, decoded as Opus, is not the speech.
    let tapped = world.server.media.as_ref().unwrap().take_tap(&room).await;
    assert!(tapped.len() >= 550, "tap saw {} payloads", tapped.len());
    let mut decoder = OpusDecoder::new().unwrap();
    let decoded: Vec<f32> = tapped
        .iter()
        .flat_map(|p| decoder.decode(Some(p)))
        .collect();
    let c = ncc(&input, &decoded);
    println!("tap decoded as Opus: correlation {c:.3}");
    assert!(
        c.abs() <= 0.1,
        "the SFU's payloads correlate with the speech: {c:.3}"
    );
    world.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_percent_loss_still_sounds_right() {
    let world = start(0.05).await;
    let (host, host_p) = world.user("host").await;
    let room = host
        .create_room("Lossy", RoomKind::Open, None)
        .await
        .unwrap()
        .id;
    let (c, p) = world.user("listener").await;
    let listener = listen(c, p, room.clone(), 15);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let input = speech_like(23, 11.0);
    speak(host, host_p, room.clone(), input.clone())
        .await
        .unwrap();
    let heard = listener.await.unwrap();
    let c = ncc(&input, &heard.mix);
    println!("5% loss: correlation {c:.3}, {:?}", heard.stats);
    assert!(
        c >= 0.8,
        "correlation {c:.3} < 0.8 with 5% loss ({:?})",
        heard.stats
    );
    world.server.shutdown().await.unwrap();
}

/// A second speaker joins the stage mid-room (invited by the host's device,
/// which signs the MLS invitation); listeners hear both without any
/// renegotiation. A listener is banned: the key rotates, and frames sent
/// after the rotation do not decrypt for them, while the others hear on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_speaker_mid_room_and_a_banned_listener_is_cut_off() {
    let world = start(0.0).await;
    let (host, host_p) = world.user("host").await;
    let (guest, guest_p) = world.user("guest").await;
    let (stay, stay_p) = world.user("stayer").await;
    let (gone, gone_p) = world.user("banned_one").await;
    let guest_id = guest.me().await.unwrap().id;
    let gone_id = gone.me().await.unwrap().id;
    let room = host
        .create_room("Two voices", RoomKind::Open, None)
        .await
        .unwrap()
        .id;
    let moderator = host.clone();

    let stayer = listen(stay, stay_p, room.clone(), 22);
    let banned = listen(gone, gone_p, room.clone(), 22);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The host speaks A (6 s); her device will sign the guest's invitation.
    let a = speech_like(31, 6.0);
    let host_task = {
        let (room, a) = (room.clone(), a.clone());
        let guest_id = guest_id.clone();
        tokio::spawn(async move {
            let mut config = SessionConfig::new(
                room,
                Mode::Speak {
                    samples: a,
                    repeat: false,
                },
            );
            config.invite = vec![guest_id];
            // Keep the host's session (the key distributor) alive after she stops talking.
            let mut padded = match config.mode {
                Mode::Speak { samples, .. } => samples,
                Mode::Listen => unreachable!(),
            };
            padded.extend(std::iter::repeat_n(0.0, 14 * SECOND));
            config.mode = Mode::Speak {
                samples: padded,
                repeat: false,
            };
            run(&host, &host_p, config, |_| {}).await.unwrap()
        })
    };
    // The guest is in the audience, then invited and accepts; after 7 s of
    // silence it speaks B.
    let mut b_input = vec![0.0; 7 * SECOND];
    let b = speech_like(32, 6.0);
    b_input.extend_from_slice(&b);
    let guest_client = guest.clone();
    let guest_task = speak(guest, guest_p, room.clone(), b_input);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    moderator
        .member_action(&room, &guest_id, "invite-to-stage")
        .await
        .unwrap();
    guest_client
        .room_action(&room, "accept-stage")
        .await
        .unwrap();

    // At 10 s the banned listener goes; later frames are captured at the SFU.
    tokio::time::sleep(Duration::from_secs(8)).await;
    moderator
        .member_action(&room, &gone_id, "ban")
        .await
        .unwrap();
    let media = world.server.media.as_ref().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    media.take_tap(&room).await; // frames from around the rotation
    let guest_out = guest_task.await.unwrap();
    let after_rotation = media.take_tap(&room).await;
    let host_out = host_task.await.unwrap();
    let heard = stayer.await.unwrap();
    let cut = banned.await.unwrap();

    println!(
        "guest {:?}\nhost {:?}\nstayer {:?}\nbanned {:?}",
        guest_out.stats, host_out.stats, heard.stats, cut.stats
    );
    assert_eq!(cut.ended_by.as_deref(), Some("banned"));
    let ca = ncc(&a, &heard.mix);
    // B starts some 9 s into the listener's recording: a wider search.
    let cb = aligned_correlation(&b, &heard.mix, 16 * SECOND).1;
    println!("stayer hears A {ca:.3}, B {cb:.3}");
    assert!(ca >= 0.9, "the host: {ca:.3}");
    assert!(cb >= 0.9, "the second speaker: {cb:.3}");
    assert_eq!(
        heard.stats.renegotiations, 0,
        "no renegotiation for a listener"
    );
    assert!(
        guest_out.stats.frames_sent > 250,
        "the guest spoke with a stage key: {:?}",
        guest_out.stats
    );

    // Everything sent after the rotation is closed to the banned listener.
    assert!(
        after_rotation.len() > 100,
        "captured {}",
        after_rotation.len()
    );
    let mut crypto = cut.crypto.expect("the banned listener's crypto state");
    let opened = after_rotation
        .iter()
        .filter(|frame| crypto.decrypt(u64::MAX / 2, frame).is_ok())
        .count();
    assert_eq!(
        opened,
        0,
        "{opened} of {} post-rotation frames decrypted for the banned listener",
        after_rotation.len()
    );
    assert_eq!(
        heard.stats.decrypt_failures, 0,
        "the remaining listener decrypted every frame"
    );
    world.server.shutdown().await.unwrap();
}

fn run_session(
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

/// Attack 1 of the malicious-operator issue, through the real server, its
/// database, real UDP and real audio: the operator inserts one row into its
/// own `devices` table for an existing listener, with a key it holds, logs
/// in with that key and listens to the room. Before device chains it heard
/// the room (correlation 0.97); now no frame decrypts for it, the key
/// distributor (the speaker's client) says why, and the real listener
/// hears as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_row_inserted_by_the_operator_hears_nothing() {
    let world = start(0.0).await;
    let (server, dir) = (&world.server, &world.dir);
    let (host, host_p) = world.user("host").await;
    let room = host
        .create_room("Private talk", RoomKind::Open, None)
        .await
        .unwrap()
        .id;
    let (bob, bob_p) = world.user("bob").await;
    let bob_id = bob.me().await.unwrap().id;
    let room_for_bob = room.clone();
    let real = tokio::spawn(async move {
        let mut config = SessionConfig::new(room_for_bob, Mode::Listen);
        config.stop_after = Some(Duration::from_secs(16));
        // Checked every 2 s here (30 s by default): the row comes later.
        config.own_devices_every = Duration::from_secs(2);
        run(&bob, &bob_p, config, |_| {}).await.unwrap()
    });
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
    let op = run_session(op_client, op_profile, room.clone(), Mode::Listen, 14);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let input = speech_like(21, 10.0);
    let speaker = run_session(
        host,
        host_p,
        room.clone(),
        Mode::Speak {
            samples: input.clone(),
            repeat: false,
        },
        30,
    );
    // A listener who arrives while the host speaks: time to first audio
    // (join, media, admission with device-chain checks, first frame).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (carol, carol_p) = world.user("carol").await;
    let late = run_session(carol, carol_p, room.clone(), Mode::Listen, 5)
        .await
        .unwrap();
    let ttfa = late.stats.first_audio_ms;
    println!(
        "late listener: time to first audio {ttfa:?} ms, {:?}",
        late.stats
    );
    assert!(
        ttfa.is_some_and(|ms| ms < 5_000),
        "the late listener heard nothing: {:?}",
        late.stats
    );
    let speaker = speaker.await.unwrap();
    assert!(speaker.stats.frames_sent >= 450, "{:?}", speaker.stats);

    let heard = real.await.unwrap();
    let c = aligned_correlation(&input, &heard.mix, 3 * SECOND).1;
    println!("real listener: correlation {c:.3}, {:?}", heard.stats);
    assert!(c >= 0.8, "the real listener's correlation {c:.3} < 0.8");
    assert_eq!(heard.stats.hidden_listeners, 0, "{:?}", heard.stats);
    // Nothing of the operator's device is on the roster (it got no key),
    // but bob's own client sees the device row it never added.
    assert_eq!(heard.stats.unknown_own_devices, 1, "{:?}", heard.stats);
    said(&heard, "of YOUR account that none of your devices added");

    got_ciphertext_only(&op.await.unwrap(), "the operator's device");
    said(&speaker, "refused a device key");
    world.server.shutdown().await.unwrap();
}

/// `who` received the room's ciphertext and decrypted none of it.
fn got_ciphertext_only(outcome: &SessionOutcome, who: &str) {
    println!("{who}: {:?}", outcome.stats);
    assert!(
        outcome.stats.packets_received >= 100,
        "{who} got too little ciphertext to show anything: {:?}",
        outcome.stats
    );
    assert_eq!(outcome.stats.decrypted, 0, "{who} decrypted frames");
}

/// The session printed an alert containing `what`.
fn said(outcome: &SessionOutcome, what: &str) {
    assert!(
        outcome.stats.alerts.iter().any(|a| a.contains(what)),
        "no alert \"{what}\": {:?}",
        outcome.stats.alerts
    );
}

/// Attack 11 through the real server and database: the operator lets an
/// account into a closed room with one row in `room_access` (no moderator
/// signed it). The server lets it in; the host's client, the key
/// distributor, gives it no key. The listener the host let in with a
/// signed allow hears.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_room_keys_only_listeners_a_moderator_signed_for() {
    let world = start(0.0).await;
    let server = &world.server;
    let (host, host_p) = world.user("host").await;
    let room = host
        .create_room("Closed talk", RoomKind::Closed, None)
        .await
        .unwrap()
        .id;
    let (alice, alice_p) = world.user("alice").await;
    host.grant_access(&room, "alice").await.unwrap();
    let (eve, eve_p) = world.user("eve").await;
    let eve_id = eve.me().await.unwrap().id;
    assert!(eve.join(&room).await.is_err(), "a closed room let eve in");
    // The operator's move: one row in its own database.
    sqlx::query("INSERT INTO room_access (room_id, user_id, created_at) VALUES ($1, $2, $3)")
        .bind(room.0.clone())
        .bind(eve_id.0.clone())
        .bind(SystemClock.now_ms())
        .execute(server.store.pool())
        .await
        .unwrap();

    let input = speech_like(31, 8.0);
    let samples = input.clone();
    let speaker = run_session(
        host,
        host_p,
        room.clone(),
        Mode::Speak {
            samples,
            repeat: false,
        },
        16,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let heard = run_session(alice, alice_p, room.clone(), Mode::Listen, 13);
    let stolen = run_session(eve, eve_p, room.clone(), Mode::Listen, 13);
    let speaker = speaker.await.unwrap();
    let heard = heard.await.unwrap();
    let stolen = stolen.await.unwrap();
    got_ciphertext_only(&stolen, "eve");
    let c = aligned_correlation(&input, &heard.mix, 3 * SECOND).1;
    println!("alice: correlation {c:.3}, {:?}", heard.stats);
    assert!(c >= 0.8, "alice's correlation {c:.3} < 0.8");
    said(&speaker, "refused the room key");
    world.server.shutdown().await.unwrap();
}
