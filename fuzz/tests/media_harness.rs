//! The `sfu_datagram` harness is only worth its time if its peers really
//! connect and the speaker's packets really take the forwarding path.

use std::time::Duration;

use sotto_fuzz::media::{STRANGER, World};

#[test]
fn the_speaker_is_forwarded_and_a_stranger_is_not_answered() {
    let mut w = World::connected(true);
    for n in 0..10u8 {
        w.speak(0, &[n; 60], -20);
        w.run_for(Duration::from_millis(20));
    }
    assert!(w.sfu.rtp_forwarded() >= 5, "{:?}", w.sfu.stats());
    let log = w.log.take().expect("logging");
    assert!(
        log.iter()
            .any(|(_, b)| b.first().is_some_and(|b| (20..=63).contains(b))),
        "DTLS"
    );
    assert!(
        log.iter().any(|(_, b)| b.first().is_some_and(|b| *b <= 3)),
        "STUN"
    );
    // A client's datagrams from a stranger, with a byte of each changed
    // (for STUN: in the transaction id, so its integrity check fails), get
    // no answer: the harness asserts that the SFU only sends to the clients.
    // (An unchanged STUN check replayed by someone on the path does get an
    // answer: ICE lets a peer move to a new address that way.)
    for (_, b) in &log {
        let mut b = b.clone();
        if let Some(x) = b.get_mut(10) {
            *x ^= 0x40;
        }
        w.datagram(STRANGER, &b);
    }
    w.run_for(Duration::from_secs(1));
}
