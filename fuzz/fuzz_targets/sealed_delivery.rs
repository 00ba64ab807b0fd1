//! Sealed audience-key deliveries, key statements, rosters and roster
//! proofs as a listener receives them; roster chunks as the server does.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;
use sotto_e2ee::{
    audience::{JoinRequest, Listener, parse_sealed, sign_key_statement},
    frame::Suite,
    identity::DeviceIdentity,
    keys::{KeyGeneration, test_audience_key},
};

thread_local! {
    static LISTENER: RefCell<(Listener, DeviceIdentity)> = RefCell::new({
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let id = DeviceIdentity::generate(&mut rng, b"a", "d");
        let (_, keys) = JoinRequest::create(&id, b"room", 1000, &mut rng).expect("setup");
        (Listener::new(b"room", &id.public(), keys, Suite::CompactAudio, 1000), id)
    });
}

fuzz_target!(|data: &[u8]| {
    let generation = parse_sealed(data)
        .map(|p| p.generation)
        .unwrap_or(KeyGeneration {
            epoch: 0,
            rotation: 0,
        });
    LISTENER.with(|l| {
        let (l, id) = &mut *l.borrow_mut();
        let trusted = [id.public()];
        let _ = l.verify_statement(data, &trusted);
        let _ = l.accept_roster(data, &trusted);
        let _ = sotto_e2ee::roster::RosterProofs::parse(data);
        let _ = sotto_e2ee::roster::RosterLeaves::parse(data);
        let _ = sotto_e2ee::roster::parse_proof_request(data);
        // a genuine statement for the claimed generation, so that arbitrary
        // bytes reach the HPKE open
        let stmt = sign_key_statement(id, b"room", &test_audience_key(generation, [2; 32]));
        if let Ok(stmt) = l.verify_statement(&stmt, &trusted) {
            let _ = l.open(0, data, &stmt);
        }
    });
});
