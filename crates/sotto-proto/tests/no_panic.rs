//! Nothing a peer sends may panic a parser.

use proptest::prelude::*;
use sotto_proto::chain::{DeviceLink, LINK_LEN, parse_chain, verify_chain};
use sotto_proto::channel::{parse_client_message, parse_server_message};
use sotto_proto::keys::{DevicePublicKey, decode_b64, parse_signature};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn channel_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_client_message(&text);
        let _ = parse_server_message(&text);
    }

    #[test]
    fn channel_parser_survives_json_like_input(
        v in prop_oneof![Just("1".to_string()), any::<i64>().prop_map(|n| n.to_string()), "\"[a-z]{0,4}\"".prop_map(|s| s)],
        ty in prop_oneof![Just("hello".to_string()), Just("subscribe".to_string()), Just("ping".to_string()), "[a-z_]{0,10}"],
        field in "[a-z_]{0,10}",
        value in prop_oneof![Just("null".to_string()), any::<i64>().prop_map(|n| n.to_string()), "\"[ -~]{0,40}\"", Just("{}".to_string()), Just("[1,2]".to_string())],
    ) {
        let text = format!(r#"{{"v":{v},"msg":{{"type":"{ty}","{field}":{value}}}}}"#);
        let _ = parse_client_message(&text);
    }

    #[test]
    fn key_parsers_never_panic(text in "[ -~]{0,200}") {
        if let Ok(key) = DevicePublicKey::parse(&text) {
            let _ = key.verifying_key();
            let _ = key.verify(b"m", &text);
        }
        let _ = parse_signature(&text);
        let _ = decode_b64(&text);
    }

    #[test]
    fn device_chains_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..(3 * LINK_LEN + 8)),
        flip in any::<usize>(),
    ) {
        if let Ok(links) = parse_chain(&bytes) {
            let _ = verify_chain(&links);
        }
        // A real chain with one byte changed anywhere is refused (the
        // first link's signature bytes feed the second link's hash).
        let sk = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let sk2 = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
        let k = DevicePublicKey::from_bytes(sk.verifying_key().to_bytes());
        let k2 = DevicePublicKey::from_bytes(sk2.verifying_key().to_bytes());
        let l0 = DeviceLink::sign(None, sotto_proto::chain::LinkOp::Add, &k, &sk);
        let l1 = DeviceLink::sign(Some(&l0), sotto_proto::chain::LinkOp::Add, &k2, &sk);
        let mut good = l0.to_bytes();
        good.extend(l1.to_bytes());
        prop_assert!(verify_chain(&parse_chain(&good).unwrap()).is_ok());
        let at = flip % good.len();
        good[at] ^= 0x40;
        if let Ok(links) = parse_chain(&good) {
            prop_assert!(verify_chain(&links).is_err(), "byte {} changed and still verifies", at);
        }
    }
}
