//! Accounts, device keys, login challenges and sessions.

use sotto_proto::api::{DeviceView, Me};
use sotto_proto::keys::DevicePublicKey;
use sotto_proto::{DeviceId, ErrorCode, UserId};
use sqlx::Row as _;

use super::{Store, flag, invites, is_unique_violation};
use crate::error::ApiError;

/// Everything a registration writes, made by the caller (ids, token hash).
#[derive(Debug)]
pub struct NewAccount {
    pub user_id: UserId,
    pub username: String,
    pub display_name: String,
    pub device_id: DeviceId,
    pub device_name: String,
    pub public_key: DevicePublicKey,
    /// The first link of the device chain (verified by the caller).
    pub device_link: Vec<u8>,
    pub token_hash: Vec<u8>,
    pub session_expires_at: i64,
}

/// A valid session.
#[derive(Clone, Debug)]
pub struct AuthedSession {
    pub user_id: UserId,
    pub device_id: DeviceId,
    pub device_key: DevicePublicKey,
    pub is_admin: bool,
    pub token_hash: Vec<u8>,
}

impl Store {
    /// Redeems the invite and creates the user, the device and a session, in
    /// one transaction: any failure (taken username, used-up invite) leaves
    /// nothing behind and the invite's use is not spent.
    pub async fn register(
        &self,
        invite_hash: &[u8],
        new: &NewAccount,
        now: i64,
    ) -> Result<(), ApiError> {
        let mut tx = self.begin_write().await?;
        let redemption = invites::redeem(&mut tx, invite_hash, now).await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, display_name, bio, is_admin, created_at) VALUES ($1, $2, $3, '', $4, $5)",
        )
        .bind(new.user_id.0.clone())
        .bind(new.username.clone())
        .bind(new.display_name.clone())
        .bind(flag(redemption.grants_admin))
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(ErrorCode::UsernameTaken.into()),
            other => other?,
        };
        insert_device(
            &mut tx,
            &new.user_id,
            &new.device_id,
            &new.device_name,
            &new.public_key,
            now,
        )
        .await?;
        insert_link(&mut tx, &new.user_id, 0, &new.device_link).await?;
        insert_session(
            &mut tx,
            &new.token_hash,
            &new.user_id,
            &new.device_id,
            new.session_expires_at,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_challenge(
        &self,
        id: &str,
        key: &DevicePublicKey,
        nonce: &[u8],
        expires_at: i64,
    ) -> Result<(), ApiError> {
        sqlx::query("INSERT INTO login_challenges (id, public_key, nonce, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(id.to_string())
            .bind(key.as_bytes().to_vec())
            .bind(nonce.to_vec())
            .bind(expires_at)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes and returns a challenge: each answers at most once, whether
    /// the signature then verifies or not.
    pub async fn take_challenge(
        &self,
        id: &str,
        now: i64,
    ) -> Result<(DevicePublicKey, Vec<u8>), ApiError> {
        let row = sqlx::query(
            "DELETE FROM login_challenges WHERE id = $1 RETURNING public_key, nonce, expires_at",
        )
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?
        .ok_or(ErrorCode::ChallengeInvalid)?;
        let key: Vec<u8> = row.get(0);
        let expires_at: i64 = row.get(2);
        if expires_at <= now {
            return Err(ErrorCode::ChallengeInvalid.into());
        }
        let key: [u8; 32] = key.try_into().map_err(|_| ErrorCode::Internal)?;
        Ok((DevicePublicKey::from_bytes(key), row.get(1)))
    }

    /// The live device with this key and its account.
    pub async fn device_by_key(
        &self,
        key: &DevicePublicKey,
    ) -> Result<Option<(DeviceId, UserId)>, ApiError> {
        let row = sqlx::query(
            "SELECT id, user_id FROM devices WHERE public_key = $1 AND revoked_at IS NULL",
        )
        .bind(key.as_bytes().to_vec())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| (DeviceId(r.get(0)), UserId(r.get(1)))))
    }

    pub async fn create_session(
        &self,
        token_hash: &[u8],
        user: &UserId,
        device: &DeviceId,
        expires_at: i64,
        now: i64,
    ) -> Result<(), ApiError> {
        // Expired sessions (and challenges) are deleted by the retention task.
        let mut tx = self.begin_write().await?;
        insert_session(&mut tx, token_hash, user, device, expires_at, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn authenticate(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<AuthedSession, ApiError> {
        let row = sqlx::query(
            "SELECT s.user_id, s.device_id, s.expires_at, s.revoked_at, d.public_key, d.revoked_at, u.is_admin \
             FROM sessions s JOIN devices d ON d.id = s.device_id JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1",
        )
        .bind(token_hash.to_vec())
        .fetch_optional(self.pool())
        .await?
        .ok_or(ErrorCode::Unauthenticated)?;
        let expires_at: i64 = row.get(2);
        let revoked: Option<i64> = row.get(3);
        let device_revoked: Option<i64> = row.get(5);
        if revoked.is_some() || device_revoked.is_some() {
            return Err(ErrorCode::SessionRevoked.into());
        }
        if expires_at <= now {
            return Err(ErrorCode::SessionExpired.into());
        }
        let key: Vec<u8> = row.get(4);
        let key: [u8; 32] = key.try_into().map_err(|_| ErrorCode::Internal)?;
        Ok(AuthedSession {
            user_id: UserId(row.get(0)),
            device_id: DeviceId(row.get(1)),
            device_key: DevicePublicKey::from_bytes(key),
            is_admin: row.get::<i64, _>(6) == 1,
            token_hash: token_hash.to_vec(),
        })
    }

    pub async fn revoke_session(&self, token_hash: &[u8], now: i64) -> Result<(), ApiError> {
        sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash.to_vec())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn me(&self, user: &UserId) -> Result<Me, ApiError> {
        let row = sqlx::query(
            "SELECT id, username, display_name, bio, is_admin, created_at FROM users WHERE id = $1",
        )
        .bind(user.0.clone())
        .fetch_optional(self.pool())
        .await?
        .ok_or(ErrorCode::UserNotFound)?;
        Ok(Me {
            id: UserId(row.get(0)),
            username: row.get(1),
            display_name: row.get(2),
            bio: row.get(3),
            is_admin: row.get::<i64, _>(4) == 1,
            created_at: row.get(5),
        })
    }

    pub async fn update_profile(
        &self,
        user: &UserId,
        display_name: Option<&str>,
        bio: Option<&str>,
    ) -> Result<(), ApiError> {
        sqlx::query(
            "UPDATE users SET display_name = COALESCE($2, display_name), bio = COALESCE($3, bio) WHERE id = $1",
        )
        .bind(user.0.clone())
        .bind(display_name.map(str::to_string))
        .bind(bio.map(str::to_string))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn list_devices(
        &self,
        user: &UserId,
        current: &DeviceId,
    ) -> Result<Vec<DeviceView>, ApiError> {
        let rows = sqlx::query(
            "SELECT id, name, public_key, created_at FROM devices WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at, id",
        )
        .bind(user.0.clone())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let key: Vec<u8> = r.get(2);
                let key: [u8; 32] = key.try_into().map_err(|_| ErrorCode::Internal)?;
                let id = DeviceId(r.get(0));
                Ok(DeviceView {
                    current: &id == current,
                    id,
                    name: r.get(1),
                    public_key: DevicePublicKey::from_bytes(key),
                    created_at: r.get(3),
                })
            })
            .collect()
    }

    /// The account's device chain, oldest link first (empty for an account
    /// made before chains existed, or no such account).
    pub async fn device_chain(&self, user: &UserId) -> Result<Vec<u8>, ApiError> {
        let rows = sqlx::query("SELECT link FROM device_links WHERE user_id = $1 ORDER BY seq")
            .bind(user.0.clone())
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().flat_map(|r| r.get::<Vec<u8>, _>(0)).collect())
    }

    /// The public key of one of the user's devices (revoked or not).
    pub async fn device_key(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<DevicePublicKey, ApiError> {
        let key: Vec<u8> =
            sqlx::query_scalar("SELECT public_key FROM devices WHERE id = $1 AND user_id = $2")
                .bind(device.0.clone())
                .bind(user.0.clone())
                .fetch_optional(self.pool())
                .await?
                .ok_or(ErrorCode::DeviceNotFound)?;
        let arr: [u8; 32] = key
            .as_slice()
            .try_into()
            .map_err(|_| ApiError::new(ErrorCode::Internal, "stored key is not 32 bytes"))?;
        Ok(DevicePublicKey::from_bytes(arr))
    }

    /// Adds a device and its chain link `seq` (verified by the caller
    /// against the chain it read; a concurrent change makes the insert of
    /// the same `seq` fail with `device_chain_conflict`).
    pub async fn add_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        name: &str,
        key: &DevicePublicKey,
        link: (u32, &[u8]),
        now: i64,
    ) -> Result<(), ApiError> {
        let mut tx = self.begin_write().await?;
        insert_device(&mut tx, user, device, name, key, now).await?;
        insert_link(&mut tx, user, link.0, link.1).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes one of the user's devices and every session it has.
    pub async fn revoke_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        link: Option<(u32, &[u8])>,
        now: i64,
    ) -> Result<(), ApiError> {
        let mut tx = self.begin_write().await?;
        if let Some((seq, bytes)) = link {
            insert_link(&mut tx, user, seq, bytes).await?;
        }
        let changed = sqlx::query("UPDATE devices SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
            .bind(device.0.clone())
            .bind(user.0.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Err(ErrorCode::DeviceNotFound.into());
        }
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM devices WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user.0.clone())
        .fetch_one(&mut *tx)
        .await?;
        if left == 0 {
            return Err(ErrorCode::LastDevice.into());
        }
        sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE device_id = $1 AND revoked_at IS NULL",
        )
        .bind(device.0.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_device(
    tx: &mut super::Tx,
    user: &UserId,
    device: &DeviceId,
    name: &str,
    key: &DevicePublicKey,
    now: i64,
) -> Result<(), ApiError> {
    let inserted = sqlx::query("INSERT INTO devices (id, user_id, public_key, name, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(device.0.clone())
        .bind(user.0.clone())
        .bind(key.as_bytes().to_vec())
        .bind(name.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => Err(ErrorCode::DeviceKeyTaken.into()),
        other => other.map(|_| ()).map_err(Into::into),
    }
}

async fn insert_link(
    tx: &mut super::Tx,
    user: &UserId,
    seq: u32,
    link: &[u8],
) -> Result<(), ApiError> {
    let inserted = sqlx::query("INSERT INTO device_links (user_id, seq, link) VALUES ($1, $2, $3)")
        .bind(user.0.clone())
        .bind(i64::from(seq))
        .bind(link.to_vec())
        .execute(&mut **tx)
        .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => Err(ErrorCode::DeviceChainConflict.into()),
        other => other.map(|_| ()).map_err(Into::into),
    }
}

async fn insert_session(
    tx: &mut super::Tx,
    token_hash: &[u8],
    user: &UserId,
    device: &DeviceId,
    expires_at: i64,
    now: i64,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, device_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash.to_vec())
    .bind(user.0.clone())
    .bind(device.0.clone())
    .bind(now)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
