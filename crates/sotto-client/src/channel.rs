//! The session channel from the client side.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use sotto_proto::channel::{ClientEnvelope, ClientMessage, ServerMessage, parse_server_message};
use sotto_proto::room::{MemberView, RoomView};
use sotto_proto::{RoomId, UserId};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::{Client, ClientError};

pub struct Channel {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    pub user_id: UserId,
    /// The state of each subscribed room, kept up to date by the server's
    /// deltas (see [`next`](Self::next)).
    views: HashMap<RoomId, RoomView>,
    /// Own entries the server sent for rooms followed as a listener.
    yours: HashMap<RoomId, MemberView>,
    /// Test hook: forget the next delta, as if it were lost.
    skip_delta: bool,
    /// [`next`](Self::next) returns a delta as the delta (applied to the
    /// room's state, read with [`view`](Self::view)), not as a copy of the
    /// whole room: see [`keep_deltas`](Self::keep_deltas).
    deltas: bool,
    /// Bytes of text frames received: room state (`room_state`,
    /// `room_delta`) and everything else.
    received: (u64, u64),
}

impl Channel {
    /// Opens the channel and says hello with the client's session token.
    pub async fn connect(client: &Client) -> Result<Channel, ClientError> {
        let token = client
            .token()
            .ok_or_else(|| ClientError::Channel("sign in first".into()))?
            .to_string();
        let url = format!(
            "{}/api/ws",
            client
                .base_url()
                .replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1)
        );
        let connector = client.tls().map(Connector::Rustls);
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector)
            .await
            .map_err(|e| ClientError::Channel(e.to_string()))?;
        let mut channel = Channel {
            ws,
            user_id: UserId(String::new()),
            views: HashMap::new(),
            yours: HashMap::new(),
            skip_delta: false,
            deltas: false,
            received: (0, 0),
        };
        channel.send(ClientMessage::Hello { token }).await?;
        match channel.next(Duration::from_secs(10)).await? {
            ServerMessage::Welcome { user_id } => {
                channel.user_id = user_id;
                Ok(channel)
            }
            ServerMessage::Error { error } => Err(ClientError::Api {
                status: 0,
                code: error.code,
                message: error.message,
            }),
            other => Err(ClientError::Channel(format!(
                "expected welcome, got {other:?}"
            ))),
        }
    }

    pub async fn send(&mut self, msg: ClientMessage) -> Result<(), ClientError> {
        self.send_raw(ClientEnvelope::new(msg).to_json()).await
    }

    /// Sends any text (tests use this to send malformed frames).
    pub async fn send_raw(&mut self, text: String) -> Result<(), ClientError> {
        self.ws.send(Message::text(text)).await.map_err(ws_error)
    }

    pub async fn subscribe(&mut self, room: &RoomId) -> Result<(), ClientError> {
        self.send(ClientMessage::Subscribe {
            room_id: room.clone(),
        })
        .await
    }

    /// From now on [`next`](Self::next) returns each room delta it applied
    /// as the delta itself; the room as it stands is [`view`](Self::view).
    /// For a big room: the whole room per change is a copy of every member.
    pub fn keep_deltas(&mut self) {
        self.deltas = true;
    }

    /// Your own entry in a subscribed room: as the room state shows it
    /// while you are on its stage, else as the server last told you
    /// (`room_you`: a listener's room state shows no hands or stage
    /// invitations, and may not show you).
    pub fn you(&self, room: &RoomId) -> Option<&MemberView> {
        let shown = self.views.get(room).and_then(|v| v.member(&self.user_id));
        match shown {
            Some(m) if m.role.on_stage() => Some(m),
            _ => self.yours.get(room).or(shown),
        }
    }

    /// A subscribed room as the channel last brought it up to date.
    pub fn view(&self, room: &RoomId) -> Option<&RoomView> {
        self.views.get(room)
    }

    /// The next message from the server, waiting at most `timeout`.
    ///
    /// A room's deltas come out as the whole room (`room_state`), built
    /// from the last state and the delta (or, after
    /// [`keep_deltas`](Self::keep_deltas), as the delta once applied). A delta that does not start from
    /// the state this channel holds (one was missed) is not returned: the
    /// channel subscribes again and returns the full state that answers.
    pub async fn next(&mut self, timeout: Duration) -> Result<ServerMessage, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (msg, _) = self.next_frame(left).await?;
            if let Some(msg) = self.track(msg).await? {
                return Ok(msg);
            }
        }
    }

    /// The next message as the server sent it (deltas as deltas) and the
    /// size of its frame in bytes. It does not update the room states
    /// [`next`](Self::next) keeps: use one or the other on a channel.
    pub async fn next_frame(
        &mut self,
        timeout: Duration,
    ) -> Result<(ServerMessage, usize), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Channel("timed out waiting for the server".into()))?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let msg =
                        parse_server_message(&text).map_err(|(_, e)| ClientError::Channel(e))?;
                    let bytes = text.len() as u64;
                    match msg {
                        ServerMessage::RoomState { .. }
                        | ServerMessage::RoomDelta(_)
                        | ServerMessage::RoomYou { .. } => {
                            self.received.0 += bytes;
                        }
                        _ => self.received.1 += bytes,
                    }
                    return Ok((msg, text.len()));
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err(ClientError::Channel("closed by the server".into()));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ws_error(e)),
            }
        }
    }

    /// Keeps the room states current; `None` for a delta that was missed
    /// (the channel has asked for the whole room again).
    async fn track(&mut self, msg: ServerMessage) -> Result<Option<ServerMessage>, ClientError> {
        match msg {
            ServerMessage::RoomState { room } => {
                let newer = self
                    .views
                    .get(&room.id)
                    .is_none_or(|v| v.version <= room.version);
                if newer {
                    self.views.insert(room.id.clone(), room.clone());
                }
                Ok(Some(ServerMessage::RoomState { room }))
            }
            ServerMessage::RoomDelta(delta) => {
                if std::mem::take(&mut self.skip_delta) {
                    return Ok(None);
                }
                let deltas = self.deltas;
                let applied = self
                    .views
                    .get_mut(&delta.room_id)
                    .map(|v| v.apply(&delta).map(|()| (!deltas).then(|| v.clone())));
                match applied {
                    Some(Ok(Some(room))) => Ok(Some(ServerMessage::RoomState { room })),
                    Some(Ok(None)) => Ok(Some(ServerMessage::RoomDelta(delta))),
                    Some(Err(_)) | None => {
                        self.views.remove(&delta.room_id);
                        self.subscribe(&delta.room_id).await?;
                        Ok(None)
                    }
                }
            }
            ServerMessage::RoomYou { room_id, you } => {
                self.yours.insert(room_id.clone(), you.clone());
                Ok(Some(ServerMessage::RoomYou { room_id, you }))
            }
            msg @ (ServerMessage::RoomLeft { .. } | ServerMessage::RoomEnded { .. }) => {
                if let ServerMessage::RoomLeft { room_id, .. }
                | ServerMessage::RoomEnded { room_id } = &msg
                {
                    self.views.remove(room_id);
                    self.yours.remove(room_id);
                }
                Ok(Some(msg))
            }
            other => Ok(Some(other)),
        }
    }

    /// Bytes of text frames received so far: of room state, and of
    /// everything else (E2EE, errors, media signaling).
    pub fn received_bytes(&self) -> (u64, u64) {
        self.received
    }

    /// Test hook: lose the next room delta, as a client with a bug or a
    /// broken relay would. The channel must notice and resync.
    #[doc(hidden)]
    pub fn drop_next_delta(&mut self) {
        self.skip_delta = true;
    }

    /// Reads messages until `pred` accepts one, which it returns.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ServerMessage) -> bool,
    ) -> Result<ServerMessage, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.next(left).await?;
            if pred(&msg) {
                return Ok(msg);
            }
        }
    }

    /// Closes the channel; a channel already gone needs no close.
    pub async fn close(mut self) {
        if self.ws.close(None).await.is_err() {
            // Already closed by the server or the network: nothing to do.
        }
    }
}

/// One plain line for a failed session channel: a server that went away
/// is said so, not as the WebSocket library's protocol error.
fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> ClientError {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => {
            ClientError::Channel("the server closed the connection".into())
        }
        E::Io(_) | E::Protocol(_) => ClientError::Channel(
            "the connection to the server was lost (the server went away or the network dropped)"
                .into(),
        ),
        other => ClientError::Channel(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::Error as E;
    use tokio_tungstenite::tungstenite::error::ProtocolError;

    use super::ws_error;

    #[test]
    fn a_server_that_went_away_is_said_plainly() {
        let reset = ws_error(E::Protocol(ProtocolError::ResetWithoutClosingHandshake));
        assert_eq!(
            reset.to_string(),
            "session channel: the connection to the server was lost (the server went away or the network dropped)"
        );
        assert!(!reset.to_string().contains("WebSocket protocol error"));
        let closed = ws_error(E::ConnectionClosed);
        assert!(
            closed
                .to_string()
                .contains("the server closed the connection")
        );
    }
}
