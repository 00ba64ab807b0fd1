-- The E2EE relay's public state of each live room's stage group, so that a
-- restarted server resumes the same group (crates/sotto-server/src/e2ee_relay.rs).
-- All of it is public MLS state or signed public data: the latest GroupInfo
-- and ratchet tree the group's members uploaded, the host's signed binding of
-- the group to the room, and which account each tree key belongs to. Nothing
-- here decrypts anything. Deleted with the room.
CREATE TABLE stage_groups (
    room_id TEXT PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    group_info BYTEA NOT NULL,
    ratchet_tree BYTEA NOT NULL,
    binding TEXT NOT NULL,
    key_owners TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
