-- Access statements (crates/sotto-proto/src/access.rs): a follow signed by
-- the follower's device, and a moderator's allow for a closed room, signed
-- by the moderator's device. The room's key distributor admits listeners
-- only on such statements; the server stores them and hands them over.
-- NULL: made by a client that did not sign (no key is handed out on it).
ALTER TABLE follows ADD COLUMN statement BYTEA;
ALTER TABLE room_access ADD COLUMN granted_by TEXT REFERENCES users(id) ON DELETE CASCADE;
ALTER TABLE room_access ADD COLUMN statement BYTEA;
