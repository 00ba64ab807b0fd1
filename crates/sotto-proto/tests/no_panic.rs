//! Nothing a peer sends may panic a parser.

use proptest::prelude::*;
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
}
