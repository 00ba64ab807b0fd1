-- Presence: when a participant was last seen (joined, acted, or an open
-- session channel subscribed to the room). Absent participants are removed.
ALTER TABLE room_members ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0;
