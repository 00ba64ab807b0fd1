//! The session channel from the client side.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use sotto_proto::channel::{ClientEnvelope, ClientMessage, ServerMessage, parse_server_message};
use sotto_proto::{RoomId, UserId};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::{Client, ClientError};

pub struct Channel {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    pub user_id: UserId,
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

    /// The next message from the server, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<ServerMessage, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Channel("timed out waiting for the server".into()))?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return parse_server_message(&text).map_err(|(_, e)| ClientError::Channel(e));
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err(ClientError::Channel("closed by the server".into()));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ws_error(e)),
            }
        }
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
