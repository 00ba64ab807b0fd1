-- Device chains: each account's devices as a hash chain of links signed by
-- its own devices (crates/sotto-proto/src/chain.rs). Clients verify them;
-- the server only stores and serves them.
CREATE TABLE device_links (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    link BLOB NOT NULL,
    PRIMARY KEY (user_id, seq)
);
