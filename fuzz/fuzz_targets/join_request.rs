//! Listener join requests as the distributor receives them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;
use sotto_e2ee::{audience::JoinRequest, identity::DeviceIdentity};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = JoinRequest::parse(data) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let id = DeviceIdentity::generate(&mut rng, b"a", "d");
        let _ = req.verify(&id.public(), b"room", 0);
    }
});
