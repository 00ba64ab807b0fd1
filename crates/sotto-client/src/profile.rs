//! A profile directory: the device's Ed25519 key (`device.key`, mode 0600)
//! and what the client knows about its account (`profile.json`). No session
//! token is stored: each command signs a fresh login challenge.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use sotto_proto::keys::{DevicePublicKey, encode_b64};
use sotto_proto::{DeviceId, UserId};

use crate::ClientError;

const KEY_FILE: &str = "device.key";
const INFO_FILE: &str = "profile.json";
const TRUST_FILE: &str = "trust.json";

/// What a profile remembers about its account.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProfileInfo {
    pub server: Option<String>,
    pub username: Option<String>,
    pub user_id: Option<UserId>,
    pub device_id: Option<DeviceId>,
}

pub struct Profile {
    dir: PathBuf,
    key: SigningKey,
    pub info: ProfileInfo,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("dir", &self.dir)
            .field("key", &self.public_key())
            .finish()
    }
}

impl Profile {
    /// Opens the profile in `dir`, creating a new device key if there is none.
    pub fn open_or_create(dir: &Path) -> Result<Profile, ClientError> {
        if dir.join(KEY_FILE).exists() {
            return Profile::open(dir);
        }
        std::fs::create_dir_all(dir)?;
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        write_private(&dir.join(KEY_FILE), hex::encode(seed).as_bytes())?;
        let profile = Profile {
            dir: dir.to_path_buf(),
            key: SigningKey::from_bytes(&seed),
            info: ProfileInfo::default(),
        };
        profile.save()?;
        Ok(profile)
    }

    pub fn open(dir: &Path) -> Result<Profile, ClientError> {
        let text = std::fs::read_to_string(dir.join(KEY_FILE)).map_err(|e| {
            ClientError::Profile(format!(
                "no device key in {} ({e}); run `sotto register` first",
                dir.display()
            ))
        })?;
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ClientError::Profile(format!(
                    "{} is not a device key",
                    dir.join(KEY_FILE).display()
                ))
            })?;
        let info = match std::fs::read_to_string(dir.join(INFO_FILE)) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                ClientError::Profile(format!("{}: {e}", dir.join(INFO_FILE).display()))
            })?,
            Err(_) => ProfileInfo::default(),
        };
        Ok(Profile {
            dir: dir.to_path_buf(),
            key: SigningKey::from_bytes(&seed),
            info,
        })
    }

    pub fn save(&self) -> Result<(), ClientError> {
        let text = serde_json::to_string_pretty(&self.info)
            .map_err(|e| ClientError::Profile(e.to_string()))?;
        std::fs::write(self.dir.join(INFO_FILE), text)?;
        Ok(())
    }

    pub fn public_key(&self) -> DevicePublicKey {
        DevicePublicKey::from_bytes(self.key.verifying_key().to_bytes())
    }

    /// Signs a transcript from [`sotto_proto::keys`]; base64url.
    pub fn sign(&self, transcript: &[u8]) -> String {
        encode_b64(&self.key.sign(transcript).to_bytes())
    }

    /// Signs the next link of the account's device chain (after `prev`,
    /// the chain's newest link; None for the first).
    pub fn sign_link(
        &self,
        prev: Option<&sotto_proto::chain::DeviceLink>,
        op: sotto_proto::chain::LinkOp,
        subject: &DevicePublicKey,
    ) -> sotto_proto::chain::DeviceLink {
        sotto_proto::chain::DeviceLink::sign(prev, op, subject, &self.key)
    }

    /// The device's signing key (signs access statements).
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The device key's seed, for the E2EE identity (the same Ed25519 key
    /// is the device's MLS leaf key and signs its join requests).
    pub fn device_seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// What this device trusts (pinned device chains, verified accounts):
    /// `trust.json` in the profile directory, empty if there is none.
    pub fn load_trust(&self) -> Result<sotto_room::TrustStore, ClientError> {
        match std::fs::read_to_string(self.dir.join(TRUST_FILE)) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                ClientError::Profile(format!("{}: {e}", self.dir.join(TRUST_FILE).display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Saves what this device trusts (written to a temporary file, then
    /// renamed: a crash never leaves half a trust file).
    pub fn save_trust(&self, trust: &sotto_room::TrustStore) -> Result<(), ClientError> {
        let text =
            serde_json::to_string_pretty(trust).map_err(|e| ClientError::Profile(e.to_string()))?;
        let tmp = self.dir.join(format!("{TRUST_FILE}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.dir.join(TRUST_FILE))?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = Profile::open_or_create(dir.path()).unwrap();
        let b = Profile::open_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
