//! Datagrams into the SFU (STUN, DTLS, SRTP, SRTCP and garbage), with two
//! real peers connected so every demux path is live, time passing, and a
//! publishing client whose genuine packets take the forwarding path.
//!
//! Input: records (`sotto_fuzz::records`): op, u16 length, bytes.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sotto_fuzz::media::{STRANGER, World};
use sotto_fuzz::records::records;

fuzz_target!(|data: &[u8]| {
    let mut w = World::connected(false);
    for (op, bytes) in records(data).take(64) {
        match op % 8 {
            // From the speaker's and the listener's own (ICE-checked) addresses.
            0 => w.datagram(w.clients[0].addr, bytes),
            1 => w.datagram(w.clients[1].addr, bytes),
            // From an address nobody announced.
            2 => w.datagram(STRANGER, bytes),
            // The same, steered into the DTLS and the RTP/RTCP ranges (RFC 7983).
            3 | 4 => {
                let mut b = bytes.to_vec();
                if let Some(first) = b.first_mut() {
                    *first = if op % 8 == 3 {
                        20 + *first % 44
                    } else {
                        0x80 | (*first & 0x3f)
                    };
                }
                w.datagram(w.clients[usize::from(op >> 7)].addr, &b);
            }
            5 => {
                let ms = bytes.first().copied().map_or(20, u64::from) * 20;
                w.run_for(Duration::from_millis(ms));
            }
            6 => {
                let level = bytes.first().map_or(-30, |b| -((*b % 128) as i8));
                w.speak(usize::from(op >> 7), bytes, level);
            }
            _ => {
                let allowed = bytes.first().is_some_and(|b| b & 1 == 1);
                let peer = w.clients[usize::from(op >> 7)].id;
                let _ = w.sfu.set_may_publish(peer, allowed);
            }
        }
    }
});
