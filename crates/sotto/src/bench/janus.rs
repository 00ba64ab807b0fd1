//! `sotto bench janus`: the same fan-out against Janus 1.1 (Debian's
//! `janus`), the peer SFU: VideoRoom, audio only, one plain-RTP remote
//! publisher (`add_remote_publisher`), N WebRTC subscribers over the REST
//! API on loopback (the request sequence in `../shared/JANUS.md`), each a
//! lean str0m listener like the sotto ones. Janus runs from a private
//! configuration (HTTP transport and VideoRoom plugin only, REST bound to
//! 127.0.0.1, quiet log) as a child of this process; its CPU and memory
//! come from `/proc` like sotto's.
//!
//! Janus's ICE (libnice) never gathers loopback candidates, so its media
//! needs an interface address: `scripts/bench` runs this mode inside a
//! network namespace of its own with a veth pair (`--ip` is the address
//! there, `--ice-interface` its device); nothing leaves that namespace.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Value, json};
use str0m::Rtc;
use str0m::change::SdpOffer;
use tokio::sync::{Semaphore, watch};

use super::fanout::FanoutReport;
use super::listener::{self, Listener, ListenerStats};
use super::probe;
use super::speaker::{FRAME_BYTES, FRAMES_PER_SECOND};

const ROOM: u64 = 4242;

#[derive(Args, Clone, Debug)]
pub struct JanusArgs {
    #[arg(long, default_value_t = 100)]
    pub listeners: usize,
    /// Seconds of measured sending (one speaker: a plain-RTP remote publisher).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Subscribers set up at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// The Janus executable.
    #[arg(long, default_value = "/usr/bin/janus")]
    pub janus: PathBuf,
    /// The address the subscribers and the publisher use, and Janus's ICE
    /// candidates carry (an interface address, not loopback: see above).
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: std::net::IpAddr,
    /// The one interface Janus gathers ICE candidates on.
    #[arg(long, default_value = "lo")]
    pub ice_interface: String,
    /// Where Debian puts Janus's plugins and transports.
    #[arg(long, default_value = "/usr/lib/x86_64-linux-gnu/janus")]
    pub janus_lib: PathBuf,
    /// Append the result as a Markdown table row to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

struct Janus {
    child: std::process::Child,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Janus {
    fn drop(&mut self) {
        if self.child.kill().is_ok() && self.child.wait().is_err() {
            eprintln!("janus did not exit");
        }
    }
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn write_config(dir: &Path, lib: &Path, http_port: u16, ice: &str) -> anyhow::Result<()> {
    let link = |kind: &str, name: &str| -> anyhow::Result<()> {
        let d = dir.join(kind);
        std::fs::create_dir_all(&d)?;
        std::os::unix::fs::symlink(lib.join(kind).join(name), d.join(name))
            .with_context(|| format!("linking Janus's {name}"))
    };
    link("plugins", "libjanus_videoroom.so")?;
    link("transports", "libjanus_http.so")?;
    for empty in ["events", "loggers"] {
        std::fs::create_dir_all(dir.join(empty))?;
    }
    let d = dir.display();
    std::fs::write(
        dir.join("janus.jcfg"),
        format!(
            r#"general: {{
  configs_folder = "{d}"
  plugins_folder = "{d}/plugins"
  transports_folder = "{d}/transports"
  events_folder = "{d}/events"
  loggers_folder = "{d}/loggers"
  debug_level = 2
  session_timeout = 0
}}
media: {{
  rtp_port_range = "20000-60000"
}}
nat: {{
  ice_enforce_list = "{ice}"
  full_trickle = false
}}
events: {{
  broadcast = false
}}
"#
        ),
    )?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!(
            "general: {{\n  base_path = \"/janus\"\n  http = true\n  port = {http_port}\n  ip = \"127.0.0.1\"\n  https = false\n}}\nadmin: {{\n  admin_http = false\n}}\n"
        ),
    )?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;
    Ok(())
}

impl Janus {
    async fn start(args: &JanusArgs) -> anyhow::Result<Janus> {
        let dir = tempfile::tempdir()?;
        let port = free_tcp_port()?;
        write_config(dir.path(), &args.janus_lib, port, &args.ice_interface)?;
        let log = std::fs::File::create(dir.path().join("janus.log"))?;
        // Everything that can fail comes before the spawn: once it runs,
        // the child is owned by a `Janus`, whose drop ends it.
        let http = reqwest::Client::new();
        let child = std::process::Command::new(&args.janus)
            .arg("-F")
            .arg(dir.path())
            .arg("-C")
            .arg(dir.path().join("janus.jcfg"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", args.janus.display()))?;
        let janus = Janus {
            child,
            base: format!("http://127.0.0.1:{port}/janus"),
            http,
            _dir: dir,
        };
        for _ in 0..100 {
            if janus
                .http
                .get(format!("{}/info", janus.base))
                .send()
                .await
                .is_ok()
            {
                return Ok(janus);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("Janus did not answer on its REST port")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn post(&self, path: &str, mut body: Value) -> anyhow::Result<Value> {
        body["transaction"] = json!(format!("{:016x}", rand::random::<u64>()));
        let reply: Value = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        if reply["janus"] == "error" {
            bail!("Janus refused {}: {}", body["janus"], reply["error"]);
        }
        if let Some(err) = reply["plugindata"]["data"].get("error") {
            bail!("VideoRoom refused a request: {err}");
        }
        Ok(reply)
    }

    async fn session_and_handle(&self) -> anyhow::Result<(u64, u64)> {
        let s = self.post("", json!({"janus": "create"})).await?;
        let s = s["data"]["id"].as_u64().context("no session id")?;
        let h = self
            .post(
                &format!("/{s}"),
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        let h = h["data"]["id"].as_u64().context("no handle id")?;
        Ok((s, h))
    }

    async fn message(
        &self,
        s: u64,
        h: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut msg = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            msg["jsep"] = jsep;
        }
        self.post(&format!("/{s}/{h}"), msg).await
    }

    /// Long-polls the session until an event carries a JSEP offer.
    async fn wait_offer(&self, s: u64) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let events: Value = self
                .http
                .get(format!("{}/{s}?maxev=10", self.base))
                .send()
                .await?
                .json()
                .await?;
            let events = match events {
                Value::Array(v) => v,
                one => vec![one],
            };
            for e in events {
                if let Some(sdp) = e["jsep"]["sdp"].as_str()
                    && e["jsep"]["type"] == "offer"
                {
                    return Ok(sdp.to_string());
                }
            }
        }
        bail!("no offer from Janus")
    }
}

struct Subscriber {
    stats: Arc<ListenerStats>,
    task: tokio::task::JoinHandle<()>,
}

async fn subscribe(
    janus: &Janus,
    ip: std::net::IpAddr,
    feed: u64,
    epoch: Instant,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Subscriber> {
    let joined = Instant::now();
    let (s, h) = janus.session_and_handle().await?;
    janus
        .message(
            s,
            h,
            json!({"request": "join", "ptype": "subscriber", "room": ROOM, "streams": [{"feed": feed}]}),
            None,
        )
        .await?;
    let offer = janus.wait_offer(s).await?;
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    let local = socket.local_addr()?;
    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .build(Instant::now());
    rtc.add_local_candidate(str0m::Candidate::host(local, "udp")?);
    let offer = SdpOffer::from_sdp_string(&offer)?;
    let answer = rtc.sdp_api().accept_offer(offer)?;
    janus
        .message(
            s,
            h,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer.to_sdp_string(), "trickle": false})),
        )
        .await?;
    let stats = Arc::new(ListenerStats::default());
    let listener = Listener::new((rtc, socket, local), stats.clone(), None, joined, epoch);
    let task = tokio::spawn(listener.run(stop));
    Ok(Subscriber { stats, task })
}

/// Plain RTP, Opus-sized, 50 packets/s, SSRC 1000 (what Janus expects of
/// a remote publisher's first stream).
fn publish(
    to: SocketAddr,
    sent: Arc<AtomicU64>,
    sending: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(SocketAddr::new(to.ip(), 0))?;
    let period = Duration::from_millis(1000 / FRAMES_PER_SECOND);
    let mut next = Instant::now();
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut packet = vec![0x5a; 12 + FRAME_BYTES + 7];
    while !stop.load(Relaxed) {
        if sending.load(Relaxed) {
            packet[0] = 0x80;
            packet[1] = 111;
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            packet[4..8].copy_from_slice(&ts.to_be_bytes());
            packet[8..12].copy_from_slice(&1000u32.to_be_bytes());
            if socket.send_to(&packet, to).is_ok() {
                sent.fetch_add(1, Relaxed);
            }
            seq = seq.wrapping_add(1);
        }
        ts = ts.wrapping_add(960);
        next += period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(())
}

pub async fn run(args: JanusArgs) -> anyhow::Result<FanoutReport> {
    let janus = Janus::start(&args).await?;
    let (s0, h0) = janus.session_and_handle().await?;
    janus
        .message(
            s0,
            h0,
            json!({"request": "create", "room": ROOM, "publishers": 16, "audiocodec": "opus",
                   "is_private": true}),
            None,
        )
        .await
        .context("creating the VideoRoom room")?;
    let publisher = janus
        .message(
            s0,
            h0,
            json!({"request": "add_remote_publisher", "room": ROOM, "display": "spk1",
                   "streams": [{"type": "audio", "mindex": 0, "mid": "0", "codec": "opus"}]}),
            None,
        )
        .await
        .context("adding the remote publisher")?;
    let data = &publisher["plugindata"]["data"];
    let feed = data["id"].as_u64().context("no publisher id")?;
    let port = data["port"].as_u64().context("no RTP port")?;
    let to = SocketAddr::new(args.ip, u16::try_from(port)?);

    let sent = Arc::new(AtomicU64::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let stop_publisher = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (sent, sending, stop) = (sent.clone(), sending.clone(), stop_publisher.clone());
        std::thread::spawn(move || publish(to, sent, sending, stop))
    };
    let rss_before = probe::rss_kib(janus.pid())?;
    let epoch = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    let janus = Arc::new(janus);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut setups = tokio::task::JoinSet::new();
    let ip = args.ip;
    for _ in 0..args.listeners {
        let (gate, janus, stop) = (gate.clone(), janus.clone(), stop.clone());
        setups.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            subscribe(&janus, ip, feed, epoch, stop).await
        });
    }
    let mut subscribers = Vec::new();
    let mut failed = 0;
    while let Some(done) = setups.join_next().await {
        match done? {
            Ok(s) => subscribers.push(s),
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("a Janus subscriber failed to set up: {e:#}");
                }
            }
        }
    }
    let stats: Vec<Arc<ListenerStats>> = subscribers.iter().map(|l| l.stats.clone()).collect();
    listener::wait_first_audio(&stats, Duration::from_secs(30)).await;
    let connected = listener::connected(&stats);
    eprintln!(
        "janus: {connected} of {} subscribers connected ({failed} failed to set up)",
        args.listeners
    );
    let rss_after = probe::rss_kib(janus.pid())?;

    sending.store(false, Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (r0, s0) = (listener::packets(&stats), sent.load(Relaxed));
    let c0 = probe::cpu_seconds(janus.pid())?;
    let d0 = probe::udp_rcvbuf_errors();
    let t0 = Instant::now();
    sending.store(true, Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    sending.store(false, Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wall = t0.elapsed().as_secs_f64();
    let c1 = probe::cpu_seconds(janus.pid())?;
    let d1 = probe::udp_rcvbuf_errors();
    let (r1, s1) = (listener::packets(&stats), sent.load(Relaxed));

    let ttfa = listener::first_audio_seconds(&stats);
    // Janus counts nothing we can read per packet: forwarded = what the
    // subscribers received (an undercount if Janus sent more).
    let report = FanoutReport {
        server: "janus",
        listeners: args.listeners,
        connected,
        speakers: 1,
        seconds: wall,
        expected: (s1 - s0) * args.listeners as u64,
        received: r1 - r0,
        forwarded: (r1 - r0) as f64,
        server_cpu: Some(c1 - c0),
        rss_per_listener_kib: Some(
            (rss_after as f64 - rss_before as f64) / args.listeners.max(1) as f64,
        ),
        latency_p50: None,
        latency_p99: None,
        ttfa_p50: probe::sample_quantile(&ttfa, 0.5),
        ttfa_p95: probe::sample_quantile(&ttfa, 0.95),
        sframe_ok: 0,
        sframe_bad: 0,
        rcvbuf_drops: d0.zip(d1).map(|(a, b)| b.saturating_sub(a)),
        raw: None,
    };
    stop_tx.send(true).context("stopping the subscribers")?;
    for s in subscribers {
        s.task.await?;
    }
    stop_publisher.store(true, Relaxed);
    publisher
        .join()
        .map_err(|_| anyhow::anyhow!("the publisher thread panicked"))??;
    Ok(report)
}
