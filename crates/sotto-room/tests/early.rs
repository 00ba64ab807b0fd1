//! Frames that arrive before their key (`EarlyFrames`): media and keys
//! travel separately, so a listener's first frames can beat its sealed
//! key. They wait for it and then play; nothing else waits, and nothing
//! waits for long.

mod common;

use common::{Net, Verdict};
use sotto_proto::channel::ServerMessage;
use sotto_proto::room::Role;
use sotto_room::early::{HOLD_FRAMES, HOLD_MS};
use sotto_room::{EarlyFrames, Opened};

/// A host speaking and a listener who joined but has no key yet (the
/// relay has not delivered anything to it).
fn keyless_listener(seed: u64) -> (Net, usize, usize) {
    let mut net = Net::new(seed);
    let h = net.join("host", Role::Host);
    net.run();
    net.advance(500, 100);
    let l = net.join("listener", Role::Listener);
    assert!(!net.devs[l].crypto.can_decrypt());
    (net, h, l)
}

#[test]
fn frames_before_the_key_wait_for_it_and_then_play_in_order() {
    let (mut net, h, l) = keyless_listener(31);
    let mut early = EarlyFrames::default();
    for i in 0..5u16 {
        let now = net.now;
        let frame = net.devs[h].crypto.encrypt(now, &[i as u8; 20]).unwrap();
        let opened = early.decrypt(&mut net.devs[l].crypto, now, i, frame);
        assert!(matches!(opened, Opened::Held), "frame {i}: {opened:?}");
    }
    // Nothing to open yet: they keep waiting.
    assert!(early.retry(&mut net.devs[l].crypto, net.now).is_empty());
    assert_eq!(early.len(), 5);

    net.run();
    assert!(net.devs[l].crypto.can_decrypt(), "the key came");
    let opened = early.retry(&mut net.devs[l].crypto, net.now);
    let seqs: Vec<u16> = opened.iter().map(|(i, _)| *i).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    for (i, plain) in &opened {
        assert_eq!(plain, &[*i as u8; 20]);
    }
    assert!(early.is_empty());
    assert_eq!(early.take_expired(), 0);

    // Once keyed, a frame opens at once, and the same frame twice is a
    // replay: refused, not held.
    let frame = net.devs[h].crypto.encrypt(net.now, b"live").unwrap();
    let now = net.now;
    let first = early.decrypt(&mut net.devs[l].crypto, now, 9, frame.clone());
    assert!(matches!(first, Opened::Plain(9, ref p) if p == b"live"));
    let again = early.decrypt(&mut net.devs[l].crypto, now, 9, frame);
    assert!(matches!(again, Opened::Failed(_)), "{again:?}");
    assert!(early.is_empty());
}

#[test]
fn a_forged_frame_does_not_wait_once_keyed() {
    let (mut net, h, l) = keyless_listener(32);
    net.run();
    let mut early = EarlyFrames::default();
    let mut frame = net.devs[h].crypto.encrypt(net.now, b"real").unwrap();
    let last = frame.len() - 1;
    frame[last] ^= 1;
    let now = net.now;
    let opened = early.decrypt(&mut net.devs[l].crypto, now, 0, frame);
    assert!(matches!(opened, Opened::Failed(_)), "{opened:?}");
    assert!(early.is_empty());
}

#[test]
fn frames_whose_key_never_comes_expire_and_the_hold_stays_bounded() {
    let (mut net, h, l) = keyless_listener(33);
    // The operator withholds every E2EE message from the listener.
    net.hook = Box::new(move |to, m| match m {
        ServerMessage::E2ee { .. } if to == l => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    net.run();
    assert!(!net.devs[l].crypto.can_decrypt());
    let mut early = EarlyFrames::default();
    let extra = 30;
    for i in 0..(HOLD_FRAMES + extra) as u16 {
        net.advance(20, 20);
        let now = net.now;
        let frame = net.devs[h].crypto.encrypt(now, b"x").unwrap();
        early.decrypt(&mut net.devs[l].crypto, now, i, frame);
    }
    assert_eq!(early.len(), HOLD_FRAMES, "the hold is bounded");
    assert_eq!(early.take_expired(), extra as u64, "the oldest made room");
    net.advance(HOLD_MS, 100);
    assert!(early.retry(&mut net.devs[l].crypto, net.now).is_empty());
    assert!(early.is_empty(), "every frame expired");
    assert_eq!(early.take_expired(), HOLD_FRAMES as u64);
}
