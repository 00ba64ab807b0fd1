//! The event bus between request handlers and session channels. One node:
//! an in-process broadcast. (Several nodes will put NATS behind the same
//! `publish`/`subscribe`.)

use std::sync::Arc;

use sotto_proto::UserId;
use sotto_proto::room::RoomView;
use tokio::sync::broadcast;

/// A room changed; `view` is its state after the change.
#[derive(Debug)]
pub struct RoomEvent {
    pub view: RoomView,
    /// Someone left through this change, and whether they were banned.
    pub departed: Option<(UserId, bool)>,
}

#[derive(Clone, Debug)]
pub struct Bus {
    tx: broadcast::Sender<Arc<RoomEvent>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Bus {
    pub fn publish(&self, event: RoomEvent) {
        // No subscriber is not an error.
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RoomEvent>> {
        self.tx.subscribe()
    }
}
