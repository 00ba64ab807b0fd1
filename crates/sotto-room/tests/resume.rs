//! The client core after a server restart ([`sotto_room::RoomCrypto::reconnected`]):
//! each device resumes its part with the keys it holds. Virtual time, the
//! in-memory relay of `common`.

mod common;

use common::Net;
use sotto_proto::channel::{ClientMessage, E2eeUp};
use sotto_proto::room::Role;

/// Host and speaker on the stage group, one listener, everyone hearing.
fn room() -> (Net, usize, usize, usize) {
    let mut net = Net::new(7);
    let h = net.join("host", Role::Host);
    net.run();
    let l = net.join("lis", Role::Listener);
    net.run();
    let s = net.join("spk", Role::Listener);
    net.run();
    net.invite(h, s);
    net.advance(2_000, 100);
    assert!(net.hears(h, l) && net.hears(s, l) && net.hears(h, s));
    (net, h, s, l)
}

fn sent_since(net: &Net, i: usize, from: usize, pred: impl Fn(&E2eeUp) -> bool) -> usize {
    net.devs[i].sent[from..]
        .iter()
        .filter(|m| matches!(m, ClientMessage::E2ee { e2ee, .. } if pred(e2ee)))
        .count()
}

#[test]
fn after_a_restart_that_kept_the_group_everyone_resumes_in_it() {
    let (mut net, h, s, l) = room();
    let code = net.devs[h].crypto.room_code();
    let sent: Vec<usize> = net.devs.iter().map(|d| d.sent.len()).collect();
    net.restart(true);
    net.run();
    // Nobody makes a group or asks to join one; the listener asks for the
    // audience key again (the relay lost its request).
    for i in [h, s, l] {
        assert_eq!(
            sent_since(&net, i, sent[i], |m| matches!(
                m,
                E2eeUp::CreateGroup { .. } | E2eeUp::KeyPackage { .. }
            )),
            0,
            "{}",
            net.devs[i].name
        );
    }
    assert_eq!(
        sent_since(&net, l, sent[l], |m| matches!(
            m,
            E2eeUp::JoinRequest { .. }
        )),
        1
    );
    // The distributor publishes its roster again.
    assert!(net.roster.is_some(), "the roster is published again");
    assert_eq!(net.devs[s].crypto.room_code(), code, "the same group");
    // Rotations go on; everyone keeps hearing everyone, with no alert.
    for _ in 0..4 {
        net.advance(10_000, 200);
        assert!(net.hears(h, l) && net.hears(s, l) && net.hears(h, s));
    }
    for d in &net.devs {
        assert!(d.alerts.is_empty(), "{}: {:?}", d.name, d.alerts);
    }
    assert_eq!(net.devs[h].crypto.room_code(), code);
}

#[test]
fn after_a_restart_that_lost_the_group_the_host_makes_a_new_one() {
    let (mut net, h, s, l) = room();
    let code = net.devs[h].crypto.room_code();
    let sent = net.devs[h].sent.len();
    net.restart(false);
    // Without the saved group, a speaker needs the host's invitation again
    // (what saving the group spares them): the host means to give it.
    let spk = net.devs[s].user.clone();
    net.devs[h].crypto.invite_to_stage(&spk);
    net.run();
    assert_eq!(
        sent_since(&net, h, sent, |m| matches!(m, E2eeUp::CreateGroup { .. })),
        1,
        "the host makes a new group"
    );
    net.advance(3_000, 100);
    assert_ne!(net.devs[h].crypto.room_code(), code, "a new group");
    assert!(
        net.hears(h, l),
        "the listener hears the host in the new group"
    );
    // The speaker, invited again, is in the new group.
    assert!(net.hears(s, l) && net.hears(h, s));
}

#[test]
fn a_host_that_starts_over_makes_a_new_group_and_listeners_are_keyed_again() {
    // The host's page reloads: same device key, no group state. It makes a
    // new group; the listener, told of the new binding, asks for the key
    // again and hears the host within a moment.
    let (mut net, h, _s, l) = room();
    let code = net.devs[h].crypto.room_code();
    let sent = net.devs[l].sent.len();
    net.reload(h);
    net.run();
    net.advance(3_000, 100);
    assert_ne!(net.devs[h].crypto.room_code(), code, "a new group");
    assert_eq!(
        sent_since(&net, l, sent, |m| matches!(m, E2eeUp::JoinRequest { .. })),
        1,
        "the listener asks the new group's distributor once"
    );
    net.hears_why(h, l)
        .expect("the listener hears the host in its new group");
}
