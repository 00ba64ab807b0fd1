//! Signed access statements (follow, allow, ban) as the server takes them
//! over HTTP and clients take them from the relay.
//!
//! An input starting with an even byte is the statement's bytes. One
//! starting with an odd byte names the fields of a statement that is then
//! signed for real, and must parse back to the same fields.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use sotto_proto::access::{AccessStatement, AccessVerb, sign_access};
use sotto_proto::ids::UserId;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(s) = AccessStatement::parse(rest) {
            assert!(!s.target.as_str().is_empty());
            assert_eq!(s.verb == AccessVerb::Follow, s.room.is_empty());
        }
        return;
    }
    // verb, created (8), room length, room, target: short ASCII ids.
    let [verb, c0, c1, c2, c3, c4, c5, c6, c7, room_len, ids @ ..] = rest else {
        return;
    };
    let verb = match verb % 3 {
        0 => AccessVerb::Follow,
        1 => AccessVerb::Allow,
        _ => AccessVerb::Ban,
    };
    let created = u64::from_be_bytes([*c0, *c1, *c2, *c3, *c4, *c5, *c6, *c7]);
    let ascii: String = ids.iter().map(|b| char::from(b'a' + b % 26)).collect();
    let (room, target) = ascii.split_at(usize::from(*room_len).min(ascii.len()));
    let (room, target) = (&room[..room.len().min(64)], &target[..target.len().min(64)]);
    let key = SigningKey::from_bytes(&[9; 32]);
    let bytes = sign_access(&key, verb, room, &UserId(target.to_string()), created);
    let parsed = AccessStatement::parse(&bytes);
    if target.is_empty() || (verb != AccessVerb::Follow && room.is_empty()) {
        assert!(
            parsed.is_err(),
            "a statement without a target or room is refused"
        );
        return;
    }
    let s = parsed.expect("a signed statement parses");
    assert_eq!((s.verb, s.created_ms), (verb, created));
    assert_eq!(s.target.as_str(), target);
    assert_eq!(s.room, if verb == AccessVerb::Follow { "" } else { room });
    assert_eq!(s.signer, key.verifying_key().to_bytes());
});
