//! Sealed audience-key deliveries as a listener receives them.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;
use sotto_e2ee::{
    audience::{parse_sealed, JoinRequest, Listener},
    frame::Suite,
    identity::DeviceIdentity,
};

thread_local! {
    static LISTENER: RefCell<Listener> = RefCell::new({
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let id = DeviceIdentity::generate(&mut rng, b"a", "d");
        let (_, keys) = JoinRequest::create(&id, b"room", 1000, &mut rng).expect("setup");
        Listener::new(b"room", &id.public(), keys, Suite::CompactAudio, 1000)
    });
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_sealed(data);
    LISTENER.with(|l| {
        let _ = l.borrow_mut().open(0, data);
    });
});
