//! Rooms, membership, bans and closed-room access.

use std::collections::{HashMap, HashSet};

use sotto_proto::api::UserSummary;
use sotto_proto::channel::{SignedAccess, encode_payload};
use sotto_proto::room::{MemberView, Role, RoomKind, RoomSummary, RoomView};
use sotto_proto::{ErrorCode, RoomId, UserId};
use sqlx::Row as _;

use super::follows::count;
use super::{Store, Tx, flag};
use crate::error::ApiError;
use crate::rooms::{Action, Change, Member, Succession, plan, succession};

/// A participant as stored.
pub type MemberRow = Member;

/// What an action did, for the session channel.
#[derive(Debug)]
pub struct RoomAccess {
    pub view: RoomView,
    /// Someone who left the room through this change, and whether banned.
    pub departed: Option<(UserId, bool)>,
}

/// A join: the room's version after it and, if the user was not in the
/// room, their entry (the newest listener: last in the member list).
#[derive(Debug)]
pub struct Joined {
    pub room: RoomId,
    pub version: i64,
    pub entered: Option<MemberView>,
}

/// One person on a hallway room's stage, with what orders them.
type StageEntry = (Role, i64, UserSummary);

const MEMBER_COLUMNS: &str = "user_id, role, hand_raised, muted, invited_to_stage, joined_seq";
/// A member with what others see of them (`member_view_from_row`), from
/// `room_members m JOIN users u`.
const MEMBER_VIEW_COLUMNS: &str = "m.user_id, m.role, m.hand_raised, m.muted, m.invited_to_stage, \
     m.joined_seq, u.username, u.display_name, m.hand_seq";

impl Store {
    pub async fn create_room(
        &self,
        id: &RoomId,
        creator: &UserId,
        title: &str,
        description: &str,
        kind: RoomKind,
        now: i64,
    ) -> Result<RoomView, ApiError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO rooms (id, title, description, kind, created_by, created_at, version) VALUES ($1, $2, $3, $4, $5, $6, 1)",
        )
        .bind(id.0.clone())
        .bind(title.to_string())
        .bind(description.to_string())
        .bind(kind.as_str())
        .bind(creator.0.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO room_members (room_id, user_id, role, joined_seq, last_seen) VALUES ($1, $2, 'host', 1, $3)",
        )
        .bind(id.0.clone())
        .bind(creator.0.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let view = load_view(&mut tx, id).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// The room as its participants see it, for a member or someone who may enter.
    pub async fn room_for(&self, room: &RoomId, user: &UserId) -> Result<RoomView, ApiError> {
        let mut tx = self.pool().begin().await?;
        let kind = room_kind(&mut tx, room).await?;
        if member(&mut tx, room, user).await?.is_none() {
            may_enter(&mut tx, room, kind, user).await?;
        }
        let view = load_view(&mut tx, room).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// A page of the room's audience in order of joining, after the
    /// listener whose join sequence is `after`; for those who may see the
    /// room (as [`room_for`](Self::room_for)). `prefix`: only listeners
    /// whose username or display name starts with it (ASCII
    /// case-insensitive). Returns the page, how many match, and the cursor
    /// of the next page.
    pub async fn audience_page(
        &self,
        room: &RoomId,
        user: &UserId,
        after: i64,
        limit: u32,
        prefix: Option<&str>,
    ) -> Result<(Vec<MemberView>, u32, Option<i64>), ApiError> {
        let mut tx = self.pool().begin().await?;
        let kind = room_kind(&mut tx, room).await?;
        let me = member(&mut tx, room, user).await?;
        if me.is_none() {
            may_enter(&mut tx, room, kind, user).await?;
        }
        // Hands and stage invitations are for the stage to see (and each
        // listener's own), as on the session channel.
        let sees_hands = me.is_some_and(|m| m.role.on_stage());
        // `%`, `_` and `\` in the search are literal.
        let pattern = prefix.map(|p| {
            let mut escaped = String::with_capacity(p.len() + 1);
            for c in p.to_ascii_lowercase().chars() {
                if matches!(c, '%' | '_' | '\\') {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            escaped.push('%');
            escaped
        });
        // The search's parameter number differs between the two queries.
        let search = |n: u8| {
            if pattern.is_some() {
                format!(
                    " AND (lower(u.username) LIKE ${n} ESCAPE '\\' OR lower(u.display_name) LIKE ${n} ESCAPE '\\')"
                )
            } else {
                String::new()
            }
        };
        let total_sql = format!(
            "SELECT COUNT(*) FROM room_members m JOIN users u ON u.id = m.user_id \
             WHERE m.room_id = $1 AND m.role = 'listener'{}",
            search(2)
        );
        // Only fixed text and parameter numbers are formatted in; the search
        // itself is a bound parameter.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(total_sql)).bind(room.0.clone());
        if let Some(p) = &pattern {
            q = q.bind(p.clone());
        }
        let total: i64 = q.fetch_one(&mut *tx).await?.get(0);
        let limit_at = if pattern.is_some() { "$4" } else { "$3" };
        let page_sql = format!(
            "SELECT {MEMBER_VIEW_COLUMNS} FROM room_members m JOIN users u ON u.id = m.user_id \
             WHERE m.room_id = $1 AND m.role = 'listener' AND m.joined_seq > $2{} \
             ORDER BY m.joined_seq LIMIT {limit_at}",
            search(3)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(page_sql))
            .bind(room.0.clone())
            .bind(after);
        if let Some(p) = &pattern {
            q = q.bind(p.clone());
        }
        let rows = q.bind(i64::from(limit) + 1).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let more = rows.len() > limit as usize;
        let mut members = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last = None;
        for r in rows.iter().take(limit as usize) {
            let (seq, m) = member_view_from_row(r)?;
            last = Some(seq);
            members.push(if sees_hands || &m.user_id == user {
                m
            } else {
                m.as_audience_sees()
            });
        }
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        Ok((members, total, last.filter(|_| more)))
    }

    /// Whether `user` is in the room now (for subscribing to its state).
    pub async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool, ApiError> {
        if !room.is_well_formed() {
            return Ok(false);
        }
        let mut conn = self.pool().acquire().await?;
        let row = sqlx::query("SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room.0.clone())
            .bind(user.0.clone())
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row.is_some())
    }

    /// Enters `user` into the room (or refreshes their presence if they
    /// are in it). Reads one member, not the room: the caller applies the
    /// [`Joined`] change to the room's last published view
    /// ([`crate::bus::Bus::publish_join`]), or reads the room
    /// ([`Self::load_room`]) if it has none to apply it to.
    pub async fn join_room(
        &self,
        room: &RoomId,
        user: &UserId,
        now: i64,
    ) -> Result<Joined, ApiError> {
        let mut tx = self.begin_write().await?;
        let (version, kind) = lock_live_room(&mut tx, room).await?;
        let banned = sqlx::query("SELECT 1 FROM room_bans WHERE room_id = $1 AND user_id = $2")
            .bind(room.0.clone())
            .bind(user.0.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if banned.is_some() {
            return Err(ErrorCode::BannedFromRoom.into());
        }
        let entered = if member(&mut tx, room, user).await?.is_none() {
            may_enter(&mut tx, room, kind, user).await?;
            sqlx::query(
                "INSERT INTO room_members (room_id, user_id, role, joined_seq, last_seen) VALUES ($1, $2, 'listener', $3, $4)",
            )
            .bind(room.0.clone())
            .bind(user.0.clone())
            .bind(version)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let sql = format!(
                "SELECT {MEMBER_VIEW_COLUMNS} FROM room_members m JOIN users u ON u.id = m.user_id \
                 WHERE m.room_id = $1 AND m.user_id = $2"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(room.0.clone())
                .bind(user.0.clone())
                .fetch_one(&mut *tx)
                .await?;
            Some(member_view_from_row(&row)?.1)
        } else {
            touch(&mut tx, room, user, now).await?;
            None
        };
        tx.commit().await?;
        Ok(Joined {
            room: room.clone(),
            version,
            entered,
        })
    }

    /// The whole room as it stands, for the server itself (no access check).
    pub async fn load_room(&self, room: &RoomId) -> Result<RoomView, ApiError> {
        let mut tx = self.pool().begin().await?;
        let view = load_view(&mut tx, room).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Applies a participant's action under the rules of [`crate::rooms`].
    pub async fn act(
        &self,
        room: &RoomId,
        actor: &UserId,
        action: Action,
        target: Option<&UserId>,
        now: i64,
    ) -> Result<RoomAccess, ApiError> {
        let mut tx = self.begin_write().await?;
        lock_live_room(&mut tx, room).await?;
        let actor_row = member(&mut tx, room, actor)
            .await?
            .ok_or(ErrorCode::NotInRoom)?;
        touch(&mut tx, room, actor, now).await?;
        let target_row = match target {
            Some(t) if t != actor => {
                if !t.is_well_formed() {
                    return Err(ErrorCode::TargetNotInRoom.into());
                }
                member(&mut tx, room, t)
                    .await?
                    .ok_or(ErrorCode::TargetNotInRoom)?
            }
            _ => actor_row.clone(),
        };
        let mut departed = None;
        match plan(action, &actor_row, &target_row)? {
            Change::Update(m) => write_member(&mut tx, room, &m).await?,
            Change::Delete { user_id, ban } => {
                sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
                    .bind(room.0.clone())
                    .bind(user_id.0.clone())
                    .execute(&mut *tx)
                    .await?;
                if ban {
                    sqlx::query(
                        "INSERT INTO room_bans (room_id, user_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(room.0.clone())
                    .bind(user_id.0.clone())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                departed = Some((user_id, ban));
            }
            Change::EndRoom => end_room(&mut tx, room, now).await?,
        }
        let stage: Vec<Member> = members(&mut tx, room)
            .await?
            .into_iter()
            .filter(|m| m.role.on_stage())
            .collect();
        match succession(&stage) {
            Succession::Settled => {}
            Succession::Promote(user) => {
                sqlx::query(
                    "UPDATE room_members SET role = 'host' WHERE room_id = $1 AND user_id = $2",
                )
                .bind(room.0.clone())
                .bind(user.0)
                .execute(&mut *tx)
                .await?;
            }
            Succession::End => end_room(&mut tx, room, now).await?,
        }
        let view = load_view(&mut tx, room).await?;
        tx.commit().await?;
        Ok(RoomAccess { view, departed })
    }

    /// An open session channel keeps its user present in the rooms it follows.
    pub async fn touch_presence(
        &self,
        rooms: &[RoomId],
        user: &UserId,
        now: i64,
    ) -> Result<(), ApiError> {
        for room in rooms {
            sqlx::query(
                "UPDATE room_members SET last_seen = $3 WHERE room_id = $1 AND user_id = $2",
            )
            .bind(room.0.clone())
            .bind(user.0.clone())
            .bind(now)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// Participants of live rooms not seen since `before`.
    pub async fn absent_members(&self, before: i64) -> Result<Vec<(RoomId, UserId)>, ApiError> {
        let rows = sqlx::query(
            "SELECT m.room_id, m.user_id FROM room_members m JOIN rooms r ON r.id = m.room_id \
             WHERE r.ended_at IS NULL AND m.last_seen < $1 ORDER BY m.room_id, m.joined_seq",
        )
        .bind(before)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| (RoomId(r.get(0)), UserId(r.get(1))))
            .collect())
    }

    /// Lets a user into a closed room (moderators only), with the
    /// moderator's signed allow statement (checked by the caller).
    pub async fn grant_access(
        &self,
        room: &RoomId,
        actor: &UserId,
        target: &UserId,
        statement: Option<&[u8]>,
        now: i64,
    ) -> Result<(), ApiError> {
        let mut tx = self.begin_write().await?;
        lock_live_room(&mut tx, room).await?;
        let actor_row = member(&mut tx, room, actor)
            .await?
            .ok_or(ErrorCode::NotInRoom)?;
        if !actor_row.role.moderates() {
            return Err(ErrorCode::NotPermitted.into());
        }
        sqlx::query(
            "INSERT INTO room_access (room_id, user_id, created_at, granted_by, statement) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (room_id, user_id) DO UPDATE SET granted_by = COALESCE(excluded.granted_by, room_access.granted_by), \
             statement = COALESCE(excluded.statement, room_access.statement)",
        )
        .bind(room.0.clone())
        .bind(target.0.clone())
        .bind(now)
        .bind(statement.map(|_| actor.0.clone()))
        .bind(statement.map(<[u8]>::to_vec))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The signed statements that let `user` listen to `room`, for the
    /// room's key distributor: a moderator's allow, and the follows of the
    /// room's current host and moderators — each with its signer's chain.
    pub async fn access_grants(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Vec<SignedAccess>, ApiError> {
        let rows = sqlx::query(
            "SELECT granted_by, statement FROM room_access \
               WHERE room_id = $1 AND user_id = $2 AND statement IS NOT NULL AND granted_by IS NOT NULL \
             UNION ALL \
             SELECT f.follower_id, f.statement FROM follows f JOIN room_members m ON m.user_id = f.follower_id \
               WHERE m.room_id = $1 AND m.role IN ('host', 'moderator') AND f.followee_id = $2 AND f.statement IS NOT NULL",
        )
        .bind(room.0.clone())
        .bind(user.0.clone())
        .fetch_all(self.pool())
        .await?;
        let mut grants = Vec::with_capacity(rows.len());
        for row in rows {
            let signer = UserId(row.get(0));
            let statement: Vec<u8> = row.get(1);
            let chain = self.device_chain(&signer).await?;
            grants.push(SignedAccess {
                statement: encode_payload(&statement),
                signer,
                chain: encode_payload(&chain),
            });
        }
        Ok(grants)
    }

    /// The live rooms `user` may enter: rooms with people they follow on
    /// stage first, then by size.
    pub async fn hallway(&self, user: &UserId) -> Result<Vec<RoomSummary>, ApiError> {
        let rows = sqlx::query(
            "SELECT r.id, r.title, r.kind, u.id, u.username, u.display_name, m.role, m.joined_seq, \
               (SELECT COUNT(*) FROM room_members l WHERE l.room_id = r.id AND l.role = 'listener'), \
               (SELECT COUNT(*) FROM follows f WHERE f.follower_id = $1 AND f.followee_id = m.user_id), \
               (SELECT COUNT(*) FROM follows f WHERE f.follower_id = m.user_id AND f.followee_id = $1 \
                  AND m.role IN ('host', 'moderator')) \
             FROM rooms r JOIN room_members m ON m.room_id = r.id AND m.role <> 'listener' \
             JOIN users u ON u.id = m.user_id \
             WHERE r.ended_at IS NULL ORDER BY r.created_at DESC, r.id LIMIT 5000",
        )
        .bind(user.0.clone())
        .fetch_all(self.pool())
        .await?;
        let ids = |sql: &'static str| async move {
            let rows = sqlx::query(sql)
                .bind(user.0.clone())
                .fetch_all(self.pool())
                .await?;
            Ok::<HashSet<String>, ApiError>(rows.iter().map(|r| r.get::<String, _>(0)).collect())
        };
        let granted = ids("SELECT room_id FROM room_access WHERE user_id = $1").await?;
        let joined = ids("SELECT room_id FROM room_members WHERE user_id = $1").await?;
        let banned = ids("SELECT room_id FROM room_bans WHERE user_id = $1").await?;

        let mut order: Vec<String> = Vec::new();
        // Social rooms whose host or a moderator follows the user.
        let mut followed_by_moderators: HashSet<String> = HashSet::new();
        let mut rooms: HashMap<String, (RoomSummary, Vec<StageEntry>)> = HashMap::new();
        for row in &rows {
            let id: String = row.get(0);
            let kind = RoomKind::parse(&row.get::<String, _>(2)).ok_or(ErrorCode::Internal)?;
            let entry = rooms.entry(id.clone()).or_insert_with(|| {
                order.push(id.clone());
                (
                    RoomSummary {
                        id: RoomId(id.clone()),
                        title: row.get(1),
                        kind,
                        stage: Vec::new(),
                        listener_count: count(row.get(8)),
                        followed_on_stage: 0,
                    },
                    Vec::new(),
                )
            });
            let role = Role::parse(&row.get::<String, _>(6)).ok_or(ErrorCode::Internal)?;
            if row.get::<i64, _>(9) > 0 {
                entry.0.followed_on_stage += 1;
            }
            if row.get::<i64, _>(10) > 0 {
                followed_by_moderators.insert(id.clone());
            }
            entry.1.push((
                role,
                row.get(7),
                UserSummary {
                    id: UserId(row.get(3)),
                    username: row.get(4),
                    display_name: row.get(5),
                },
            ));
        }
        let mut out: Vec<RoomSummary> = order
            .into_iter()
            .filter_map(|id| rooms.remove(&id))
            .filter(|(room, _)| {
                let id = &room.id.0;
                !banned.contains(id)
                    && (joined.contains(id)
                        || granted.contains(id)
                        || match room.kind {
                            RoomKind::Open => true,
                            RoomKind::Social => followed_by_moderators.contains(id),
                            RoomKind::Closed => false,
                        })
            })
            .map(|(mut room, mut stage)| {
                stage.sort_by_key(|(role, seq, _)| (std::cmp::Reverse(*role), *seq));
                room.stage = stage.into_iter().map(|(_, _, u)| u).collect();
                room
            })
            .collect();
        // Stable sort keeps newest-first among equals.
        out.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.followed_on_stage),
                std::cmp::Reverse(r.stage.len() as u32 + r.listener_count),
            )
        });
        Ok(out)
    }
}

/// Marks a participant as present now.
async fn touch(tx: &mut Tx, room: &RoomId, user: &UserId, now: i64) -> Result<(), ApiError> {
    sqlx::query("UPDATE room_members SET last_seen = $3 WHERE room_id = $1 AND user_id = $2")
        .bind(room.0.clone())
        .bind(user.0.clone())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Bumps the room's version, which also serializes every change to one room
/// (row lock on PostgreSQL; the write lock on SQLite). Fails for a missing
/// or ended room. Returns the new version and the kind.
async fn lock_live_room(tx: &mut Tx, room: &RoomId) -> Result<(i64, RoomKind), ApiError> {
    if !room.is_well_formed() {
        return Err(ErrorCode::RoomNotFound.into());
    }
    let row = sqlx::query(
        "UPDATE rooms SET version = version + 1 WHERE id = $1 AND ended_at IS NULL RETURNING version, kind",
    )
    .bind(room.0.clone())
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(row) => {
            let kind = RoomKind::parse(&row.get::<String, _>(1)).ok_or(ErrorCode::Internal)?;
            Ok((row.get(0), kind))
        }
        None => {
            room_kind(tx, room).await?;
            Err(ErrorCode::RoomEnded.into())
        }
    }
}

async fn room_kind(tx: &mut Tx, room: &RoomId) -> Result<RoomKind, ApiError> {
    if !room.is_well_formed() {
        return Err(ErrorCode::RoomNotFound.into());
    }
    let kind: String = sqlx::query_scalar("SELECT kind FROM rooms WHERE id = $1")
        .bind(room.0.clone())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(ErrorCode::RoomNotFound)?;
    Ok(RoomKind::parse(&kind).ok_or(ErrorCode::Internal)?)
}

/// Whether a non-member may enter by the room's kind.
async fn may_enter(
    tx: &mut Tx,
    room: &RoomId,
    kind: RoomKind,
    user: &UserId,
) -> Result<(), ApiError> {
    let granted = sqlx::query("SELECT 1 FROM room_access WHERE room_id = $1 AND user_id = $2")
        .bind(room.0.clone())
        .bind(user.0.clone())
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    let allowed = granted
        || match kind {
            RoomKind::Open => true,
            RoomKind::Closed => false,
            // A social room is for people its host or moderators follow
            // (a follow is one-sided: following someone on stage would
            // let anyone in).
            RoomKind::Social => {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM room_members m JOIN follows f ON f.follower_id = m.user_id \
                     WHERE m.room_id = $1 AND m.role IN ('host', 'moderator') AND f.followee_id = $2",
                )
                .bind(room.0.clone())
                .bind(user.0.clone())
                .fetch_one(&mut **tx)
                .await?;
                n > 0
            }
        };
    if allowed {
        Ok(())
    } else {
        Err(ErrorCode::RoomAccessDenied.into())
    }
}

async fn end_room(tx: &mut Tx, room: &RoomId, now: i64) -> Result<(), ApiError> {
    sqlx::query("UPDATE rooms SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL")
        .bind(room.0.clone())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn member(tx: &mut Tx, room: &RoomId, user: &UserId) -> Result<Option<Member>, ApiError> {
    let sql =
        format!("SELECT {MEMBER_COLUMNS} FROM room_members WHERE room_id = $1 AND user_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(room.0.clone())
        .bind(user.0.clone())
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(member_from_row).transpose()
}

async fn members(tx: &mut Tx, room: &RoomId) -> Result<Vec<Member>, ApiError> {
    let sql = format!("SELECT {MEMBER_COLUMNS} FROM room_members WHERE room_id = $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(room.0.clone())
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(member_from_row).collect()
}

fn member_from_row(row: &sqlx::any::AnyRow) -> Result<Member, ApiError> {
    Ok(Member {
        user_id: UserId(row.get(0)),
        role: Role::parse(&row.get::<String, _>(1)).ok_or(ErrorCode::Internal)?,
        hand_raised: row.get::<i64, _>(2) == 1,
        muted: row.get::<i64, _>(3) == 1,
        invited_to_stage: row.get::<i64, _>(4) == 1,
        joined_seq: row.get(5),
    })
}

async fn write_member(tx: &mut Tx, room: &RoomId, m: &Member) -> Result<(), ApiError> {
    sqlx::query(
        // A hand going up takes its place in the queue: the room's version
        // (bumped by this change's transaction); it keeps it while up.
        "UPDATE room_members SET role = $3, hand_raised = $4, muted = $5, invited_to_stage = $6, \
         hand_seq = CASE WHEN $4 = 1 THEN COALESCE(hand_seq, (SELECT version FROM rooms WHERE id = $1)) ELSE NULL END \
         WHERE room_id = $1 AND user_id = $2",
    )
    .bind(room.0.clone())
    .bind(m.user_id.0.clone())
    .bind(m.role.as_str())
    .bind(flag(m.hand_raised))
    .bind(flag(m.muted))
    .bind(flag(m.invited_to_stage))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A member as participants see it, from a row of [`MEMBER_VIEW_COLUMNS`],
/// with its join sequence.
fn member_view_from_row(r: &sqlx::any::AnyRow) -> Result<(i64, MemberView), ApiError> {
    let m = member_from_row(r)?;
    Ok((
        m.joined_seq,
        MemberView {
            user_id: m.user_id,
            username: r.get(6),
            display_name: r.get(7),
            role: m.role,
            hand_raised: m.hand_raised,
            muted: m.muted,
            invited_to_stage: m.invited_to_stage,
            hand_order: r.get(8),
        },
    ))
}

async fn load_view(tx: &mut Tx, room: &RoomId) -> Result<RoomView, ApiError> {
    let row = sqlx::query(
        "SELECT id, title, description, kind, ended_at, version FROM rooms WHERE id = $1",
    )
    .bind(room.0.clone())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ErrorCode::RoomNotFound)?;
    let sql = format!(
        "SELECT {MEMBER_VIEW_COLUMNS} FROM room_members m JOIN users u ON u.id = m.user_id \
         WHERE m.room_id = $1"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(room.0.clone())
        .fetch_all(&mut **tx)
        .await?;
    let mut members = rows
        .iter()
        .map(member_view_from_row)
        .collect::<Result<Vec<_>, ApiError>>()?;
    members.sort_by_key(|(seq, m)| (std::cmp::Reverse(m.role), *seq));
    let audience = members
        .iter()
        .filter(|(_, m)| m.role == sotto_proto::room::Role::Listener)
        .count();
    Ok(RoomView {
        id: RoomId(row.get(0)),
        title: row.get(1),
        description: row.get(2),
        kind: RoomKind::parse(&row.get::<String, _>(3)).ok_or(ErrorCode::Internal)?,
        ended: row.get::<Option<i64>, _>(4).is_some(),
        version: row.get(5),
        members: members.into_iter().map(|(_, m)| m).collect(),
        audience_count: u32::try_from(audience).unwrap_or(u32::MAX),
    })
}
