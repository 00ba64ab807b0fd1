//! Profiles and the follow graph.

use sotto_proto::api::{Profile, UserSummary};
use sotto_proto::{ErrorCode, UserId};
use sqlx::Row as _;

use super::Store;
use crate::error::ApiError;

impl Store {
    pub async fn user_by_username(&self, username: &str) -> Result<UserSummary, ApiError> {
        let row = sqlx::query("SELECT id, username, display_name FROM users WHERE username = $1")
            .bind(username.to_string())
            .fetch_optional(self.pool())
            .await?
            .ok_or(ErrorCode::UserNotFound)?;
        Ok(summary(&row))
    }

    pub async fn profile(&self, viewer: &UserId, username: &str) -> Result<Profile, ApiError> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.display_name, u.bio, \
               (SELECT COUNT(*) FROM follows f WHERE f.followee_id = u.id), \
               (SELECT COUNT(*) FROM follows f WHERE f.follower_id = u.id), \
               (SELECT COUNT(*) FROM follows f WHERE f.follower_id = $2 AND f.followee_id = u.id) \
             FROM users u WHERE u.username = $1",
        )
        .bind(username.to_string())
        .bind(viewer.0.clone())
        .fetch_optional(self.pool())
        .await?
        .ok_or(ErrorCode::UserNotFound)?;
        let id = UserId(row.get(0));
        let chain = self.device_chain(&id).await?;
        Ok(Profile {
            username: row.get(1),
            display_name: row.get(2),
            bio: row.get(3),
            followers: count(row.get(4)),
            following: count(row.get(5)),
            followed_by_you: row.get::<i64, _>(6) > 0,
            device_chain: sotto_proto::keys::encode_b64(&chain),
            id,
        })
    }

    /// Following someone twice is the same as once (a signed follow
    /// statement, checked by the caller, replaces an unsigned one).
    pub async fn follow(
        &self,
        follower: &UserId,
        followee: &UserId,
        statement: Option<&[u8]>,
        now: i64,
    ) -> Result<(), ApiError> {
        if followee == follower {
            return Err(ErrorCode::CannotFollowSelf.into());
        }
        sqlx::query(
            "INSERT INTO follows (follower_id, followee_id, created_at, statement) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (follower_id, followee_id) DO UPDATE SET statement = COALESCE(excluded.statement, follows.statement)",
        )
        .bind(follower.0.clone())
        .bind(followee.0.clone())
        .bind(now)
        .bind(statement.map(<[u8]>::to_vec))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn unfollow(&self, follower: &UserId, username: &str) -> Result<(), ApiError> {
        let followee = self.user_by_username(username).await?;
        sqlx::query("DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2")
            .bind(follower.0.clone())
            .bind(followee.id.0)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn followers(&self, username: &str) -> Result<Vec<UserSummary>, ApiError> {
        self.follow_list(username, "SELECT u.id, u.username, u.display_name FROM follows f JOIN users u ON u.id = f.follower_id WHERE f.followee_id = $1 ORDER BY f.created_at DESC, u.username LIMIT 1000").await
    }

    pub async fn following(&self, username: &str) -> Result<Vec<UserSummary>, ApiError> {
        self.follow_list(username, "SELECT u.id, u.username, u.display_name FROM follows f JOIN users u ON u.id = f.followee_id WHERE f.follower_id = $1 ORDER BY f.created_at DESC, u.username LIMIT 1000").await
    }

    async fn follow_list(
        &self,
        username: &str,
        sql: &'static str,
    ) -> Result<Vec<UserSummary>, ApiError> {
        let user = self.user_by_username(username).await?;
        let rows = sqlx::query(sql)
            .bind(user.id.0)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(summary).collect())
    }
}

pub(super) fn summary(row: &sqlx::any::AnyRow) -> UserSummary {
    UserSummary {
        id: UserId(row.get(0)),
        username: row.get(1),
        display_name: row.get(2),
    }
}

pub(super) fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
