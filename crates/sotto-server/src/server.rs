//! Starting and stopping a server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{ServerConfig, TlsSetting};
use crate::http::accounts::new_invite_code;
use crate::http::extract::secret_hash;
use crate::http::{AppState, router};
use crate::store::Store;
use crate::tls;

/// Longest a stopping server waits for its session channels to close.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A server that is accepting connections.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    /// `http(s)://host:port` as clients should use it.
    pub base_url: String,
    /// On an empty database: the one-time admin invite link.
    pub bootstrap_invite: Option<String>,
    /// With TLS: the certificate clients pin and its SHA-256.
    pub pinned_cert: Option<(Option<PathBuf>, String)>,
    /// The media plane's UDP address (as advertised in SDP answers).
    pub media_addr: Option<SocketAddr>,
    /// The media plane itself (tests read its counters and, with the `tap`
    /// feature, what it forwarded).
    pub media: Option<crate::media::MediaPlane>,
    pub store: Store,
    /// The E2EE relay (public state only), for audits and tests.
    pub e2ee: crate::e2ee_relay::E2eeRelay,
    draining: Arc<tokio::sync::watch::Sender<bool>>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    retention: JoinHandle<()>,
}

/// Binds, migrates the database, and starts serving.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    if !config.http.ip().is_loopback() && config.tls == TlsSetting::Off {
        bail!(
            "refusing to serve plain HTTP on {}, which is not a loopback address: \
             session tokens and invite codes would cross the network in clear. \
             Pass --tls-cert FILE --tls-key FILE, or --tls-self-signed.",
            config.http
        );
    }
    let store = Store::open(&config.database)
        .await
        .context("cannot open the database")?;
    let mut hostnames = vec![config.http.ip().to_string()];
    if let Some(host) = config.public_url.as_deref().and_then(host_of) {
        hostnames.push(host);
    }
    let tls = tls::prepare(&config.tls, &config.data_dir, &hostnames)?;

    let listener = std::net::TcpListener::bind(config.http)
        .with_context(|| format!("cannot listen on {}", config.http))?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base_url = match &config.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => format!("{scheme}://{local_addr}"),
    };

    let media = match &config.media {
        Some(media) => Some(
            crate::media::MediaPlane::start(media)
                .await
                .with_context(|| format!("cannot open the media UDP socket on {}", media.bind))?,
        ),
        None => None,
    };
    let e2ee = crate::e2ee_relay::E2eeRelay::open(&store, &config.data_dir)
        .await
        .context("cannot resume the E2EE relay's state")?;
    let config = Arc::new(config);
    let state = AppState::new(
        store.clone(),
        config.clone(),
        base_url.clone(),
        media.clone(),
        e2ee,
    );
    if let Some(media) = media {
        tokio::spawn(follow_rooms(state.bus.subscribe_full(), media));
    }
    tokio::spawn(crate::e2ee_relay::follow_rooms(
        state.bus.subscribe_full(),
        state.e2ee.clone(),
    ));
    let now = config.clock.now_ms();
    let code = new_invite_code();
    let ttl = i64::try_from(config.bootstrap_invite_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let bootstrap_invite = store
        .replace_bootstrap_invite(&secret_hash(&code), now + ttl, now)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?
        .then(|| state.invite_url(&code));

    let state_media_addr = state.media.as_ref().map(|m| m.advertised);
    let state_media = state.media.clone();
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (shutdown, signal) = oneshot::channel::<()>();
    let retention = tokio::spawn(retention_task(state.clone()));
    let pinned_cert = tls
        .as_ref()
        .map(|t| (t.ca_path.clone(), t.fingerprint.clone()));
    let task = match tls {
        None => {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = signal.await;
                    })
                    .await
            })
        }
        Some(material) => {
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                let _ = signal.await;
                stopper.graceful_shutdown(Some(Duration::from_secs(10)));
            });
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(material.server_config);
            tokio::spawn(async move {
                axum_server::from_tcp_rustls(listener, rustls)
                    .handle(handle)
                    .serve(app)
                    .await
            })
        }
    };
    tracing::info!(tls = scheme == "https", "listening");
    Ok(RunningServer {
        local_addr,
        base_url,
        bootstrap_invite,
        pinned_cert,
        media_addr: state_media_addr,
        media: state_media,
        store,
        e2ee: state.e2ee.clone(),
        draining: state.draining.clone(),
        metrics: state.metrics.clone(),
        shutdown: Some(shutdown),
        task,
        retention,
    })
}

/// Keeps the media plane's publish rights in step with every room change.
async fn follow_rooms(
    mut events: tokio::sync::broadcast::Receiver<Arc<crate::bus::RoomEvent>>,
    media: crate::media::MediaPlane,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(event) => media.apply(&event.view, event.delta.as_ref()).await,
            // Missed events: the next change of each room re-applies its state.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

/// Deletes expired sessions, challenges, invites and long-ended rooms, and
/// takes absent participants out of live rooms, now and then every
/// `retention_interval`.
async fn retention_task(state: AppState) {
    let config = state.config.clone();
    let keep = i64::try_from(config.ended_room_retention.as_millis()).unwrap_or(i64::MAX / 2);
    let presence_ttl = i64::try_from(config.presence_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let mut ticks = tokio::time::interval(config.retention_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = config.clock.now_ms();
        match state.store.purge_expired(now, keep).await {
            Ok(p) if p != Default::default() => tracing::info!(
                sessions = p.sessions,
                challenges = p.challenges,
                invites = p.invites,
                rooms = p.rooms,
                "retention: deleted expired rows"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(code = e.code.as_str(), "retention pass failed"),
        }
        let absent = match state
            .store
            .absent_members(now.saturating_sub(presence_ttl))
            .await
        {
            Ok(absent) => absent,
            Err(e) => {
                tracing::warn!(code = e.code.as_str(), "presence pass failed");
                continue;
            }
        };
        for (room, user) in absent {
            // Leaving hands the stage over and ends an empty one, as if they had left.
            if let Ok(access) = state
                .store
                .act(&room, &user, crate::rooms::Action::Leave, None, now)
                .await
            {
                state.announce(access);
            }
        }
    }
}

impl RunningServer {
    /// Drains, stops accepting, lets requests in flight finish, closes the
    /// database. Draining tells every open session channel that the server
    /// is going away and when to come back, and waits (at most
    /// [`DRAIN_TIMEOUT`]) for the channels to close: clients are told, not
    /// dropped. Rooms and their stage groups carry on after a restart.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.drain().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = (&mut self.task).await;
        if let Some(media) = &self.media {
            media.stop().await;
        }
        self.retention.abort();
        self.store.close().await;
        result??;
        Ok(())
    }

    /// Tells every open session channel to reconnect later and waits until
    /// they have closed (or [`DRAIN_TIMEOUT`] passed). New channels opened
    /// meanwhile are told the same at once.
    pub async fn drain(&self) {
        self.draining.send_replace(true);
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while self
            .metrics
            .channel_open
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Serves until the task ends (it ends only after [`RunningServer::shutdown`]
    /// or an error).
    pub fn shutdown_handle(&mut self) -> Option<oneshot::Sender<()>> {
        self.shutdown.take()
    }
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority)
    };
    (!host.is_empty()).then(|| host.to_string())
}
