//! SFrame headers and whole frames as a receiver gets them from the SFU.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_e2ee::{
    frame::{KeyRing, Suite, parse_header},
    keys::{KeyGeneration, test_audience_key},
};

fuzz_target!(|data: &[u8]| {
    let _ = parse_header(data);
    let mut ring = KeyRing::new(Suite::CompactAudio, 1000);
    ring.install(
        test_audience_key(
            KeyGeneration {
                epoch: 0,
                rotation: 0,
            },
            [1; 32],
        ),
        0,
    );
    let _ = ring.decrypt(0, data);
});
