//! Device chains as the server takes new links and clients take relayed
//! chains: `parse_chain` then `verify_chain`.
//!
//! An input starting with an even byte is the chain's bytes. One starting
//! with an odd byte is a script: up to 12 (op, subject, signer) triples over
//! four fixed keys, signed for real so the fuzzer reaches the add/revoke
//! rules behind the signatures, then one bit flipped if the script says so.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use sotto_proto::chain::{DeviceLink, LinkOp, encode_chain, parse_chain, verify_chain};
use sotto_proto::keys::DevicePublicKey;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n % 4 + 1; 32])
}

fn public(n: u8) -> DevicePublicKey {
    DevicePublicKey::from_bytes(key(n).verifying_key().to_bytes())
}

fn check(bytes: &[u8]) {
    let Ok(links) = parse_chain(bytes) else {
        return;
    };
    assert_eq!(
        encode_chain(&links),
        bytes,
        "a parsed chain re-encodes to its bytes"
    );
    let Ok(chain) = verify_chain(&links) else {
        return;
    };
    assert_eq!(chain.head().seq as usize, links.len() - 1);
    assert!(
        !chain.active().is_empty(),
        "a verified chain keeps a device"
    );
    assert_eq!(chain.root(), &links[0].subject);
    for n in 1..=links.len() {
        let prefix = verify_chain(&links[..n]).expect("a prefix of a valid chain is valid");
        chain
            .extends(&prefix.head())
            .expect("a chain extends its own prefixes");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, script)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        return check(script);
    }
    // n, then n (op, subject, signer) triples, then where to flip a bit.
    let Some((&n, rest)) = script.split_first() else {
        return;
    };
    let (ops, flip) = rest.split_at((usize::from(n % 13) * 3).min(rest.len()));
    let mut links: Vec<DeviceLink> = Vec::new();
    for t in ops.chunks_exact(3) {
        let op = if t[0] % 2 == 0 {
            LinkOp::Add
        } else {
            LinkOp::Revoke
        };
        links.push(DeviceLink::sign(
            links.last(),
            op,
            &public(t[1]),
            &key(t[2]),
        ));
    }
    let mut bytes = encode_chain(&links);
    if let [at_hi, at_lo, bit, ..] = *flip
        && !bytes.is_empty()
    {
        let at = usize::from(u16::from_be_bytes([at_hi, at_lo])) % bytes.len();
        bytes[at] ^= 1 << (bit % 8);
    }
    check(&bytes);
});
