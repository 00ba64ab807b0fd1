-- The hand queue: the room's version when a participant raised their hand
-- (NULL while it is down). Moderators see hands in this order.
ALTER TABLE room_members ADD COLUMN hand_seq INTEGER;
