//! The `sotto` binary end to end: serve on the embedded default, the admin
//! invite, register, follow, room create/list/join, graceful shutdown.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SOTTO: &str = env!("CARGO_BIN_EXE_sotto");

struct Serve {
    child: Child,
    url: String,
    lines: Vec<String>,
    log: std::path::PathBuf,
}

/// Starts `sotto serve` and reads its banner up to the line starting with `until`.
fn serve(data: &Path, extra: &[&str], until: &str) -> Serve {
    let any_port: &[&str] = if extra.contains(&"--http") {
        &[]
    } else {
        &["--http", "127.0.0.1:0"]
    };
    let mut child = Command::new(SOTTO)
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(any_port)
        // This test runs dozens of commands a second from one address.
        .args(["--auth-rate-limit", "0"])
        .args(extra)
        .env_remove("SOTTO_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(data.with_extension("log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "serve exited early: {lines:?}"
        );
        let line = line.trim_end().to_string();
        let done = line.starts_with(until);
        lines.push(line);
        if done {
            break;
        }
    }
    let url = lines
        .iter()
        .find_map(|l| l.strip_prefix("sotto is serving at "))
        .unwrap()
        .to_string();
    Serve {
        child,
        url,
        lines,
        log: data.with_extension("log"),
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(SOTTO).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "sotto {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("").trim()
}

fn http_get(url: &str, path: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn stop(mut server: Serve) {
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&server.log).unwrap_or_default();
            assert!(status.success(), "serve exited with {status}:\n{log}");
            // A log written to a file is plain text (it logs at least
            // "listening"): no terminal colour codes.
            assert!(log.contains("listening"), "{log}");
            assert!(
                !log.contains('\u{1b}'),
                "colour codes in a log file: {log:?}"
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_register_follow_and_rooms() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = serve(&data, &[], "No accounts yet.");
    let invite_url = server
        .lines
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(
        invite_url.starts_with(&format!("{}/invite/", server.url)),
        "{invite_url}"
    );
    assert!(http_get(&server.url, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(&server.url, &invite_url[server.url.len()..]).starts_with("HTTP/1.1 200"));
    assert!(data.join("sotto.db").exists());

    let p1 = tmp.path().join("alice");
    let p2 = tmp.path().join("bob");
    let (p1s, p2s) = (p1.to_str().unwrap(), p2.to_str().unwrap());
    let url = server.url.as_str();
    // The invite link itself works as --invite.
    run(&[
        "register",
        "--server",
        url,
        "--invite",
        &invite_url,
        "--username",
        "alice",
        "--profile",
        p1s,
    ]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(p1.join("device.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // An invite made offline against the same database, code on the last line.
    let out = run(&[
        "admin",
        "invite",
        "--data-dir",
        data.to_str().unwrap(),
        "--uses",
        "2",
        "--expires",
        "1h",
    ]);
    let code = last_line(&out).to_string();
    assert!(
        code.len() == 32 && code.chars().all(|c| c.is_ascii_hexdigit()),
        "{out}"
    );
    run(&[
        "register",
        "--server",
        url,
        "--invite",
        &code,
        "--username",
        "bob",
        "--profile",
        p2s,
    ]);
    let out = run(&["whoami", "--profile", p2s]);
    assert!(out.contains("@bob"), "{out}");

    run(&["follow", "alice", "--server", url, "--profile", p2s]);
    // A social room is for people its host follows.
    run(&["follow", "bob", "--server", url, "--profile", p1s]);
    let out = run(&[
        "room",
        "create",
        "--server",
        url,
        "--profile",
        p1s,
        "--title",
        "Hello world",
        "--kind",
        "social",
    ]);
    let room = last_line(&out).to_string();
    assert!(
        room.len() == 32 && room.chars().all(|c| c.is_ascii_hexdigit()),
        "{out}"
    );
    let out = run(&["room", "list", "--server", url, "--profile", p2s]);
    assert!(
        out.contains(&room) && out.contains("Hello world") && out.contains("@alice"),
        "{out}"
    );
    let out = run(&[
        "room",
        "join",
        "--server",
        url,
        "--profile",
        p2s,
        "--room",
        &room,
    ]);
    assert!(out.contains("listener") && out.contains("@bob"), "{out}");
    // Moderation from the command line.
    let r = room.as_str();
    run(&[
        "room",
        "hand",
        "--server",
        url,
        "--profile",
        p2s,
        "--room",
        r,
    ]);
    run(&[
        "room",
        "invite-speaker",
        "--server",
        url,
        "--profile",
        p1s,
        "--room",
        r,
        "bob",
    ]);
    let out = run(&[
        "room",
        "accept",
        "--server",
        url,
        "--profile",
        p2s,
        "--room",
        r,
    ]);
    assert!(out.contains("on stage"), "{out}");
    let out = run(&[
        "room",
        "mute",
        "--server",
        url,
        "--profile",
        p1s,
        "--room",
        r,
        "bob",
    ]);
    assert!(out.contains("@bob: speaker, muted"), "{out}");
    let out = run(&[
        "room",
        "move-to-audience",
        "--server",
        url,
        "--profile",
        p1s,
        "--room",
        r,
        "bob",
    ]);
    assert!(out.contains("@bob: listener"), "{out}");
    let out = run(&[
        "room",
        "ban",
        "--server",
        url,
        "--profile",
        p1s,
        "--room",
        r,
        "bob",
    ]);
    assert!(out.contains("no longer in the room"), "{out}");
    let banned = Command::new(SOTTO)
        .args([
            "room",
            "join",
            "--server",
            url,
            "--profile",
            p2s,
            "--room",
            r,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&banned.stderr).contains("banned_from_room"));

    // An admin invite over the API.
    let out = run(&["invite", "--server", url, "--profile", p1s, "--uses", "1"]);
    assert_eq!(last_line(&out).len(), 32, "{out}");

    // Export, then delete (needs --yes).
    let out = run(&["account", "export", "--server", url, "--profile", p2s]);
    let export: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(export["account"]["username"], "bob");
    assert_eq!(export["following"][0]["username"], "alice");
    let refused = Command::new(SOTTO)
        .args(["account", "delete", "--server", url, "--profile", p2s])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    run(&[
        "account",
        "delete",
        "--server",
        url,
        "--profile",
        p2s,
        "--yes",
    ]);
    let gone = Command::new(SOTTO)
        .args(["whoami", "--server", url, "--profile", p2s])
        .output()
        .unwrap();
    assert!(!gone.status.success());

    // A bad command fails with a clear message, not a panic.
    let out = Command::new(SOTTO)
        .args([
            "room",
            "join",
            "--server",
            url,
            "--profile",
            p1s,
            "--room",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("room_not_found") && !err.contains("panicked"),
        "{err}"
    );
    stop(server);

    // The server's log at its default level names no user, room, invite or address.
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(
        log.contains("account created"),
        "the log was captured: {log}"
    );
    for secret in [
        "alice",
        "bob",
        "Hello world",
        code.as_str(),
        room.as_str(),
        "127.0.0.1",
    ] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
    let invite_code = invite_url.rsplit('/').next().unwrap();
    assert!(!log.contains(invite_code));

    // Restarted with accounts: no new admin invite.
    let server = serve(&data, &[], "sotto is serving at");
    std::thread::sleep(Duration::from_millis(200));
    stop(server);
}

#[test]
fn refuses_public_address_without_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(SOTTO)
        .args(["serve", "--data-dir"])
        .arg(tmp.path())
        .args(["--http", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--tls-self-signed"),
        "{err}"
    );
}

#[test]
fn self_signed_tls_prints_what_to_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = serve(&data, &["--tls-self-signed"], "No accounts yet.");
    assert!(server.url.starts_with("https://"));
    let ca = server
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("TLS: self-signed; clients pin "))
        .unwrap();
    let ca = ca.split(' ').next().unwrap().to_string();
    assert!(Path::new(&ca).exists());
    assert!(
        server
            .lines
            .iter()
            .any(|l| l.starts_with("TLS certificate SHA-256: ") && l.len() > 90)
    );
    let invite = server
        .lines
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let profile = tmp.path().join("p");
    let p = profile.to_str().unwrap();
    run(&[
        "register",
        "--server",
        &server.url,
        "--ca",
        &ca,
        "--invite",
        &invite,
        "--username",
        "tls_admin",
        "--profile",
        p,
    ]);
    let out = run(&[
        "room",
        "create",
        "--server",
        &server.url,
        "--ca",
        &ca,
        "--profile",
        p,
        "--title",
        "Over TLS",
    ]);
    assert_eq!(last_line(&out).len(), 32);
    // Without the pin the certificate is refused.
    let out = Command::new(SOTTO)
        .args(["whoami", "--server", &server.url, "--profile", p])
        .output()
        .unwrap();
    assert!(!out.status.success());
    stop(server);
}

/// A free loopback port (TCP and UDP both free now), so that a restarted
/// server comes back where its clients look for it.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn speak_and_listen_carry_on_through_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let (http, udp) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}"));
    let fixed = ["--http", http.as_str(), "--media-udp", udp.as_str()];
    let start = |until: &str| serve(&data, &fixed, until);
    let server = start("No accounts yet.");
    let invite = server
        .lines
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let url = server.url.clone();
    let (alice, bob) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let (pa, pb) = (alice.to_str().unwrap(), bob.to_str().unwrap());
    run(&[
        "register",
        "--server",
        &url,
        "--invite",
        &invite,
        "--username",
        "alice",
        "--profile",
        pa,
    ]);
    let out = run(&["invite", "--server", &url, "--profile", pa, "--uses", "1"]);
    let code = last_line(&out).to_string();
    run(&[
        "register",
        "--server",
        &url,
        "--invite",
        &code,
        "--username",
        "bob",
        "--profile",
        pb,
    ]);
    let out = run(&[
        "room",
        "create",
        "--server",
        &url,
        "--profile",
        pa,
        "--title",
        "Restart",
        "--kind",
        "open",
    ]);
    let room = last_line(&out).to_string();

    let said = sotto_audio::speech_like(7, 6.0);
    let input = tmp.path().join("said.wav");
    sotto_audio::write_wav(&input, &said).unwrap();
    let heard_wav = tmp.path().join("heard.wav");
    let listen = Command::new(SOTTO)
        .args([
            "listen",
            "--server",
            &url,
            "--profile",
            pb,
            "--room",
            &room,
            "--duration",
            "16s",
            "--output",
        ])
        .arg(&heard_wav)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let speak = Command::new(SOTTO)
        .args([
            "speak",
            "--server",
            &url,
            "--profile",
            pa,
            "--room",
            &room,
            "--loop",
            "--duration",
            "16s",
            "--input",
        ])
        .arg(&input)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // SIGTERM: the server drains (clients are told) and exits 0; then it
    // starts again on the same data and ports.
    std::thread::sleep(Duration::from_secs(5));
    stop(server);
    let server = start("sotto is serving at");
    let restarted_at = Instant::now();

    let listened = listen.wait_with_output().unwrap();
    let spoke = speak.wait_with_output().unwrap();
    let (lerr, serr) = (
        String::from_utf8_lossy(&listened.stderr).to_string(),
        String::from_utf8_lossy(&spoke.stderr).to_string(),
    );
    assert!(listened.status.success(), "listen failed:\n{lerr}");
    assert!(spoke.status.success(), "speak failed:\n{serr}");
    for (who, err) in [("listen", &lerr), ("speak", &serr)] {
        assert!(
            err.contains("reconnected, the room goes on"),
            "{who} did not say it reconnected:\n{err}"
        );
        assert!(!err.contains("panicked"), "{who}:\n{err}");
    }
    // After the restart the listener hears the speaker again: 2 s taken
    // 3 s after it is found in what was said (said on a loop).
    let heard = sotto_audio::read_wav(&heard_wav).unwrap();
    let after = restarted_at.elapsed().as_secs_f64();
    let end = heard.len();
    let from = end.saturating_sub(((after - 3.0).max(2.0) * 48_000.0) as usize);
    let piece = &heard[from..(from + 2 * 48_000).min(end)];
    let mut twice = said.clone();
    twice.extend_from_slice(&said);
    let c = sotto_audio::aligned_correlation(piece, &twice, 12 * 48_000).1;
    println!("after the restart the listener heard the speaker with correlation {c:.3}");
    assert!(c >= 0.8, "heard after the restart: {c:.3}\n{lerr}");
    stop(server);
}
