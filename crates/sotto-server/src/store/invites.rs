//! Invites: the only way in. The server keeps the SHA-256 of each code, never
//! the code, so a copy of the database does not hand out accounts.

use sotto_proto::{ErrorCode, UserId};
use sqlx::Row as _;

use super::{Store, Tx, flag};
use crate::error::ApiError;

/// What a redeemed invite grants.
#[derive(Debug)]
pub struct InviteRedemption {
    pub grants_admin: bool,
}

impl Store {
    pub async fn create_invite(
        &self,
        code_hash: &[u8],
        created_by: Option<&UserId>,
        uses: u32,
        expires_at: i64,
        grants_admin: bool,
        now: i64,
    ) -> Result<(), ApiError> {
        sqlx::query(
            "INSERT INTO invites (code_hash, created_by, grants_admin, uses_left, uses_total, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $4, $5, $6)",
        )
        .bind(code_hash.to_vec())
        .bind(created_by.map(|u| u.0.clone()))
        .bind(flag(grants_admin))
        .bind(i64::from(uses))
        .bind(now)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// On an empty database, replaces any earlier unused bootstrap invite with
    /// a new one (one use, admin). Returns `false` when accounts exist.
    pub async fn replace_bootstrap_invite(
        &self,
        code_hash: &[u8],
        expires_at: i64,
        now: i64,
    ) -> Result<bool, ApiError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM invites WHERE grants_admin = 1 AND created_by IS NULL")
            .execute(&mut *tx)
            .await?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if users > 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO invites (code_hash, created_by, grants_admin, uses_left, uses_total, created_at, expires_at) \
             VALUES ($1, NULL, 1, 1, 1, $2, $3)",
        )
        .bind(code_hash.to_vec())
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether an invite can still be redeemed (for the invite page).
    pub async fn invite_usable(
        &self,
        code_hash: &[u8],
        now: i64,
    ) -> Result<Result<(), ErrorCode>, ApiError> {
        let row = sqlx::query("SELECT uses_left, expires_at FROM invites WHERE code_hash = $1")
            .bind(code_hash.to_vec())
            .fetch_optional(self.pool())
            .await?;
        Ok(invite_state(row.map(|r| (r.get(0), r.get(1))), now))
    }
}

/// Takes one use of an invite, inside the caller's transaction: the
/// decrement and its condition are one statement, so concurrent redemptions
/// of a single-use code let exactly one through.
pub(super) async fn redeem(
    tx: &mut Tx,
    code_hash: &[u8],
    now: i64,
) -> Result<InviteRedemption, ApiError> {
    let row = sqlx::query(
        "UPDATE invites SET uses_left = uses_left - 1 \
         WHERE code_hash = $1 AND uses_left > 0 AND expires_at > $2 RETURNING grants_admin",
    )
    .bind(code_hash.to_vec())
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = row {
        return Ok(InviteRedemption {
            grants_admin: row.get::<i64, _>(0) == 1,
        });
    }
    let row = sqlx::query("SELECT uses_left, expires_at FROM invites WHERE code_hash = $1")
        .bind(code_hash.to_vec())
        .fetch_optional(&mut **tx)
        .await?;
    match invite_state(row.map(|r| (r.get(0), r.get(1))), now) {
        Err(code) => Err(code.into()),
        // The row changed between the two statements; report it as used up.
        Ok(()) => Err(ErrorCode::InviteUsedUp.into()),
    }
}

fn invite_state(row: Option<(i64, i64)>, now: i64) -> Result<(), ErrorCode> {
    match row {
        None => Err(ErrorCode::InviteNotFound),
        Some((_, expires_at)) if expires_at <= now => Err(ErrorCode::InviteExpired),
        Some((uses_left, _)) if uses_left <= 0 => Err(ErrorCode::InviteUsedUp),
        Some(_) => Ok(()),
    }
}
