//! Session-channel text frames: what the server parses from a client
//! (`parse_client_message`) and a client from the server
//! (`parse_server_message`), then every binary E2EE field decoded as the
//! relay and the client decode it (`decode_payload`). Whatever parses must
//! survive a round trip through its own encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_proto::channel::{
    ClientEnvelope, ServerEnvelope, decode_payload, parse_client_message, parse_server_message,
};

/// Every string in the message, as the relay would try its binary fields.
fn decode_strings(v: &serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let Ok(bytes) = decode_payload(s) {
                assert!(bytes.len() <= s.len());
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(decode_strings),
        serde_json::Value::Object(o) => o.values().for_each(decode_strings),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = parse_client_message(text) {
        let again = ClientEnvelope::new(msg.clone()).to_json();
        assert_eq!(
            parse_client_message(&again),
            Ok(msg.clone()),
            "client round trip"
        );
        decode_strings(&serde_json::to_value(&msg).expect("serializes"));
    }
    if let Ok(msg) = parse_server_message(text) {
        let again = ServerEnvelope::new(msg.clone()).to_json();
        assert_eq!(
            parse_server_message(&again),
            Ok(msg.clone()),
            "server round trip"
        );
        decode_strings(&serde_json::to_value(&msg).expect("serializes"));
    }
});
