//! The Stanford Internet Observatory's method, as a regression test: run a
//! room over TLS with real clients — follows, hand raises, stage changes, a
//! mute, a ban, speech — capture every packet to and from the server with
//! dumpcap, and look for identifiers in what an observer on the network
//! sees. (This test binary holds one test so no other test's traffic is on
//! the server's address while it captures.)

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
use sotto_server::{ServerConfig, TlsSetting};

/// Only this test's server uses this address.
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);

struct Capture {
    child: std::process::Child,
    path: std::path::PathBuf,
}

fn start_capture(dir: &std::path::Path) -> Capture {
    let path = dir.join("observer.pcap");
    let mut child = Command::new("dumpcap")
        .args([
            "-q",
            "-P",
            "-i",
            "lo",
            "-f",
            &format!("host {SERVER_IP}"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_network_observer_sees_no_identifiers_and_no_other_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path());
    config.http = SocketAddr::new(IpAddr::V4(SERVER_IP), 0);
    config.tls = TlsSetting::SelfSigned;
    config.auth_per_minute = 0;
    config.media = Some(MediaConfig {
        bind: SocketAddr::new(IpAddr::V4(SERVER_IP), 0),
        ..MediaConfig::default()
    });
    let capture = start_capture(dir.path());
    let server = sotto_server::start(config).await.unwrap();
    let ca = server.pinned_cert.clone().unwrap().0.unwrap();
    let (http_port, media_port) = (server.local_addr.port(), server.media_addr.unwrap().port());

    // Everything an observer must not learn.
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    let title = "Clandestine observatory chat";
    secrets.push(("room title".into(), title.as_bytes().to_vec()));
    let bootstrap = server.bootstrap_invite.clone().unwrap();
    let code = bootstrap.rsplit('/').next().unwrap().to_string();
    secrets.push(("invite code".into(), code.as_bytes().to_vec()));

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
    let mut admin: Option<Client> = None;
    for (i, name) in names.iter().enumerate() {
        let invite = match &admin {
            None => code.clone(),
            Some(a) => {
                let invite = a.create_invite(1, 3600).await.unwrap();
                secrets.push((
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
        secrets.push((format!("username {name}"), name.as_bytes().to_vec()));
        secrets.push((format!("display name {name}"), display.as_bytes().to_vec()));
        secrets.push((
            format!("account id {name}"),
            session.user_id.0.as_bytes().to_vec(),
        ));
        secrets.push((
            format!("session token {name}"),
            session.token.as_bytes().to_vec(),
        ));
        secrets.push((
            format!("device key {name}"),
            profile.public_key().as_bytes().to_vec(),
        ));
        if i == 0 {
            admin = Some(client.clone());
        }
        users.push((client, profile));
    }
    for (client, _) in &users[1..] {
        client.follow("obshostess").await.unwrap();
    }
    let host = users[0].0.clone();
    let room = host
        .create_room(title, RoomKind::Social, None)
        .await
        .unwrap()
        .id;
    secrets.push(("room id".into(), room.0.as_bytes().to_vec()));

    // Five listeners and the guest follow the room with full sessions.
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
    let host_room = room.clone();
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
        config.invite = vec![guest];
        run(&host_client, &host_profile, config, |_| {})
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Hand, stage, mute, ban.
    let guest_client = Client::new(&server.base_url, Some(&ca)).unwrap();
    let mut guest_client = guest_client;
    guest_client
        .login(&Profile::open(&dir.path().join("obsguest77")).unwrap())
        .await
        .unwrap();
    guest_client.room_action(&room, "raise-hand").await.unwrap();
    let guest_id = host.profile("obsguest77").await.unwrap().id;
    host.member_action(&room, &guest_id, "invite-to-stage")
        .await
        .unwrap();
    guest_client
        .room_action(&room, "accept-stage")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    host.member_action(&room, &guest_id, "mute").await.unwrap();
    host.member_action(&room, &banned, "ban").await.unwrap();
    let mut heard_any = false;
    for s in sessions {
        let outcome = s.await.unwrap();
        heard_any |= outcome.stats.decrypted > 100;
    }
    host_session.await.unwrap();
    assert!(heard_any, "the scenario carried audio");
    server.shutdown().await.unwrap();
    let pcap = stop_capture(capture);

    let captured = packets(&pcap);
    assert!(
        captured.len() > 1000,
        "captured only {} packets",
        captured.len()
    );
    // Every packet is between a client and the server's two configured ports.
    let server_ports = [http_port, media_port];
    let is_server =
        |a: &SocketAddr| a.ip() == IpAddr::V4(SERVER_IP) && server_ports.contains(&a.port());
    for (src, dst, proto, _) in &captured {
        let icmp_about_server =
            *proto == 1 && (src.ip() == IpAddr::V4(SERVER_IP) || dst.ip() == IpAddr::V4(SERVER_IP));
        assert!(
            is_server(src) || is_server(dst) || icmp_about_server,
            "a packet not to or from the server's configured ports: proto {proto} {src} -> {dst}"
        );
    }
    // No identifier in any form in anything an observer saw.
    for (what, value) in &secrets {
        for form in encodings(value) {
            assert!(
                !find(&pcap, &form),
                "{what} is visible on the wire (as {:?})",
                String::from_utf8_lossy(&form)
            );
        }
    }
    println!(
        "{} packets, {} bytes captured; {} identifiers searched in {} forms each",
        captured.len(),
        pcap.len(),
        secrets.len(),
        encodings(b"12345678").len()
    );
}
