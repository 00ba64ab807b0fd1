//! A bench participant's end-to-end encryption: the client's sans-IO room
//! core ([`RoomCrypto`]) fed by the participant's session channel and its
//! own timers, as the real session does, with nothing else around it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sotto_client::{Channel, Profile, RoomCrypto};
use sotto_proto::UserId;
use sotto_proto::channel::{ClientMessage, ServerMessage};
use sotto_proto::room::RoomView;

/// [`RoomCrypto`] and the clock it runs on (Unix milliseconds: join
/// requests carry expiries that other devices check).
pub struct RoomKeys {
    pub crypto: RoomCrypto,
    started: Instant,
    unix_at_start: u64,
}

impl RoomKeys {
    /// The device of `profile` (account `me`) in the room `view` shows;
    /// sends its E2EE hello on `channel`, which must be subscribed to it.
    pub async fn open(
        profile: &Profile,
        me: &UserId,
        view: &RoomView,
        channel: &mut Channel,
    ) -> anyhow::Result<RoomKeys> {
        let started = Instant::now();
        let unix_at_start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let device = profile
            .info
            .device_id
            .clone()
            .context("the bench profile has no device id")?;
        let (crypto, hello) = RoomCrypto::new(
            profile.device_seed(),
            me,
            &device,
            view,
            profile.load_trust()?,
            unix_at_start,
            &mut rand::rngs::OsRng,
        )
        .context("starting the room's E2EE")?;
        let keys = RoomKeys {
            crypto,
            started,
            unix_at_start,
        };
        send_all(channel, hello).await?;
        Ok(keys)
    }

    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.unix_at_start.saturating_add(elapsed)
    }

    /// When [`Self::on_timeout`] is due (an hour away when nothing is).
    pub fn due(&self) -> tokio::time::Instant {
        let at = self.crypto.poll_timeout().map_or_else(
            || Instant::now() + Duration::from_secs(3600),
            |ms| self.started + Duration::from_millis(ms.saturating_sub(self.unix_at_start)),
        );
        tokio::time::Instant::from_std(at)
    }

    /// A channel message: the core takes what it wants (a message it
    /// refuses is counted there, as in the real session) and what it has
    /// to send goes out.
    pub async fn on_message(
        &mut self,
        channel: &mut Channel,
        msg: &ServerMessage,
    ) -> anyhow::Result<()> {
        let now = self.now_ms();
        let out = sotto_client::session::crypto_in(&mut self.crypto, now, msg, channel);
        send_all(channel, out).await
    }

    pub async fn on_timeout(&mut self, channel: &mut Channel) -> anyhow::Result<()> {
        let out = self.crypto.handle_timeout(self.now_ms());
        send_all(channel, out).await
    }
}

async fn send_all(channel: &mut Channel, out: Vec<ClientMessage>) -> anyhow::Result<()> {
    for msg in out {
        channel.send(msg).await.context("sending an E2EE message")?;
    }
    Ok(())
}
