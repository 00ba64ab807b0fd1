//! Smoke run of the load generator (issue 10): a real `sotto serve`, then
//! `sotto bench fanout` with a handful of listeners for a few seconds and
//! the raw harness beside it. Checks that every figure comes out, not how
//! good it is: benchmarks are not timed tests.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

const SOTTO: &str = env!("CARGO_BIN_EXE_sotto");

#[test]
fn fanout_smoke_run_prints_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let invite = Command::new(SOTTO)
        .args(["admin", "invite", "--uses", "20", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(invite.status.success());
    let invite = String::from_utf8(invite.stdout).unwrap();
    let invite = invite.lines().last().unwrap().trim().to_string();

    let mut server = Command::new(SOTTO)
        .args(["serve", "--http", "127.0.0.1:0", "--auth-rate-limit", "0"])
        .arg("--data-dir")
        .arg(&data)
        .env("SOTTO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = BufReader::new(server.stdout.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(banner.read_line(&mut line).unwrap() > 0, "serve exited");
        if let Some(url) = line.trim().strip_prefix("sotto is serving at ") {
            break url.to_string();
        }
    };
    let pid = server.id().to_string();
    let out = Command::new(SOTTO)
        .args(["bench", "fanout", "--server", &url, "--invite", &invite])
        .args(["--listeners", "6", "--speakers", "2", "--seconds", "3"])
        .args(["--sample", "3", "--server-pid", &pid, "--with-raw"])
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figure = |label: &str| {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} in:\n{stdout}"));
        assert!(!line.contains("n/a"), "{line}");
        line.to_string()
    };
    assert!(figure("listeners connected").contains("6 of 6"));
    for label in [
        "forwarded",
        "loss",
        "server CPU per packet",
        "packets per CPU-s",
        "server RSS/listener",
        "forwarding latency",
        "time to first audio",
        "raw (same N, S, T)",
        "sotto ÷ raw",
    ] {
        figure(label);
    }
    let sframe = figure("SFrame on the sample");
    assert!(sframe.contains(", 0 bad"), "{sframe}");
    assert!(!sframe.starts_with("SFrame on the sample  0 "), "{sframe}");
}
