//! The event bus between request handlers and session channels. One node:
//! an in-process broadcast. (Several nodes will put NATS behind the same
//! `publish`/`subscribe`.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sotto_proto::room::{RoomDelta, RoomView};
use sotto_proto::{RoomId, UserId};
use tokio::sync::broadcast;

/// A room changed; `view` is its state after the change.
#[derive(Debug)]
pub struct RoomEvent {
    pub view: RoomView,
    /// The change from the room's previously published view, made once
    /// here for every channel (`None`: the first view of the room, an
    /// older view than one already published, or too big a change).
    pub delta: Option<RoomDelta>,
    /// Someone left through this change, and whether they were banned.
    pub departed: Option<(UserId, bool)>,
}

#[derive(Clone, Debug)]
pub struct Bus {
    tx: broadcast::Sender<Arc<RoomEvent>>,
    /// The last view published per live room, to make the next delta.
    last: Arc<Mutex<HashMap<RoomId, RoomView>>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            tx: broadcast::channel(1024).0,
            last: Arc::default(),
        }
    }
}

impl Bus {
    /// Publishes a room's new state. Events leave in the order their deltas
    /// were made, so each delta starts where the previous one ended.
    pub fn publish(&self, view: RoomView, departed: Option<(UserId, bool)>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let delta = match last.get(&view.id) {
            Some(old) if old.version >= view.version => None,
            Some(old) => {
                let delta = view.diff_from(old);
                last.insert(view.id.clone(), view.clone());
                delta
            }
            None => {
                last.insert(view.id.clone(), view.clone());
                None
            }
        };
        if view.ended {
            last.remove(&view.id);
        }
        // No subscriber is not an error.
        let _ = self.tx.send(Arc::new(RoomEvent {
            view,
            delta,
            departed,
        }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RoomEvent>> {
        self.tx.subscribe()
    }
}
