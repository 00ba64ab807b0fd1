//! Signed stage blobs a stage candidate receives from the relay: the host's
//! group binding and a stage invitation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;
use sotto_e2ee::{
    binding::VerifiedBinding, identity::DeviceIdentity, invitation::VerifiedInvitation,
};

fuzz_target!(|data: &[u8]| {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let host = DeviceIdentity::generate(&mut rng, b"h", "d");
    // Any outcome is fine; a panic is the bug.
    if let Ok(b) = VerifiedBinding::verify(data, b"room", &[host.public()]) {
        assert!(b.group_id().len() <= 64);
    }
    if let Ok(inv) = VerifiedInvitation::verify(data, b"room", &[host.public()], 0) {
        assert_eq!(inv.inviter(), &host.public());
    }
});
