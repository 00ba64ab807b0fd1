//! # sotto-wasm: the client core, for the browser
//!
//! A thin wasm-bindgen face of [`sotto_room`] (one device's part in a room's
//! end-to-end encryption, what it trusts, SFrame on every frame) and of the
//! device key's signatures ([`sotto_proto::keys`], [`sotto_proto::access`],
//! [`sotto_proto::chain`]). It has no protocol logic of its own: the native
//! CLI and the browser drive the same core. The web client loads it only in
//! its core worker, which also runs the encoded transforms, so that the
//! device key and the room keys never reach the page's main thread.
//!
//! Messages cross as plain JavaScript objects shaped like the generated
//! TypeScript wire types (`web/src/wire`). Nothing a peer or the server
//! sends panics: a message the core refuses is dropped and counted, as the
//! native driver does; bad arguments from the page are a thrown `Error`
//! with a plain message.

use ed25519_dalek::{Signer as _, SigningKey};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sotto_proto::access::{AccessVerb, sign_access};
use sotto_proto::api::{LoginRequest, RegisterRequest};
use sotto_proto::channel::{ClientMessage, ServerMessage, decode_payload};
use sotto_proto::keys::{
    DevicePublicKey, decode_b64, delete_account_transcript, encode_b64, login_transcript,
    register_transcript,
};
use sotto_proto::room::RoomView;
use sotto_proto::{DeviceId, UserId};
use sotto_room::{RoomCrypto, Trust, TrustStore};
use wasm_bindgen::prelude::*;

/// A thrown error with a plain message.
fn err(message: impl std::fmt::Display) -> JsError {
    JsError::new(&message.to_string())
}

fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(err)
}

fn from_js<T: DeserializeOwned>(value: JsValue, what: &str) -> Result<T, JsError> {
    serde_wasm_bindgen::from_value(value).map_err(|e| err(format!("{what}: {e}")))
}

fn seed_of(seed: &[u8]) -> Result<zeroize::Zeroizing<[u8; 32]>, JsError> {
    let bytes: [u8; 32] = seed
        .try_into()
        .map_err(|_| err("a device seed is 32 bytes"))?;
    Ok(zeroize::Zeroizing::new(bytes))
}

fn trust_of(trust: Option<String>) -> Result<TrustStore, JsError> {
    match trust.as_deref() {
        None | Some("") => Ok(TrustStore::default()),
        Some(text) => serde_json::from_str(text).map_err(|e| err(format!("trust store: {e}"))),
    }
}

fn trust_word(trust: Trust) -> &'static str {
    match trust {
        Trust::Verified => "verified",
        Trust::Unverified => "unverified",
        Trust::Changed => "changed",
    }
}

/// 32 random bytes from the browser's CSPRNG: a new device key's seed.
#[wasm_bindgen(js_name = generateSeed)]
pub fn generate_seed() -> Result<Vec<u8>, JsError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| err(format!("no randomness: {e}")))?;
    Ok(seed.to_vec())
}

/// This browser's device key: it signs registration, sign-in, access
/// statements (follow, allow, ban) and account deletion.
#[wasm_bindgen]
pub struct Device {
    key: SigningKey,
}

#[wasm_bindgen]
impl Device {
    #[wasm_bindgen(constructor)]
    pub fn new(seed: &[u8]) -> Result<Device, JsError> {
        Ok(Device {
            key: SigningKey::from_bytes(&*seed_of(seed)?),
        })
    }

    fn public(&self) -> DevicePublicKey {
        DevicePublicKey::from_bytes(self.key.verifying_key().to_bytes())
    }

    fn sign(&self, transcript: &[u8]) -> String {
        encode_b64(&self.key.sign(transcript).to_bytes())
    }

    /// The device's public key, as the API's `device_public_key`.
    #[wasm_bindgen(js_name = publicKey)]
    pub fn public_key(&self) -> Result<String, JsError> {
        match serde_json::to_value(self.public()).map_err(err)? {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(err("a public key is written as a string")),
        }
    }

    /// A signed `POST /api/register` body: the account's first device, with
    /// the first link of its device chain.
    #[wasm_bindgen(js_name = registerRequest)]
    pub fn register_request(
        &self,
        invite: &str,
        username: &str,
        display_name: &str,
        device_name: &str,
    ) -> Result<JsValue, JsError> {
        let key = self.public();
        let link = sotto_proto::chain::DeviceLink::sign(
            None,
            sotto_proto::chain::LinkOp::Add,
            &key,
            &self.key,
        );
        to_js(&RegisterRequest {
            invite_code: invite.to_owned(),
            username: username.to_owned(),
            display_name: display_name.to_owned(),
            device_public_key: key,
            device_name: Some(device_name.to_owned()),
            signature: self.sign(&register_transcript(invite, username, &key)),
            device_link: encode_b64(&link.to_bytes()),
        })
    }

    /// A signed `POST /api/auth/login` body for the server's challenge.
    #[wasm_bindgen(js_name = loginRequest)]
    pub fn login_request(&self, challenge_id: &str, nonce: &str) -> Result<JsValue, JsError> {
        let nonce = decode_b64(nonce).map_err(|_| err("the challenge nonce is not base64url"))?;
        to_js(&LoginRequest {
            signature: self.sign(&login_transcript(challenge_id, &nonce, &self.public())),
            challenge_id: challenge_id.to_owned(),
        })
    }

    /// A signed access statement (`follow`, `allow`, `ban`) for the API's
    /// `statement` field; `room_id` is empty for a follow.
    #[wasm_bindgen(js_name = accessStatement)]
    pub fn access_statement(
        &self,
        verb: &str,
        room_id: &str,
        target_user_id: &str,
        now_ms: f64,
    ) -> Result<String, JsError> {
        let verb = match verb {
            "follow" => AccessVerb::Follow,
            "allow" => AccessVerb::Allow,
            "ban" => AccessVerb::Ban,
            _ => return Err(err("an access statement is a follow, an allow or a ban")),
        };
        let target = UserId(target_user_id.to_owned());
        if !target.is_well_formed() {
            return Err(err("the target is not a user id"));
        }
        Ok(encode_b64(&sign_access(
            &self.key,
            verb,
            room_id,
            &target,
            now_ms.max(0.0) as u64,
        )))
    }

    /// The signature `DELETE /api/me` wants from this (the session's) device.
    #[wasm_bindgen(js_name = deleteSignature)]
    pub fn delete_signature(&self, user_id: &str) -> String {
        self.sign(&delete_account_transcript(user_id, &self.public()))
    }
}

/// `trust` after checking (and pinning) both accounts' device chains, with
/// the two ids; None if a chain does not verify or its root changed.
fn pinned_pair(
    trust: Option<String>,
    me: &str,
    my_chain: &str,
    them: &str,
    their_chain: &str,
) -> Result<Option<(TrustStore, UserId, UserId)>, JsError> {
    let mut store = trust_of(trust)?;
    let (me, them) = (UserId(me.to_owned()), UserId(them.to_owned()));
    for (user, chain) in [(&me, my_chain), (&them, their_chain)] {
        let bytes = decode_payload(chain).map_err(|_| err("a device chain is base64url"))?;
        if store.check(user, &bytes).is_err() {
            return Ok(None);
        }
    }
    Ok(Some((store, me, them)))
}

/// The safety code between this account and another (compare it out loud):
/// both device chains are checked against `trust` (the pins the room keeps)
/// first. None if a chain does not verify or its root changed.
#[wasm_bindgen(js_name = safetyCode)]
pub fn safety_code(
    trust: Option<String>,
    me: &str,
    my_chain: &str,
    them: &str,
    their_chain: &str,
) -> Result<Option<String>, JsError> {
    Ok(pinned_pair(trust, me, my_chain, them, their_chain)?
        .and_then(|(store, me, them)| store.safety_code(&me, &them)))
}

/// The people compared safety codes: `trust` with `them` marked verified
/// (after both chains are checked against it, as for [`safety_code`]), or
/// None if a chain does not verify or their key changed.
#[wasm_bindgen(js_name = markVerified)]
pub fn mark_verified(
    trust: Option<String>,
    me: &str,
    my_chain: &str,
    them: &str,
    their_chain: &str,
) -> Result<Option<String>, JsError> {
    let Some((mut store, _, them)) = pinned_pair(trust, me, my_chain, them, their_chain)? else {
        return Ok(None);
    };
    if !store.mark_verified(&them) {
        return Ok(None);
    }
    serde_json::to_string(&store).map(Some).map_err(err)
}

/// One roster entry for the room-info panel.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RosterEntry {
    user_id: Option<String>,
    trust: Option<&'static str>,
    stage: bool,
}

/// The room's E2EE status (`web/src/engine/api.ts`, `E2eeStatus`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    can_decrypt: bool,
    can_encrypt: bool,
    roster: Vec<RosterEntry>,
    hidden: usize,
    /// Listener keys the signed roster lists (its count).
    listed: u32,
    /// Member devices not (yet) proven on or off the signed roster.
    unchecked: usize,
    room_code: Option<String>,
    alerts: Vec<String>,
    exposure_window_ms: u64,
    frames_decrypted: u64,
    decrypt_failures: u64,
    frames_encrypted: u64,
    messages_refused: u64,
}

/// One device's end-to-end encryption in one room: [`RoomCrypto`], driven
/// by the core worker with the session channel's messages and the media's
/// frames.
#[wasm_bindgen]
pub struct Room {
    core: RoomCrypto,
    out: Vec<ClientMessage>,
    /// Whether [`Room::check_roster`] ran: before it, no hidden count is
    /// shown (the members' chains are not learnt yet).
    checked: bool,
    frames_decrypted: u64,
    decrypt_failures: u64,
    frames_encrypted: u64,
    messages_refused: u64,
}

fn messages(out: Vec<ClientMessage>) -> Result<JsValue, JsError> {
    to_js(&out)
}

#[wasm_bindgen]
impl Room {
    /// E2EE for the signed-in device (`seed`, `user_id`, `device_id`) in
    /// `room` (a RoomView), trusting `trust` (what [`Room::trust`] returned
    /// last time). The hello to send waits in [`Room::take_outgoing`].
    #[wasm_bindgen(constructor)]
    pub fn new(
        seed: &[u8],
        user_id: &str,
        device_id: &str,
        room: JsValue,
        trust: Option<String>,
        now_ms: f64,
    ) -> Result<Room, JsError> {
        let seed = seed_of(seed)?;
        let view: RoomView = from_js(room, "room")?;
        let (core, out) = RoomCrypto::new(
            *seed,
            &UserId(user_id.to_owned()),
            &DeviceId(device_id.to_owned()),
            &view,
            trust_of(trust)?,
            now_ms as u64,
            &mut rand_core::OsRng,
        )
        .map_err(err)?;
        Ok(Room {
            core,
            out,
            checked: false,
            frames_decrypted: 0,
            decrypt_failures: 0,
            frames_encrypted: 0,
            messages_refused: 0,
        })
    }

    /// Messages waiting to be sent on the session channel (the hello, after
    /// the constructor).
    #[wasm_bindgen(js_name = takeOutgoing)]
    pub fn take_outgoing(&mut self) -> Result<JsValue, JsError> {
        messages(std::mem::take(&mut self.out))
    }

    /// A server message for this room; returns the messages to send. A
    /// message the core refuses (a forged key, a replay, a foreign group)
    /// is dropped and counted: a peer's bad message does not end the room.
    pub fn handle(&mut self, now_ms: f64, msg: JsValue) -> Result<JsValue, JsError> {
        let msg: ServerMessage = match from_js(msg, "server message") {
            Ok(m) => m,
            Err(_) => {
                self.messages_refused += 1;
                return messages(Vec::new());
            }
        };
        match self.core.handle(now_ms as u64, &msg) {
            Ok(out) => messages(out),
            Err(_) => {
                self.messages_refused += 1;
                messages(Vec::new())
            }
        }
    }

    /// When [`Room::handle_timeout`] is next due (Unix ms).
    #[wasm_bindgen(js_name = pollTimeout)]
    pub fn poll_timeout(&self) -> Option<f64> {
        self.core.poll_timeout().map(|t| t as f64)
    }

    #[wasm_bindgen(js_name = handleTimeout)]
    pub fn handle_timeout(&mut self, now_ms: f64) -> Result<JsValue, JsError> {
        messages(self.core.handle_timeout(now_ms as u64))
    }

    /// A new session channel is open (the old one was lost): resume.
    pub fn reconnected(&mut self, now_ms: f64) -> Result<JsValue, JsError> {
        messages(self.core.reconnected(now_ms as u64))
    }

    /// This device (a host or moderator) invites `user_id` to the stage: it
    /// signs their stage invitation when their device asks.
    #[wasm_bindgen(js_name = inviteToStage)]
    pub fn invite_to_stage(&mut self, user_id: &str) {
        self.core.invite_to_stage(&UserId(user_id.to_owned()));
    }

    /// One Opus frame, SFrame-encrypted; undefined without a send key (the
    /// frame is then not sent).
    pub fn encrypt(&mut self, now_ms: f64, opus: &[u8]) -> Option<Vec<u8>> {
        let frame = self.core.encrypt(now_ms as u64, opus)?;
        self.frames_encrypted += 1;
        Some(frame)
    }

    /// One received frame decrypted; undefined if it does not decrypt (no
    /// key, forged, replayed), counted.
    pub fn decrypt(&mut self, now_ms: f64, frame: &[u8]) -> Option<Vec<u8>> {
        match self.core.decrypt(now_ms as u64, frame) {
            Ok(plain) => {
                self.frames_decrypted += 1;
                Some(plain)
            }
            Err(_) => {
                self.decrypt_failures += 1;
                None
            }
        }
    }

    /// The user id of the stage member who sent this frame (see
    /// `RoomCrypto::frame_sender`: on stage from the group, in the audience
    /// from the signed stage map once a frame with its KID decrypted).
    pub fn sender(&self, frame: &[u8]) -> Option<String> {
        self.core.frame_sender(frame).map(|u| u.0)
    }

    /// A member's device chain (`Profile.device_chain`), checked against the
    /// pins and remembered for naming roster entries. Throws if it does not
    /// verify (an alert is queued too).
    #[wasm_bindgen(js_name = learnChain)]
    pub fn learn_chain(&mut self, user_id: &str, chain: &str) -> Result<(), JsError> {
        let bytes = decode_payload(chain).map_err(|_| err("a device chain is base64url"))?;
        self.core
            .learn_chain(&UserId(user_id.to_owned()), &bytes)
            .map_err(err)
    }

    /// The user compared safety codes with `user_id` (see [`mark_verified`]):
    /// this room's trust says so too, so the roster shows them verified.
    #[wasm_bindgen(js_name = markVerified)]
    pub fn mark_verified(&mut self, user_id: &str) -> bool {
        self.core.mark_verified(&UserId(user_id.to_owned()))
    }

    /// Once the chains of the room's members are learnt: asks the server
    /// for proofs about their devices against the signed roster (take the
    /// outgoing messages), names the key holders and raises the
    /// hidden-listener alert if some are nobody in the room — again as the
    /// proofs come. Returns how many are hidden so far.
    #[wasm_bindgen(js_name = checkRoster)]
    pub fn check_roster(&mut self) -> usize {
        self.checked = true;
        self.core.check_roster().hidden
    }

    /// Checks the devices the server lists for this device's own account
    /// (`chain`: the account's chain as served; `listed`: the public keys of
    /// `GET /api/me/devices`) against that chain. Returns how many listed
    /// devices none of the account's devices added (each time > 0 an alert).
    #[wasm_bindgen(js_name = checkOwnDevices)]
    pub fn check_own_devices(&mut self, chain: &str, listed: Vec<String>) -> Result<u32, JsError> {
        let bytes = decode_payload(chain).map_err(|_| err("a device chain is base64url"))?;
        let mut keys = Vec::with_capacity(listed.len());
        for text in listed {
            let key: DevicePublicKey = serde_json::from_value(serde_json::Value::String(text))
                .map_err(|_| err("a listed device key does not parse"))?;
            keys.push(*key.as_bytes());
        }
        let unknown = self.core.check_own_devices(&bytes, &keys).map_err(err)?;
        Ok(u32::try_from(unknown).unwrap_or(u32::MAX))
    }

    /// The E2EE status for the room-info panel; `alerts` holds the failed
    /// checks since the last call, in plain words.
    pub fn status(&mut self) -> Result<JsValue, JsError> {
        let report = self.core.roster_report();
        let roster = report
            .entries
            .into_iter()
            .map(|e| RosterEntry {
                user_id: e.user.map(|u| u.0),
                trust: e.trust.map(trust_word),
                stage: e.stage,
            })
            .collect();
        to_js(&Status {
            can_decrypt: self.core.can_decrypt(),
            can_encrypt: self.core.can_encrypt(),
            roster,
            hidden: if self.checked { report.hidden } else { 0 },
            listed: report.listed,
            unchecked: report.unchecked,
            room_code: self.core.room_code(),
            alerts: self
                .core
                .take_alerts()
                .iter()
                .map(ToString::to_string)
                .collect(),
            exposure_window_ms: self.core.exposure_window_ms(),
            frames_decrypted: self.frames_decrypted,
            decrypt_failures: self.decrypt_failures,
            frames_encrypted: self.frames_encrypted,
            messages_refused: self.messages_refused,
        })
    }

    /// What this device trusts now (pins moved forward in this room): the
    /// driver saves it with the device key.
    pub fn trust(&self) -> Result<String, JsError> {
        serde_json::to_string(self.core.trust()).map_err(err)
    }
}
