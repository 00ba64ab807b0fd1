//! Test tooling, not part of any release: registers an account on a running
//! server with an invite and prints its session token, for tools that call
//! the HTTP API directly (`scripts/schemathesis`). The device key stays in
//! the profile directory, as with `sotto register`.
//!
//! Usage: session_token SERVER_URL INVITE_CODE USERNAME PROFILE_DIR

use sotto_client::{Client, Profile};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, invite, username, profile] = args.as_slice() else {
        anyhow::bail!("usage: session_token SERVER_URL INVITE_CODE USERNAME PROFILE_DIR");
    };
    let mut profile = Profile::open_or_create(std::path::Path::new(profile))?;
    let mut client = Client::new(server, None)?;
    let session = client
        .register(&mut profile, invite, username, username)
        .await?;
    println!("{}", session.token);
    Ok(())
}
