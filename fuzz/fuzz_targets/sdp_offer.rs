//! SDP offers as the SFU receives them from the session channel
//! (`media_offer`): the SFU's own m-line checks, then str0m's parser and
//! negotiation, then the answer.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sotto_fuzz::media::SFU_ADDR;
use sotto_sfu::{PeerId, RoomKey, Sfu, SfuConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    let now = Instant::now();
    let mut sfu = Sfu::new(now, SfuConfig::default(), SFU_ADDR).expect("sfu");
    let (peer, room) = (PeerId::from_bytes([1; 16]), RoomKey::from_bytes([2; 16]));
    if let Ok(answer) = sfu.add_peer(now, peer, room, sdp) {
        assert!(answer.contains("a=ice-lite"));
        assert!(sfu.slot_sources(peer).is_some());
        // A second offer for the same peer is refused, not merged.
        assert!(sfu.add_peer(now, peer, room, sdp).is_err());
        sfu.remove_peer(peer).expect("just added");
    }
    while sfu.poll_transmit().is_some() {}
    while sfu.poll_event().is_some() {}
    assert_eq!(sfu.stats().peers, 0);
});
