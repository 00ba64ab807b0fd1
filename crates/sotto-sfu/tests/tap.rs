//! The test-only tap (cargo feature `tap`) records exactly what was forwarded.
#![cfg(feature = "tap")]

mod common;

use std::time::Duration;

use common::{ROOM, World};
use sotto_sfu::SfuConfig;

#[test]
fn tap_records_each_forwarded_payload_once() {
    let mut w = World::new(SfuConfig::default(), 11);
    for _ in 0..3 {
        w.add_client(3);
    }
    w.connect_all();
    let (s, l) = (w.clients[0].id, w.clients[1].id);
    w.sfu.set_may_publish(s, true).expect("s");
    w.start_talking(0, -30);
    // A listener trying to publish is not forwarded, so not tapped.
    w.start_talking(1, -30);
    w.run_for(Duration::from_secs(1));
    w.stop_talking(0);
    w.stop_talking(1);
    w.run_for(Duration::from_millis(200));

    let tap = w.sfu.take_tap(ROOM);
    let sent = w.clients[0].sent_payloads();
    assert!(sent.len() >= 45);
    assert!(tap.iter().all(|r| r.source == s && r.source != l));
    let tapped: Vec<Vec<u8>> = tap.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(
        tapped, sent,
        "one record per forwarded packet, byte for byte"
    );
    assert_eq!(
        w.clients[2].payloads(),
        tapped,
        "the tap is what listeners got"
    );
    assert!(w.sfu.take_tap(ROOM).is_empty(), "taking empties it");
}
