//! # sotto-sfu: the media plane's core
//!
//! A sans-IO audio SFU on [str0m]. It owns no socket, no clock and no RNG:
//! the driver (a thin tokio UDP loop in `sotto-server`) feeds it datagrams
//! and time, and sends what it returns. Everything here runs in virtual time
//! in tests.
//!
//! ## Driving it
//!
//! Inputs: [`Sfu::handle_datagram`], [`Sfu::handle_timeout`] and the control
//! calls [`Sfu::add_peer`], [`Sfu::set_may_publish`], [`Sfu::remove_peer`].
//! Outputs: [`Sfu::poll_transmit`], [`Sfu::poll_event`], [`Sfu::poll_timeout`].
//!
//! **Invariant: after any input or control call, drain [`Sfu::poll_transmit`]
//! and [`Sfu::poll_event`] until both return `None`, then sleep until
//! [`Sfu::poll_timeout`] or the next datagram.** Time passed in must not go
//! backwards (earlier instants are clamped).
//!
//! ```no_run
//! # use std::time::Instant;
//! # use sotto_sfu::{Sfu, SfuConfig};
//! # fn recv() -> (std::net::SocketAddr, Vec<u8>) { unimplemented!() }
//! # fn send(_: &sotto_sfu::Transmit) {}
//! let local = "192.0.2.1:3478".parse().unwrap();
//! let mut sfu = Sfu::new(Instant::now(), SfuConfig::default(), local).unwrap();
//! loop {
//!     let (source, bytes) = recv(); // or a timeout at sfu.poll_timeout()
//!     sfu.handle_datagram(Instant::now(), source, local, &bytes);
//!     sfu.handle_timeout(Instant::now());
//!     while let Some(t) = sfu.poll_transmit() { send(&t); }
//!     while let Some(_e) = sfu.poll_event() { /* to the control plane */ }
//! }
//! ```
//!
//! ## Design
//! - One str0m `Rtc` per peer, ICE-lite, all on one UDP address. Incoming
//!   datagrams go to a peer by remembered source address; a new address is
//!   only accepted for STUN whose USERNAME names one of our (random, str0m
//!   chosen) ICE ufrags, and is only remembered once str0m has answered it,
//!   i.e. after its ICE integrity check passed.
//! - DTLS-SRTP; str0m negotiates an AEAD-GCM SRTP profile with every modern
//!   client (it offers AES-256-GCM first, then AES-128-GCM; 0.25 has no knob
//!   to reorder them).
//! - Opus only, in RTP mode: payloads are forwarded byte for byte. They are
//!   SFrame ciphertext; the SFU could not read them if it tried. In-band FEC
//!   and DTX pass through untouched.
//! - Only peers the control plane allowed ([`Sfu::set_may_publish`]) are
//!   forwarded. Everything else is dropped and counted in [`SfuStats`].
//! - **Receive slots.** Each peer offers one `sendonly` m-line (microphone)
//!   and N `recvonly` m-lines (slots). The room's active speakers are mapped
//!   into each receiver's slots; SSRC, sequence numbers and timestamps are
//!   rewritten per slot so a slot stays one continuous stream when its
//!   speaker changes. A stage change never renegotiates SDP
//!   ([`SfuStats::renegotiations`] stays zero). Speakers do not get their own audio.
//! - **Active speakers come from the RFC 6464 audio-level header extension,
//!   which is sent in the clear. This leaks speaking activity (who speaks,
//!   when, how loud) to the operator by design**; never what is said.
//!   Packets without the extension count as voiced.
//!
//! ## Bad input
//! A panic is a bug: nothing a peer sends may panic. Garbage, datagrams from
//! unknown addresses, oversized datagrams, publishing while not allowed and
//! peers that vanish are dropped and counted. A peer silent for
//! [`SfuConfig::peer_timeout`] is dropped with [`SfuEvent::PeerGone`].
//!
//! ## Privacy
//! [`PeerId`] and [`RoomKey`] are opaque random values from the control
//! plane; they never reach SDP, ICE, or RTP. Logs print peer ids shortened
//! and never addresses. (str0m's own `debug`/`trace` logs may contain
//! addresses: run with `str0m=warn` or quieter.)
//!
//! ## Test-only tap
//! With the cargo feature `tap` (off by default) [`Sfu::take_tap`] returns
//! every payload the SFU forwarded in a room.

mod config;
mod error;
mod event;
mod fastpath;
mod ids;
mod peer;
mod sfu;
mod slot;
mod speakers;
mod stats;
#[cfg(feature = "tap")]
mod tap;

pub use config::SfuConfig;
pub use error::SfuError;
pub use event::{GoneReason, SfuEvent, Transmit};
pub use ids::{PeerId, RoomKey};
pub use sfu::Sfu;
pub use stats::SfuStats;
#[cfg(feature = "tap")]
pub use tap::TapRecord;
