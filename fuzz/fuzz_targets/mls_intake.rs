//! MLS message intake: a stage member and the delivery service both take
//! arbitrary bytes.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;
use sotto_delivery::RoomDelivery;
use sotto_e2ee::{
    identity::DeviceIdentity,
    stage::{ExternalSenderInfo, StageConfig, StageMember},
};

thread_local! {
    static STATE: RefCell<(StageMember, RoomDelivery)> = RefCell::new({
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let host = DeviceIdentity::generate(&mut rng, b"host", "d");
        let info = ExternalSenderInfo { public_key: vec![0x11; 32], credential_identity: b"server".to_vec() };
        let (m, gi, tree) = StageMember::create(host, b"room", &info, StageConfig::default(), 0, &mut rng)
            .expect("setup");
        let ds = RoomDelivery::create(&gi, &tree).expect("setup");
        (m, ds)
    });
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let _ = s.0.handle_message(0, data);
        let _ = s.1.handle_handshake(data);
        let _ = s.1.set_group_info(data);
        let _ = RoomDelivery::create(data, data);
    });
});
