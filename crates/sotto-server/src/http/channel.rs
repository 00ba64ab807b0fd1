//! The session channel: one WebSocket per client session. It pushes the
//! state of the rooms the client subscribed to, on every change.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use sotto_proto::channel::{
    ClientMessage, MAX_MESSAGE_BYTES, ServerEnvelope, ServerMessage, parse_client_message,
};
use sotto_proto::room::{MemberView, RoomDelta, RoomView};
use sotto_proto::{ErrorCode, RoomId, UserId};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;

/// How long a client waits, at least, before it reconnects to a server that
/// said it is going away (a restart takes about this long).
const RECONNECT_AFTER_MS: u32 = 300;
use crate::bus::{RoomEvent, Yours};
use crate::e2ee_relay::{ConnInfo, OUTBOX_CAPACITY, Outbox};
use crate::error::ApiError;
use crate::store::AuthedSession;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a channel sends a changed audience count (see [`crate::bus`]).
const AUDIENCE_COUNT_EVERY: Duration = Duration::from_secs(1);

/// The version and audience count of a room as a channel last sent it,
/// and whether it sends the whole room (to someone on its stage: whoever
/// distributes the audience's keys must see every listener) or its light
/// view ([`RoomView::light`], to the audience).
#[derive(Clone, Copy, Debug)]
struct Sent {
    version: i64,
    count: u32,
    full: bool,
}

impl Sent {
    fn of(view: &RoomView, full: bool) -> Sent {
        Sent {
            version: view.version,
            count: view.audience_count,
            full,
        }
    }
}

fn on_stage(view: &RoomView, user: &UserId) -> bool {
    view.members
        .iter()
        .any(|m| &m.user_id == user && m.role.on_stage())
}
/// Largest frame the socket reads; over it the channel closes.
const SOCKET_READ_LIMIT: usize = 4 * MAX_MESSAGE_BYTES;
/// The socket's read buffer (it grows for a larger message, up to
/// [`SOCKET_READ_LIMIT`]). Channel messages are small; tungstenite's default
/// allocates 128 KiB per socket, which was 120 of the 287 KiB a listener
/// cost the server (BENCHMARKS.md, "Server memory per listener").
const SOCKET_READ_BUFFER: usize = 4 * 1024;

/// Open the session channel (WebSocket). The first message must be `hello` with a session token.
#[utoipa::path(get, path = "/api/ws", tag = "channel",
    params(
        ("Upgrade" = String, Header, pattern = r"^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$", description = "websocket"),
        ("Connection" = String, Header, pattern = r"[Uu][Pp][Gg][Rr][Aa][Dd][Ee]", description = "a list that holds `upgrade`"),
        ("Sec-WebSocket-Version" = String, Header, pattern = r"^13$", description = "13"),
        ("Sec-WebSocket-Key" = String, Header, pattern = r"^[A-Za-z0-9+/]{22}==$", description = "16 random bytes, base64 (RFC 6455)")),
    responses((status = 101, description = "WebSocket; see sotto_proto::channel")))]
pub async fn upgrade(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // RFC 6455: the key is 16 bytes in base64 (axum takes any value).
    let key_ok = headers
        .get(axum::http::header::SEC_WEBSOCKET_KEY)
        .is_some_and(|k| is_websocket_key(k.as_bytes()));
    match ws.ok().filter(|_| key_ok) {
        // The socket reads frames up to four times the protocol's limit,
        // so that a message over the limit is refused with
        // `payload_too_large` on an open channel (a read error would close
        // it: a distributor's oversized roster used to end its session and
        // the room's audio with it).
        Some(ws) => ws
            .read_buffer_size(SOCKET_READ_BUFFER)
            .max_message_size(SOCKET_READ_LIMIT)
            .max_frame_size(SOCKET_READ_LIMIT)
            .on_upgrade(move |socket| run(socket, state)),
        None => ApiError::new(
            ErrorCode::MalformedRequest,
            "open this route as a WebSocket (GET with Connection: upgrade, Upgrade: websocket, \
             Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key)",
        )
        .into_response(),
    }
}

/// 22 base64 characters and `==`: 16 bytes, as the API document says.
fn is_websocket_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
}

struct Channel {
    state: AppState,
    socket: WebSocket,
    user: UserId,
    /// This session's device, as the E2EE relay knows it.
    e2ee: ConnInfo,
    e2ee_tx: Outbox,
    e2ee_rx: tokio::sync::mpsc::Receiver<ServerMessage>,
    /// The subscribed rooms, each with the version of the last state sent
    /// (a delta goes out only to a channel at the version it starts from).
    /// What this channel last told its client of each room it follows.
    rooms: HashMap<RoomId, Sent>,
    /// Every change in full, while this channel follows a room whose
    /// stage it is on (listeners' channels wake only for the light view).
    full_events: Option<tokio::sync::broadcast::Receiver<Arc<RoomEvent>>>,
    /// This session's token hash (a logout closes the channel).
    token_hash: Vec<u8>,
    /// This session's media peers, one per room.
    media: HashMap<RoomId, sotto_sfu::PeerId>,
}

async fn run(mut socket: WebSocket, state: AppState) {
    state.metrics.channel_open.fetch_add(1, Ordering::Relaxed);
    if let Some(session) = hello(&mut socket, &state).await {
        let (e2ee_tx, e2ee_rx) = tokio::sync::mpsc::channel(OUTBOX_CAPACITY);
        // A chain that cannot be read now is relayed empty: receivers then
        // refuse this device's E2EE messages, which is safe.
        let chain = match state.store.device_chain(&session.user_id).await {
            Ok(chain) => sotto_proto::channel::encode_payload(&chain),
            Err(e) => {
                tracing::warn!(
                    code = e.code.as_str(),
                    "session channel: device chain unavailable"
                );
                String::new()
            }
        };
        let mut channel = Channel {
            state: state.clone(),
            socket,
            user: session.user_id.clone(),
            e2ee: ConnInfo {
                id: state.e2ee.next_conn_id(),
                user: session.user_id,
                device: session.device_id,
                key: session.device_key,
                chain: chain.into(),
            },
            e2ee_tx,
            e2ee_rx,
            rooms: HashMap::new(),
            full_events: None,
            token_hash: session.token_hash,
            media: HashMap::new(),
        };
        channel.serve().await;
        channel.end_media().await;
        for room in channel.rooms.keys() {
            state.e2ee.unregister(channel.e2ee.id, room).await;
        }
    }
    state.metrics.channel_open.fetch_sub(1, Ordering::Relaxed);
}

/// Waits for `hello` and checks its token. On failure, says why and closes.
async fn hello(socket: &mut WebSocket, state: &AppState) -> Option<AuthedSession> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, socket.recv())
        .await
        .ok()??
        .ok()?;
    let result = match first {
        Message::Text(text) => match parse_client_message(&text) {
            Ok(ClientMessage::Hello { token }) => state
                .authenticate(&token)
                .await
                .map_err(|e| (e.code, e.message)),
            Ok(_) => Err((
                ErrorCode::HelloRequired,
                "the first message must be hello".into(),
            )),
            Err(e) => Err(e),
        },
        _ => Err((
            ErrorCode::HelloRequired,
            "the first message must be a hello text frame".into(),
        )),
    };
    match result {
        Ok(session) => {
            let welcome = ServerEnvelope::new(ServerMessage::Welcome {
                user_id: session.user_id.clone(),
            });
            socket.send(Message::text(welcome.to_json())).await.ok()?;
            Some(session)
        }
        Err((code, message)) => {
            state.metrics.channel_errors.fetch_add(1, Ordering::Relaxed);
            let _ = socket
                .send(Message::text(
                    ServerEnvelope::error(code, message).to_json(),
                ))
                .await;
            let _ = socket.send(Message::Close(None)).await;
            None
        }
    }
}

impl Channel {
    async fn serve(&mut self) {
        let mut events = self.state.bus.subscribe();
        let mut revocations = self.state.revocations.subscribe();
        let mut presence = tokio::time::interval(self.state.config.presence_refresh);
        let mut counts = tokio::time::interval(AUDIENCE_COUNT_EVERY);
        counts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining = self.state.draining.subscribe();
        let mut gone = self.state.media.as_ref().map(|m| m.gone_peers());
        if *draining.borrow_and_update() {
            self.going_away().await;
            return;
        }
        loop {
            tokio::select! {
                Some(peer) = async { gone.as_mut()?.recv().await.ok() }, if gone.is_some() => {
                    let room = self.media.iter().find(|(_, p)| **p == peer).map(|(r, _)| r.clone());
                    if let Some(room_id) = room {
                        self.media.remove(&room_id);
                        if self.send(ServerMessage::MediaGone { room_id }).await.is_err() { return; }
                    }
                }
                changed = draining.changed() => {
                    if changed.is_err() || *draining.borrow_and_update() {
                        self.going_away().await;
                        return;
                    }
                }
                _ = counts.tick(), if !self.rooms.is_empty() => {
                    if self.send_counts().await.is_err() { return; }
                }
                _ = presence.tick() => {
                    let rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
                    // A failed refresh is retried at the next tick.
                    let _ = self.state.store.touch_presence(&rooms, &self.user, self.state.now()).await;
                }
                incoming = self.socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        self.state.metrics.channel_messages_in.fetch_add(1, Ordering::Relaxed);
                        if self.handle(&text).await.is_err() { return; }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        if self.refuse(ErrorCode::MalformedRequest, "text frames only").await.is_err() { return; }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                },
                Some(out) = self.e2ee_rx.recv() => {
                    if self.send(out).await.is_err() { return; }
                }
                revoked = revocations.recv() => match revoked {
                    Ok(r) if self.is_revoked_by(&r) => {
                        // Best effort: the channel closes either way.
                        let _ = self.refuse(ErrorCode::SessionRevoked, "this session or device was revoked").await;
                        return;
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        // Missed revocations: check this session is still valid.
                        let check = self.state.store.authenticate(&self.token_hash, self.state.now()).await;
                        if check.is_err_and(|e| matches!(e.code, ErrorCode::SessionRevoked | ErrorCode::Unauthenticated)) {
                            return;
                        }
                    }
                    Err(RecvError::Closed) => {}
                },
                event = events.recv() => match event {
                    Ok(event) => if self.deliver(&event, false).await.is_err() { return; },
                    Err(RecvError::Lagged(_)) => if self.resync().await.is_err() { return; },
                    Err(RecvError::Closed) => return,
                },
                event = async { self.full_events.as_mut()?.recv().await.ok() }, if self.full_events.is_some() => match event {
                    Some(event) => if self.deliver(&event, true).await.is_err() { return; },
                    // Lagged (or closed): every room afresh.
                    None => {
                        self.full_events = Some(self.state.bus.subscribe_full());
                        if self.resync().await.is_err() { return; }
                    }
                },
            }
        }
    }

    /// The server is stopping: tell the client when to come back (spread
    /// over a second so a room does not reconnect all at once), then close
    /// with 1012 (service restart). Best effort: the channel ends either way.
    async fn going_away(&mut self) {
        let after = RECONNECT_AFTER_MS + u32::from(crate::http::random_bytes::<2>()[0]) * 4;
        let told = self
            .send(ServerMessage::GoingAway {
                reconnect_after_ms: after,
            })
            .await;
        let closed = self
            .socket
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: 1012,
                reason: "server restarting".into(),
            })))
            .await;
        if told.is_err() || closed.is_err() {
            self.state
                .metrics
                .channel_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn is_revoked_by(&self, r: &crate::http::Revocation) -> bool {
        match r {
            crate::http::Revocation::Device(d) => *d == self.e2ee.device,
            crate::http::Revocation::Session(h) => *h == self.token_hash,
        }
    }

    async fn send(&mut self, msg: ServerMessage) -> Result<(), axum::Error> {
        self.socket
            .send(Message::text(ServerEnvelope::new(msg).to_json()))
            .await
    }

    async fn refuse(
        &mut self,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), axum::Error> {
        self.state
            .metrics
            .channel_errors
            .fetch_add(1, Ordering::Relaxed);
        self.socket
            .send(Message::text(
                ServerEnvelope::error(code, message).to_json(),
            ))
            .await
    }

    async fn handle(&mut self, text: &str) -> Result<(), axum::Error> {
        let msg = match parse_client_message(text) {
            Ok(msg) => msg,
            Err((code, message)) => return self.refuse(code, message).await,
        };
        match msg {
            ClientMessage::Hello { .. } => {
                self.refuse(ErrorCode::MalformedRequest, "already said hello")
                    .await
            }
            ClientMessage::Ping { nonce } => self.send(ServerMessage::Pong { nonce }).await,
            ClientMessage::Unsubscribe { room_id } => {
                self.rooms.remove(&room_id);
                self.state.e2ee.unregister(self.e2ee.id, &room_id).await;
                Ok(())
            }
            ClientMessage::E2ee { room_id, e2ee } => {
                if !self.rooms.contains_key(&room_id) {
                    return self
                        .refuse(ErrorCode::NotInRoom, "subscribe to the room first")
                        .await;
                }
                let result = self
                    .state
                    .e2ee
                    .handle(
                        &self.state.store,
                        &self.state.bus,
                        &self.e2ee,
                        &self.e2ee_tx,
                        &room_id,
                        e2ee,
                    )
                    .await;
                match result {
                    Ok(()) => Ok(()),
                    Err((code, message)) => self.refuse(code, message).await,
                }
            }
            ClientMessage::MediaOffer { room_id, sdp } => self.media_offer(room_id, sdp).await,
            ClientMessage::MediaLeave { room_id } => {
                if let (Some(peer), Some(media)) = (self.media.remove(&room_id), &self.state.media)
                {
                    media.leave(peer).await;
                }
                Ok(())
            }
            ClientMessage::Subscribe { room_id } => {
                match self.state.store.is_member(&room_id, &self.user).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return self
                            .refuse(ErrorCode::NotInRoom, "join the room before subscribing")
                            .await;
                    }
                    Err(e) => return self.refuse(e.code, e.message).await,
                }
                let touched = self
                    .state
                    .store
                    .touch_presence(std::slice::from_ref(&room_id), &self.user, self.state.now())
                    .await;
                if let Err(e) = touched {
                    return self.refuse(e.code, e.message).await;
                }
                match self.room(&room_id).await {
                    Ok(room) => self.send_state(room).await,
                    Err(e) => self.refuse(e.code, e.message).await,
                }
            }
        }
    }

    /// Answers an SDP offer with the media plane. The SFU is told nothing
    /// but a random peer id and a random room key.
    async fn media_offer(&mut self, room_id: RoomId, sdp: String) -> Result<(), axum::Error> {
        let Some(media) = self.state.media.clone() else {
            return self
                .refuse(
                    ErrorCode::MediaUnavailable,
                    "this server has no media plane",
                )
                .await;
        };
        let view = match self.state.store.is_member(&room_id, &self.user).await {
            Ok(true) => self.state.store.room_for(&room_id, &self.user).await,
            Ok(false) => {
                return self
                    .refuse(ErrorCode::NotInRoom, "join the room first")
                    .await;
            }
            Err(e) => Err(e),
        };
        let view = match view {
            Ok(view) => view,
            Err(e) => return self.refuse(e.code, e.message).await,
        };
        if let Some(old) = self.media.remove(&room_id) {
            media.leave(old).await;
        }
        match media.join(&room_id, &self.user, view.version, sdp).await {
            Ok((peer, answer)) => {
                self.media.insert(room_id.clone(), peer);
                media.apply(&view, None).await;
                self.send(ServerMessage::MediaAnswer {
                    room_id,
                    sdp: answer,
                })
                .await
            }
            Err(e) => {
                self.refuse(ErrorCode::BadOffer, format!("{} ({})", e, e.code()))
                    .await
            }
        }
    }

    async fn end_media(&mut self) {
        if let Some(media) = &self.state.media {
            for (_, peer) in self.media.drain() {
                media.leave(peer).await;
            }
        }
    }

    /// The room in full, for a member: as last published (no read of the
    /// room), or from the store if nothing was published since the server
    /// started.
    async fn room(&mut self, room_id: &RoomId) -> Result<Arc<RoomView>, ApiError> {
        match self.state.bus.view(room_id) {
            Some(room) => Ok(room),
            None => Ok(Arc::new(
                self.state.store.room_for(room_id, &self.user).await?,
            )),
        }
    }

    /// Sends a room's whole state (`room` in full): in full to someone on
    /// its stage, else its light view. Follows every change in full from
    /// then on while this channel needs it.
    async fn send_state(&mut self, room: Arc<RoomView>) -> Result<(), axum::Error> {
        let full = on_stage(&room, &self.user);
        if full && self.full_events.is_none() {
            self.full_events = Some(self.state.bus.subscribe_full());
        }
        if full {
            let room = Arc::unwrap_or_clone(room);
            self.rooms.insert(room.id.clone(), Sent::of(&room, true));
            return self.send(ServerMessage::RoomState { room }).await;
        }
        // The view the light stream's deltas follow (see `Bus::light_view`).
        let light = self
            .state
            .bus
            .light_view(&room.id)
            .unwrap_or_else(|| room.light());
        self.rooms.insert(light.id.clone(), Sent::of(&light, false));
        if self.rooms.values().all(|s| !s.full) {
            self.full_events = None;
        }
        let you = room.member(&self.user).cloned();
        self.send(ServerMessage::RoomState { room: light }).await?;
        match you {
            Some(you) => {
                let room_id = room.id.clone();
                self.send(ServerMessage::RoomYou { room_id, you }).await
            }
            None => Ok(()),
        }
    }

    /// A light-stream change touched this channel's user (or may have, or
    /// `always`): tell them their own entry.
    async fn tell_yours(&mut self, event: &RoomEvent, always: bool) -> Result<(), axum::Error> {
        let room_id = &event.view.id;
        let you = match &event.yours {
            Yours::Listed(list) => match list.iter().find(|m| m.user_id == self.user) {
                Some(you) => Some(you.clone()),
                None if always => self.own_entry(room_id),
                None => None,
            },
            Yours::Everyone => self.own_entry(room_id),
        };
        match you {
            Some(you) => {
                let room_id = room_id.clone();
                self.send(ServerMessage::RoomYou { room_id, you }).await
            }
            None => Ok(()),
        }
    }

    /// This channel's user's entry in the room as last published (a scan
    /// of the room: only for changes that came without a delta).
    fn own_entry(&self, room_id: &RoomId) -> Option<MemberView> {
        self.state.bus.view(room_id)?.member(&self.user).cloned()
    }

    /// A room changed (`full`: an event of the full stream, else of the
    /// light one). Each room follows the stream its `Sent::full` says; a
    /// change that moves this channel's user on or off the stage switches
    /// the room to the other stream, with the whole room.
    async fn deliver(&mut self, event: &Arc<RoomEvent>, full: bool) -> Result<(), axum::Error> {
        let room_id = &event.view.id;
        let Some(sent) = self.rooms.get(room_id).copied() else {
            return Ok(());
        };
        if sent.full != full {
            return Ok(());
        }
        if let Some((_, banned)) = event
            .departed
            .as_ref()
            .filter(|(user, _)| user == &self.user)
        {
            self.rooms.remove(room_id);
            self.media.remove(room_id);
            self.state.e2ee.unregister(self.e2ee.id, room_id).await;
            return self
                .send(ServerMessage::RoomLeft {
                    room_id: room_id.clone(),
                    banned: *banned,
                })
                .await;
        }
        if event.count_only {
            // The count is sent with the next audience count.
            return self.tell_yours(event, false).await;
        }
        if event.view.version > sent.version && on_stage(&event.view, &self.user) != full {
            let room = if full {
                Ok(event.view.clone())
            } else {
                // Onto the stage: the whole room.
                self.room(room_id).await
            };
            match room {
                Ok(room) => self.send_state(room).await?,
                Err(e) => self.refuse(e.code, e.message).await?,
            }
        } else if event.view.version > sent.version {
            self.rooms
                .insert(room_id.clone(), Sent::of(&event.view, full));
            let msg = match &event.delta {
                Some(delta) if full && delta.from == sent.version => {
                    ServerMessage::RoomDelta(delta.clone())
                }
                // Nothing but the count changed between the delta's start
                // and what this channel sent last (count-only changes are
                // never broadcast, see `crate::bus`): it applies from there.
                Some(delta) if !full && delta.from <= sent.version => {
                    let mut delta = delta.clone();
                    delta.from = sent.version;
                    delta.audience_count = (event.view.audience_count != sent.count)
                        .then_some(event.view.audience_count);
                    ServerMessage::RoomDelta(delta)
                }
                // This channel holds another version (it subscribed
                // between two changes, or events came out of order): the
                // whole room.
                _ => ServerMessage::RoomState {
                    room: (*event.view).clone(),
                },
            };
            let whole = matches!(msg, ServerMessage::RoomState { .. });
            self.send(msg).await?;
            if !full {
                self.tell_yours(event, whole).await?;
            }
        }
        if event.view.ended {
            self.rooms.remove(room_id);
            self.state.e2ee.unregister(self.e2ee.id, room_id).await;
            self.send(ServerMessage::RoomEnded {
                room_id: room_id.clone(),
            })
            .await?;
        }
        Ok(())
    }

    /// Each followed room's audience count, if it changed since this
    /// channel last said and nothing else changed that the client has not
    /// been sent yet (that change is on its way, with the count).
    async fn send_counts(&mut self) -> Result<(), axum::Error> {
        let mut due = Vec::new();
        for (room_id, sent) in self.rooms.iter().filter(|(_, s)| !s.full) {
            let Some(now) = self.state.bus.count(room_id) else {
                continue;
            };
            if now.version > sent.version
                && now.light_version <= sent.version
                && now.count != sent.count
            {
                due.push((room_id.clone(), *sent, now));
            }
        }
        for (room_id, sent, now) in due {
            self.rooms.insert(
                room_id.clone(),
                Sent {
                    version: now.version,
                    count: now.count,
                    full: false,
                },
            );
            self.send(ServerMessage::RoomDelta(RoomDelta {
                room_id,
                from: sent.version,
                version: now.version,
                about: None,
                changes: Vec::new(),
                audience_count: Some(now.count),
            }))
            .await?;
        }
        Ok(())
    }

    /// After missing events, send each subscribed room's state afresh.
    async fn resync(&mut self) -> Result<(), axum::Error> {
        let rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        for room_id in rooms {
            match self.state.store.room_for(&room_id, &self.user).await {
                Ok(room)
                    if self
                        .state
                        .store
                        .is_member(&room_id, &self.user)
                        .await
                        .unwrap_or(false) =>
                {
                    self.send_state(Arc::new(room)).await?
                }
                _ => {
                    self.rooms.remove(&room_id);
                    self.state.e2ee.unregister(self.e2ee.id, &room_id).await;
                    self.send(ServerMessage::RoomLeft {
                        room_id,
                        banned: false,
                    })
                    .await?
                }
            }
        }
        Ok(())
    }
}
