//! What the privacy promises need from storage: a user's export, the hard
//! deletion of an account, and retention (expired sessions, challenges and
//! ended rooms are deleted).

use sotto_proto::api::{
    AccountExport, InviteRecord, MembershipRecord, RoomMark, RoomRecord, SessionRecord,
};
use sotto_proto::room::{Role, RoomKind};
use sotto_proto::{DeviceId, ErrorCode, RoomId, UserId};
use sqlx::Row as _;

use super::follows::count;
use super::{Store, Tx};
use crate::error::ApiError;
use crate::rooms::Action;

/// What one retention pass deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub sessions: u64,
    pub challenges: u64,
    pub invites: u64,
    pub rooms: u64,
}

impl Store {
    /// Every value in every table of ours, as bytes (text as UTF-8, integers
    /// in decimal, blobs raw), with its table and column: what an audit
    /// searches for identifiers and secrets.
    pub async fn all_values(&self) -> Result<Vec<(String, String, Vec<u8>)>, ApiError> {
        let columns = self.schema_columns().await?;
        let mut tables: Vec<&String> = columns.iter().map(|(t, _)| t).collect();
        tables.dedup();
        let mut out = Vec::new();
        for table in tables {
            let names: Vec<&String> = columns
                .iter()
                .filter(|(t, _)| t == table)
                .map(|(_, c)| c)
                .collect();
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
                .fetch_all(self.pool())
                .await?;
            for row in rows {
                for (i, column) in names.iter().enumerate() {
                    let value: Vec<u8> = if let Ok(Some(s)) = row.try_get::<Option<String>, _>(i) {
                        s.into_bytes()
                    } else if let Ok(Some(n)) = row.try_get::<Option<i64>, _>(i) {
                        n.to_string().into_bytes()
                    } else if let Ok(Some(b)) = row.try_get::<Option<Vec<u8>>, _>(i) {
                        b
                    } else {
                        continue;
                    };
                    out.push((table.clone(), (*column).clone(), value));
                }
            }
        }
        Ok(out)
    }

    pub async fn export(
        &self,
        user: &UserId,
        device: &DeviceId,
        now: i64,
    ) -> Result<AccountExport, ApiError> {
        let account = self.me(user).await?;
        let devices = self.list_devices(user, device).await?;
        let uid = || user.0.clone();
        let pool = self.pool();
        let sessions = sqlx::query(
            "SELECT device_id, created_at, expires_at, revoked_at FROM sessions WHERE user_id = $1 ORDER BY created_at",
        )
        .bind(uid())
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| SessionRecord {
            device_id: DeviceId(r.get(0)),
            created_at: r.get(1),
            expires_at: r.get(2),
            revoked_at: r.get(3),
        })
        .collect();
        let invites_created = sqlx::query(
            "SELECT uses_total, uses_left, created_at, expires_at FROM invites WHERE created_by = $1 ORDER BY created_at",
        )
        .bind(uid())
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| InviteRecord {
            uses_total: count(r.get(0)),
            uses_left: count(r.get(1)),
            created_at: r.get(2),
            expires_at: r.get(3),
        })
        .collect();
        let rooms_created = sqlx::query(
            "SELECT id, title, description, kind, created_at, ended_at FROM rooms WHERE created_by = $1 ORDER BY created_at",
        )
        .bind(uid())
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(RoomRecord {
                id: RoomId(r.get(0)),
                title: r.get(1),
                description: r.get(2),
                kind: RoomKind::parse(&r.get::<String, _>(3)).ok_or(ErrorCode::Internal)?,
                created_at: r.get(4),
                ended_at: r.get(5),
            })
        })
        .collect::<Result<_, ApiError>>()?;
        let room_memberships = sqlx::query(
            "SELECT room_id, role, hand_raised, muted, invited_to_stage FROM room_members WHERE user_id = $1 ORDER BY room_id",
        )
        .bind(uid())
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(MembershipRecord {
                room_id: RoomId(r.get(0)),
                role: Role::parse(&r.get::<String, _>(1)).ok_or(ErrorCode::Internal)?,
                hand_raised: r.get::<i64, _>(2) == 1,
                muted: r.get::<i64, _>(3) == 1,
                invited_to_stage: r.get::<i64, _>(4) == 1,
            })
        })
        .collect::<Result<_, ApiError>>()?;
        let marks = |sql: &'static str| async move {
            let rows = sqlx::query(sql)
                .bind(user.0.clone())
                .fetch_all(pool)
                .await?;
            Ok::<Vec<RoomMark>, ApiError>(
                rows.iter()
                    .map(|r| RoomMark {
                        room_id: RoomId(r.get(0)),
                        created_at: r.get(1),
                    })
                    .collect(),
            )
        };
        Ok(AccountExport {
            exported_at: now,
            following: self.following(&account.username).await?,
            followers: self.followers(&account.username).await?,
            account,
            devices,
            sessions,
            invites_created,
            rooms_created,
            room_memberships,
            room_bans: marks("SELECT room_id, created_at FROM room_bans WHERE user_id = $1 ORDER BY created_at").await?,
            room_access: marks("SELECT room_id, created_at FROM room_access WHERE user_id = $1 ORDER BY created_at")
                .await?,
        })
    }

    /// Leaves every room (so hosts are succeeded and empty stages end), then
    /// deletes the account and every row about it. Rooms and invites the user
    /// created stay for the others in them, with the creator forgotten.
    /// Returns the rooms whose state changed.
    pub async fn delete_account(
        &self,
        user: &UserId,
        now: i64,
    ) -> Result<Vec<super::RoomAccess>, ApiError> {
        let rooms: Vec<String> = sqlx::query_scalar(
            "SELECT m.room_id FROM room_members m JOIN rooms r ON r.id = m.room_id WHERE m.user_id = $1 AND r.ended_at IS NULL",
        )
        .bind(user.0.clone())
        .fetch_all(self.pool())
        .await?;
        let mut changed = Vec::new();
        for room in rooms {
            match self
                .act(&RoomId(room), user, Action::Leave, None, now)
                .await
            {
                Ok(access) => changed.push(access),
                // Ended or left meanwhile: nothing to hand over.
                Err(e) if matches!(e.code, ErrorCode::RoomEnded | ErrorCode::NotInRoom) => {}
                Err(e) => return Err(e),
            }
        }
        let mut tx = self.begin_write().await?;
        for sql in [
            "DELETE FROM sessions WHERE user_id = $1",
            "DELETE FROM devices WHERE user_id = $1",
            "DELETE FROM follows WHERE follower_id = $1 OR followee_id = $1",
            "DELETE FROM room_members WHERE user_id = $1",
            "DELETE FROM room_bans WHERE user_id = $1",
            "DELETE FROM room_access WHERE user_id = $1",
            "UPDATE invites SET created_by = NULL WHERE created_by = $1",
            "UPDATE rooms SET created_by = NULL WHERE created_by = $1",
        ] {
            exec(&mut tx, sql, user).await?;
        }
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user.0.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(ErrorCode::UserNotFound.into());
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Deletes what has outlived its purpose: expired or revoked sessions,
    /// expired challenges and invites (a used-up invite stays until it expires,
    /// so it keeps answering "used up"), and rooms that ended more than
    /// `ended_room_retention_ms` ago (with their rosters, bans and access lists).
    pub async fn purge_expired(
        &self,
        now: i64,
        ended_room_retention_ms: i64,
    ) -> Result<Purged, ApiError> {
        let mut tx = self.begin_write().await?;
        let mut run = async |sql: &'static str, t: i64| -> Result<u64, ApiError> {
            Ok(sqlx::query(sql)
                .bind(t)
                .execute(&mut *tx)
                .await?
                .rows_affected())
        };
        let sessions = run(
            "DELETE FROM sessions WHERE expires_at <= $1 OR revoked_at IS NOT NULL",
            now,
        )
        .await?;
        let challenges = run("DELETE FROM login_challenges WHERE expires_at <= $1", now).await?;
        let invites = run("DELETE FROM invites WHERE expires_at <= $1", now).await?;
        let cutoff = now.saturating_sub(ended_room_retention_ms);
        for sql in [
            "DELETE FROM room_members WHERE room_id IN (SELECT id FROM rooms WHERE ended_at IS NOT NULL AND ended_at <= $1)",
            "DELETE FROM room_bans WHERE room_id IN (SELECT id FROM rooms WHERE ended_at IS NOT NULL AND ended_at <= $1)",
            "DELETE FROM room_access WHERE room_id IN (SELECT id FROM rooms WHERE ended_at IS NOT NULL AND ended_at <= $1)",
        ] {
            run(sql, cutoff).await?;
        }
        let rooms = run(
            "DELETE FROM rooms WHERE ended_at IS NOT NULL AND ended_at <= $1",
            cutoff,
        )
        .await?;
        tx.commit().await?;
        Ok(Purged {
            sessions,
            challenges,
            invites,
            rooms,
        })
    }
}

async fn exec(tx: &mut Tx, sql: &'static str, user: &UserId) -> Result<(), ApiError> {
    sqlx::query(sql)
        .bind(user.0.clone())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
