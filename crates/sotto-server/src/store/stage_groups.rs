//! The E2EE relay's public state of live rooms' stage groups (migration
//! `0005_stage_groups`), so that a restarted server resumes the same groups.

use sqlx::Row as _;

use sotto_proto::RoomId;

use super::Store;
use crate::error::ApiError;

/// One room's stage group as the relay last saw it (public state only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageGroupRow {
    pub room_id: RoomId,
    /// The latest GroupInfo (an `MlsMessage`), as its member uploaded it.
    pub group_info: Vec<u8>,
    /// The ratchet tree of the same epoch (TLS-encoded).
    pub ratchet_tree: Vec<u8>,
    /// The host's signed binding of the group to the room (JSON of
    /// `sotto_proto::channel::GroupBinding`).
    pub binding: String,
    /// Which account each device key in the tree belongs to (JSON).
    pub key_owners: String,
}

impl Store {
    /// Saves (or replaces) a room's stage group state.
    pub async fn save_stage_group(&self, row: &StageGroupRow, now: i64) -> Result<(), ApiError> {
        sqlx::query(
            "INSERT INTO stage_groups (room_id, group_info, ratchet_tree, binding, key_owners, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM rooms WHERE id = $1 AND ended_at IS NULL) \
             ON CONFLICT (room_id) DO UPDATE SET group_info = excluded.group_info, \
             ratchet_tree = excluded.ratchet_tree, binding = excluded.binding, \
             key_owners = excluded.key_owners, updated_at = excluded.updated_at",
        )
        .bind(row.room_id.0.clone())
        .bind(row.group_info.clone())
        .bind(row.ratchet_tree.clone())
        .bind(row.binding.clone())
        .bind(row.key_owners.clone())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets a room's stage group (the room ended).
    pub async fn delete_stage_group(&self, room: &RoomId) -> Result<(), ApiError> {
        sqlx::query("DELETE FROM stage_groups WHERE room_id = $1")
            .bind(room.0.clone())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The stage groups of every live room.
    pub async fn live_stage_groups(&self) -> Result<Vec<StageGroupRow>, ApiError> {
        let rows = sqlx::query(
            "SELECT g.room_id, g.group_info, g.ratchet_tree, g.binding, g.key_owners \
             FROM stage_groups g JOIN rooms r ON r.id = g.room_id WHERE r.ended_at IS NULL",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| StageGroupRow {
                room_id: RoomId(r.get(0)),
                group_info: r.get(1),
                ratchet_tree: r.get(2),
                binding: r.get(3),
                key_owners: r.get(4),
            })
            .collect())
    }
}
