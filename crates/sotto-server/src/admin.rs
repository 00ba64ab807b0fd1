//! Operator tasks run offline against the database (`sotto admin …`).

use std::time::Duration;

use crate::config::{Clock as _, SystemClock};
use crate::http::accounts::new_invite_code;
use crate::http::extract::secret_hash;
use crate::store::{DatabaseLocation, Store};

/// Creates an invite and returns its code (shown once; only its hash is kept).
pub async fn create_invite(
    location: &DatabaseLocation,
    uses: u32,
    valid_for: Duration,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        (1..=1_000_000).contains(&uses),
        "--uses must be between 1 and 1000000"
    );
    anyhow::ensure!(
        valid_for >= Duration::from_secs(60),
        "--expires must be at least 1 minute"
    );
    let store = Store::open(location).await?;
    let now = SystemClock.now_ms();
    let ttl = i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX / 2);
    let code = new_invite_code();
    store
        .create_invite(
            &secret_hash(&code),
            None,
            uses,
            now.saturating_add(ttl),
            false,
            now,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    store.close().await;
    Ok(code)
}
