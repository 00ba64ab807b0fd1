//! A churn bench's churners: accounts that join the room, get keyed and
//! leave, over and over, at a steady rate. Each join is the real control
//! path of a listener — `POST join`, a session channel subscribed to the
//! room, the E2EE hello and a signed join request the distributor (the
//! host's client) verifies and answers with a sealed key — and each leave
//! is `POST leave`, after which the distributor rotates the audience key.
//! Churners open no media: the stable listeners carry it (and thousands
//! of ICE/DTLS set-ups a minute would measure the generator, not the room).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sotto_client::{Channel, Profile};
use sotto_proto::RoomId;
use sotto_proto::channel::ServerMessage;
use tokio::sync::mpsc;

use super::fanout::Person;
use super::room_keys::RoomKeys;

/// One churning account.
pub struct Account {
    pub person: Person,
    pub profile: Profile,
}

/// What the churners did, read while they run.
#[derive(Debug, Default)]
pub struct ChurnStats {
    /// Ticks with no free account (the generator fell behind).
    pub starved: AtomicU64,
    /// `POST join` answered.
    pub joins: AtomicU64,
    /// Joins whose sealed key arrived and opened.
    pub keyed: AtomicU64,
    /// Joins with no key within the key timeout.
    pub unkeyed: AtomicU64,
    /// `POST leave` answered.
    pub leaves: AtomicU64,
    /// Cycles that failed somewhere (HTTP, channel).
    pub errors: AtomicU64,
    /// Seconds from `POST join` to an installed key, per keyed join.
    pub time_to_key: Mutex<Vec<f64>>,
    /// The first few errors, for the report.
    pub first_errors: Mutex<Vec<String>>,
}

impl ChurnStats {
    fn error(&self, e: &anyhow::Error) {
        self.errors.fetch_add(1, Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        if first.len() < 3 {
            first.push(format!("{e:#}"));
        }
    }

    pub fn time_to_key(&self) -> Vec<f64> {
        let mut v = self
            .time_to_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// How churners behave.
#[derive(Clone, Copy, Debug)]
pub struct Cycle {
    /// How long a churner stays after its key arrived.
    pub dwell: Duration,
    /// How long a churner waits for its key before it leaves anyway.
    pub key_timeout: Duration,
}

/// Starts one join-and-leave cycle every `60 s / per_minute` for
/// `duration`, each with a free account from `pool`; returns once every
/// cycle has left (the accounts are back in the pool).
pub async fn churn(
    room: &RoomId,
    pool: Vec<Account>,
    per_minute: f64,
    duration: Duration,
    cycle: Cycle,
    stats: Arc<ChurnStats>,
) -> anyhow::Result<Vec<Account>> {
    let accounts = pool.len();
    let (free_tx, mut free_rx) = mpsc::unbounded_channel();
    for a in pool {
        free_tx.send(a).context("filling the account pool")?;
    }
    let period = Duration::from_secs_f64(60.0 / per_minute.max(0.001));
    let mut ticker = tokio::time::interval(period);
    // Late ticks are caught up: the rate is the rate asked for.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = tokio::time::Instant::now() + duration;
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            _ = ticker.tick() => {}
        }
        let Ok(account) = free_rx.try_recv() else {
            stats.starved.fetch_add(1, Relaxed);
            continue;
        };
        let (room, stats, free) = (room.clone(), stats.clone(), free_tx.clone());
        running.spawn(async move {
            if let Err(e) = one(&account, &room, cycle, &stats).await {
                stats.error(&e);
            }
            // The pool outlives every cycle: a failed send cannot happen.
            free.send(account).is_ok()
        });
        // Reap finished cycles as we go.
        while running.try_join_next().is_some() {}
    }
    while let Some(done) = running.join_next().await {
        done.context("a churn cycle panicked")?;
    }
    drop(free_tx);
    let mut back = Vec::with_capacity(accounts);
    while let Some(a) = free_rx.recv().await {
        back.push(a);
    }
    Ok(back)
}

/// Join, get keyed, stay, leave.
async fn one(
    account: &Account,
    room: &RoomId,
    cycle: Cycle,
    stats: &ChurnStats,
) -> anyhow::Result<()> {
    let client = &account.person.client;
    let t0 = Instant::now();
    let view = client.join(room).await.context("joining")?;
    stats.joins.fetch_add(1, Relaxed);
    let mut channel = None;
    let result = keyed_stay(account, room, &view, t0, cycle, stats, &mut channel).await;
    // Leave whatever happened in between (a churner must not linger),
    // then close the channel, as a client that leaves does.
    let left = client.room_action(room, "leave").await.context("leaving");
    if let Some(channel) = channel {
        channel.close().await;
    }
    left?;
    stats.leaves.fetch_add(1, Relaxed);
    result
}

async fn keyed_stay(
    account: &Account,
    room: &RoomId,
    view: &sotto_proto::room::RoomView,
    t0: Instant,
    cycle: Cycle,
    stats: &ChurnStats,
    slot: &mut Option<Channel>,
) -> anyhow::Result<()> {
    let channel = slot.insert(Channel::connect(&account.person.client).await?);
    channel.subscribe(room).await?;
    let mut keys = RoomKeys::open(&account.profile, &account.person.user_id, view, channel).await?;
    let key_deadline = tokio::time::Instant::from_std(t0 + cycle.key_timeout);
    let mut leave_at = None;
    loop {
        if leave_at.is_none() && keys.crypto.can_decrypt() {
            stats
                .time_to_key
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(t0.elapsed().as_secs_f64());
            stats.keyed.fetch_add(1, Relaxed);
            leave_at = Some(tokio::time::Instant::now() + cycle.dwell);
        }
        let until = leave_at.unwrap_or(key_deadline);
        let due = keys.due();
        tokio::select! {
            () = tokio::time::sleep_until(until) => {
                if leave_at.is_none() {
                    stats.unkeyed.fetch_add(1, Relaxed);
                }
                return Ok(());
            }
            () = tokio::time::sleep_until(due) => keys.on_timeout(channel).await?,
            msg = channel.next(Duration::from_secs(3600)) => {
                let msg = msg?;
                if let ServerMessage::RoomEnded { .. } = msg {
                    return Ok(());
                }
                keys.on_message(channel, &msg).await?;
            }
        }
    }
}
