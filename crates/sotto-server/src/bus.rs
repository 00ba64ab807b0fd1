//! The event bus between request handlers and session channels. One node:
//! an in-process broadcast. (Several nodes will put NATS behind the same
//! `publish`/`subscribe`.)
//!
//! Two streams: every change in full for the server's own followers (the
//! E2EE relay, the media plane), and the changes of the *light* view
//! ([`RoomView::light`]) for session channels. A listener joining or leaving
//! beyond the light view's audience changes only the audience count: that
//! goes to no channel as it happens; each channel reads the count once a
//! second ([`Bus::count`]) and sends it if it changed. A room of 10,000
//! filling up thus wakes each channel about once a second, not 10,000 times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sotto_proto::room::{MemberChange, MemberView, Role, RoomDelta, RoomView};

use crate::store::Joined;
use sotto_proto::{RoomId, UserId};
use tokio::sync::broadcast;

/// A room changed; `view` is its state after the change.
#[derive(Debug)]
pub struct RoomEvent {
    /// The whole room (on [`Bus::subscribe_full`]), or its light view (on
    /// [`Bus::subscribe`]).
    pub view: Arc<RoomView>,
    /// The change from the room's previously published view (of the same
    /// kind), made once here for every subscriber (`None`: the first view
    /// of the room, an older view than one already published, or too big
    /// a change).
    pub delta: Option<RoomDelta>,
    /// Someone left through this change, and whether they were banned.
    pub departed: Option<(UserId, bool)>,
    /// Light stream only: the light view did not change but for the
    /// audience count (sent for `departed` or `yours`; channels leave the
    /// count to their next [`Bus::count`]).
    pub count_only: bool,
    /// Light stream only: the listeners whose own entry (hand, stage
    /// invitation, mute, role) this change touched, as the whole room
    /// shows them. The light view hides hands and invitations, so each of
    /// them is told their own (`ServerMessage::RoomYou`).
    pub yours: Yours,
}

/// Whose own entry a change touched (see [`RoomEvent::yours`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Yours {
    /// These listeners' (none, mostly).
    Listed(Vec<MemberView>),
    /// Unknown (a change with no delta): every listener reads their own
    /// entry from the whole room ([`Bus::view`]).
    Everyone,
}

impl Yours {
    /// What `delta` (the whole room's change, to `view`) touched.
    fn of(view: &RoomView, delta: Option<&RoomDelta>) -> Yours {
        let Some(delta) = delta else {
            return Yours::Everyone;
        };
        let touched = delta.changes.iter().filter_map(|c| match c {
            MemberChange::Set {
                user_id,
                role,
                hand_raised,
                muted,
                invited_to_stage,
                hand_order,
                ..
            } if role.is_some()
                || hand_raised.is_some()
                || muted.is_some()
                || invited_to_stage.is_some()
                || hand_order.is_some() =>
            {
                Some(user_id)
            }
            _ => None,
        });
        // One scan of the room per touched member: a hand or an invitation
        // touches one.
        Yours::Listed(
            touched
                .filter_map(|u| view.member(u))
                .filter(|m| m.role == Role::Listener)
                .cloned()
                .collect(),
        )
    }

    fn is_empty(&self) -> bool {
        matches!(self, Yours::Listed(l) if l.is_empty())
    }
}

/// A room's audience count as of `version`; the light view last changed
/// at `light_version` (≤ `version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudienceCount {
    pub version: i64,
    pub count: u32,
    pub light_version: i64,
}

/// Why [`Bus::publish_join`] did not apply a join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinNotApplied {
    NoView,
    EarlierChangePending,
}

#[derive(Default, Debug)]
struct Published {
    /// The last full view per live room, to make the next full delta,
    /// apply the next join to and answer subscriptions from.
    full: HashMap<RoomId, Arc<RoomView>>,
    /// The last light view that changed but for its count.
    light: HashMap<RoomId, RoomView>,
    counts: HashMap<RoomId, AudienceCount>,
}

#[derive(Clone, Debug)]
pub struct Bus {
    full_tx: broadcast::Sender<Arc<RoomEvent>>,
    light_tx: broadcast::Sender<Arc<RoomEvent>>,
    published: Arc<Mutex<Published>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            full_tx: broadcast::channel(1024).0,
            light_tx: broadcast::channel(1024).0,
            published: Arc::default(),
        }
    }
}

impl Bus {
    /// Publishes a room's new state. Events leave in the order their deltas
    /// were made, so each delta starts where the previous one ended.
    pub fn publish(&self, view: RoomView, departed: Option<(UserId, bool)>) {
        let mut p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let delta = match p.full.get(&view.id) {
            Some(old) if old.version < view.version => view.diff_from(old),
            _ => None,
        };
        self.publish_locked(&mut p, Arc::new(view), delta, departed);
    }

    /// Publishes a join by applying it to the room's last published view:
    /// no read of the room, and a delta made without comparing member
    /// lists. Returns the room after it, or why this bus cannot apply it:
    /// it holds no view of the room (the caller reads the room and
    /// [`publish`](Self::publish)es it), or a change before this one has
    /// not been published yet (the caller tries again: that change's
    /// publisher is about to).
    pub fn publish_join(&self, joined: &Joined) -> Result<Arc<RoomView>, JoinNotApplied> {
        let mut guard = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let p = &mut *guard;
        let held = p.full.get_mut(&joined.room).ok_or(JoinNotApplied::NoView)?;
        if held.version >= joined.version {
            // Published already, within a newer state.
            return Ok(held.clone());
        }
        if held.version != joined.version - 1 {
            return Err(JoinNotApplied::EarlierChangePending);
        }
        let (from, old_count) = (held.version, held.audience_count);
        // In place when nobody holds the previous state any more (the
        // followers have read its event): no copy of a room of thousands
        // per join. Copied otherwise, as before.
        let view = Arc::make_mut(held);
        view.version = joined.version;
        let mut changes = Vec::new();
        if let Some(m) = &joined.entered {
            // The newest listener: last (listeners last, each role in order
            // of joining).
            let at = u32::try_from(view.members.len()).map_err(|_| JoinNotApplied::NoView)?;
            view.members.push(m.clone());
            view.audience_count = view.audience_count.saturating_add(1);
            changes.push(MemberChange::Put {
                at,
                member: m.clone(),
            });
        }
        let delta = RoomDelta {
            room_id: view.id.clone(),
            from,
            version: view.version,
            about: None,
            changes,
            audience_count: (view.audience_count != old_count).then_some(view.audience_count),
        };
        let view = held.clone();
        self.announce_locked(p, view.clone(), Some(delta), None, false);
        Ok(view)
    }

    fn publish_locked(
        &self,
        p: &mut Published,
        view: Arc<RoomView>,
        delta: Option<RoomDelta>,
        departed: Option<(UserId, bool)>,
    ) {
        let stale = p
            .full
            .get(&view.id)
            .is_some_and(|old| old.version >= view.version);
        if !stale {
            p.full.insert(view.id.clone(), view.clone());
        }
        self.announce_locked(p, view, delta, departed, stale);
    }

    /// Sends `view` (already in `p.full` unless `stale`) to both streams,
    /// with the light view and the count brought up to date.
    fn announce_locked(
        &self,
        p: &mut Published,
        view: Arc<RoomView>,
        delta: Option<RoomDelta>,
        departed: Option<(UserId, bool)>,
        stale: bool,
    ) {
        let id = view.id.clone();
        let light = match p.light.get(&id) {
            Some(prev) if !stale => view.light_after(prev, delta.as_ref()),
            _ => view.light(),
        };
        let yours = if stale {
            Yours::Listed(Vec::new())
        } else {
            Yours::of(&view, delta.as_ref())
        };
        let mut light_delta = None;
        let mut count_only = false;
        if !stale {
            light_delta = p.light.get(&id).and_then(|old| light.diff_from(old));
            count_only = light_delta
                .as_ref()
                .is_some_and(|d| d.changes.is_empty() && d.about.is_none());
            let light_version = match p.counts.get(&id) {
                Some(c) if count_only => c.light_version,
                _ => view.version,
            };
            p.counts.insert(
                id.clone(),
                AudienceCount {
                    version: view.version,
                    count: view.audience_count,
                    light_version,
                },
            );
            if !count_only {
                p.light.insert(id.clone(), light.clone());
            }
        }
        if view.ended {
            p.full.remove(&id);
            p.light.remove(&id);
            p.counts.remove(&id);
        }
        // A send fails only when nobody subscribes (no channel open, or a
        // server without followers in a test): nobody to tell then.
        if (!count_only || departed.is_some() || !yours.is_empty())
            && self
                .light_tx
                .send(Arc::new(RoomEvent {
                    view: Arc::new(light),
                    delta: light_delta.filter(|_| !count_only),
                    departed: departed.clone(),
                    count_only,
                    yours,
                }))
                .is_err()
        {
            tracing::trace!("bus: no session channel subscribed");
        }
        // `delta` is None for a stale view: `publish` makes none for it and
        // `publish_join` applies only to the newest.
        let event = RoomEvent {
            view,
            delta,
            departed,
            count_only: false,
            yours: Yours::Listed(Vec::new()),
        };
        if self.full_tx.send(Arc::new(event)).is_err() {
            tracing::trace!("bus: no follower subscribed");
        }
    }

    /// The room's last published state in full (`None`: nothing published
    /// since the server started, or the room ended).
    pub fn view(&self, room: &RoomId) -> Option<Arc<RoomView>> {
        let p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        p.full.get(room).cloned()
    }

    /// What a listener subscribing to the room is sent: the listeners'
    /// view as the light stream's deltas follow it, at the room's latest
    /// version and audience count (`None`: nothing published since the
    /// server started, or the room ended).
    pub fn light_view(&self, room: &RoomId) -> Option<RoomView> {
        let p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let (light, count) = (p.light.get(room)?, p.counts.get(room)?);
        let mut view = light.clone();
        view.version = count.version;
        view.audience_count = count.count;
        Some(view)
    }

    /// The light view's changes, for session channels.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RoomEvent>> {
        self.light_tx.subscribe()
    }

    /// Every change in full, for the server's own followers.
    pub fn subscribe_full(&self) -> broadcast::Receiver<Arc<RoomEvent>> {
        self.full_tx.subscribe()
    }

    /// The room's latest audience count (`None`: nothing published since
    /// the server started, or the room ended).
    pub fn count(&self, room: &RoomId) -> Option<AudienceCount> {
        let p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        p.counts.get(room).copied()
    }
}

#[cfg(test)]
mod tests {
    use sotto_proto::room::{MemberView, Role, RoomKind};

    use super::*;

    fn member(n: u8, role: Role) -> MemberView {
        MemberView {
            user_id: UserId::from_bytes([n; 16]),
            username: format!("user{n}"),
            display_name: format!("User {n}"),
            role,
            hand_raised: false,
            muted: false,
            invited_to_stage: false,
            hand_order: None,
        }
    }

    fn room(version: i64, listeners: u8) -> RoomView {
        let mut members = vec![member(0, Role::Host)];
        members.extend((1..=listeners).map(|n| member(n, Role::Listener)));
        RoomView {
            id: RoomId::from_bytes([9; 16]),
            title: "t".into(),
            description: String::new(),
            kind: RoomKind::Open,
            ended: false,
            version,
            members,
            audience_count: u32::from(listeners),
        }
    }

    fn joined(version: i64, n: u8) -> Joined {
        Joined {
            room: RoomId::from_bytes([9; 16]),
            version,
            entered: Some(member(n, Role::Listener)),
        }
    }

    /// A join applied to the last published view is the room the store
    /// would have read, and its delta turns the old view into it.
    #[test]
    fn a_join_applied_to_the_last_view_is_the_room_as_read() {
        let bus = Bus::default();
        let mut full = bus.subscribe_full();
        bus.publish(room(5, 60), None);
        assert!(full.try_recv().is_ok());
        let after = bus.publish_join(&joined(6, 61)).unwrap();
        assert_eq!(*after, room(6, 61));
        let event = full.try_recv().unwrap();
        let mut applied = room(5, 60);
        applied.apply(event.delta.as_ref().unwrap()).unwrap();
        assert_eq!(applied, room(6, 61));
        // Beyond the shown audience: a count for listeners, stored for the
        // channels' next read, not broadcast.
        assert_eq!(
            bus.count(&after.id),
            Some(AudienceCount {
                version: 6,
                count: 61,
                light_version: 5
            })
        );
        // Published already (within a newer state): the newer state.
        assert_eq!(bus.publish_join(&joined(6, 61)).unwrap().version, 6);
    }

    /// A hand raised beyond the shown audience: the stage's stream carries
    /// it; the listeners' stream carries no change of their view, only
    /// whose own entry changed (for that listener's `room_you`), and the
    /// view a new subscriber gets shows no hand.
    #[test]
    fn a_hand_reaches_the_stage_and_its_owner_only() {
        let bus = Bus::default();
        let (mut full, mut light) = (bus.subscribe_full(), bus.subscribe());
        bus.publish(room(5, 60), None);
        assert!(full.try_recv().is_ok() && light.try_recv().is_ok());
        let mut raised = room(6, 60);
        let hand = raised.members.last_mut().unwrap();
        hand.hand_raised = true;
        hand.hand_order = Some(6);
        let owner = hand.clone();
        bus.publish(raised, None);
        let stage = full.try_recv().unwrap();
        assert!(
            stage
                .delta
                .as_ref()
                .is_some_and(|d| d.changes.len() == 1 && d.from == 5)
        );
        let listeners = light.try_recv().unwrap();
        assert!(listeners.count_only, "the listeners' view did not change");
        assert_eq!(listeners.yours, Yours::Listed(vec![owner]));
        let shown = bus.light_view(&stage.view.id).unwrap();
        assert_eq!(shown.version, 6);
        assert!(shown.members.iter().all(|m| !m.hand_raised));
        assert_eq!(shown.members.len(), 1 + sotto_proto::room::AUDIENCE_IN_VIEW);
        // A join beyond the shown audience touches nobody's own entry and
        // wakes no listener channel (their count is read once a second).
        bus.publish_join(&joined(7, 61)).unwrap();
        assert!(full.try_recv().is_ok());
        assert!(light.try_recv().is_err());
    }

    /// A join whose predecessor is not published yet waits for it; a room
    /// the bus holds nothing of is read instead.
    #[test]
    fn a_join_out_of_order_or_unknown_is_not_applied() {
        let bus = Bus::default();
        assert_eq!(
            bus.publish_join(&joined(6, 61)).unwrap_err(),
            JoinNotApplied::NoView
        );
        bus.publish(room(5, 60), None);
        assert_eq!(
            bus.publish_join(&joined(7, 62)).unwrap_err(),
            JoinNotApplied::EarlierChangePending
        );
        assert!(bus.publish_join(&joined(6, 61)).is_ok());
        assert!(bus.publish_join(&joined(7, 62)).is_ok());
        assert_eq!(bus.view(&RoomId::from_bytes([9; 16])).unwrap().version, 7);
    }

    /// A join changes the room in place once nobody holds its previous
    /// state, and never changes a state someone still holds (a follower
    /// that has not read its event, a channel answering from it).
    #[test]
    fn a_join_copies_the_room_only_while_someone_holds_it() {
        let bus = Bus::default();
        let id = RoomId::from_bytes([9; 16]);
        bus.publish(room(5, 60), None);
        let held = bus.view(&id).unwrap();
        let first = Arc::as_ptr(&held);
        let after = bus.publish_join(&joined(6, 61)).unwrap();
        assert_ne!(Arc::as_ptr(&after), first, "copied: the old state is held");
        assert_eq!(*held, room(5, 60), "what a holder has does not change");
        assert_eq!(*after, room(6, 61));
        drop(held);
        let second = Arc::as_ptr(&after);
        drop(after);
        let again = bus.publish_join(&joined(7, 62)).unwrap();
        assert_eq!(Arc::as_ptr(&again), second, "in place: nobody held it");
        assert_eq!(*again, room(7, 62));
        // A follower that has not read its event yet holds that state.
        let mut full = bus.subscribe_full();
        drop(again);
        let after = bus.publish_join(&joined(8, 63)).unwrap();
        drop(after);
        bus.publish_join(&joined(9, 64)).unwrap();
        let event = full.try_recv().unwrap();
        assert_eq!(
            *event.view,
            room(8, 63),
            "the unread event's room is as published"
        );
        assert_eq!(*full.try_recv().unwrap().view, room(9, 64));
    }
}
