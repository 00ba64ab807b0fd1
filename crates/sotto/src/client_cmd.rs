//! The command-line client.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use sotto_client::session::{Mode, SessionConfig, SessionOutcome};
use sotto_client::{Client, Profile};
use sotto_proto::RoomId;
use sotto_proto::room::RoomKind;

#[derive(Args, Clone)]
pub struct Conn {
    /// The server, e.g. https://sotto.example:8443 (default: the profile's).
    #[arg(long)]
    server: Option<String>,
    /// Profile directory holding this device's key.
    #[arg(long, default_value = "./sotto-profile")]
    profile: PathBuf,
    /// Trust only this CA/certificate (PEM) for the server: pinning.
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Create an account with an invite; makes the device key in --profile.
    Register {
        #[command(flatten)]
        conn: Conn,
        /// The invite code or link.
        #[arg(long, allow_hyphen_values = true)]
        invite: String,
        #[arg(long)]
        username: String,
        /// Shown to others (default: the username).
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Show the signed-in account.
    Whoami {
        #[command(flatten)]
        conn: Conn,
    },
    /// Follow a user.
    Follow {
        #[command(flatten)]
        conn: Conn,
        username: String,
    },
    /// Stop following a user.
    Unfollow {
        #[command(flatten)]
        conn: Conn,
        username: String,
    },
    /// Create an invite (administrators); prints the code as the last line.
    Invite {
        #[command(flatten)]
        conn: Conn,
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
    },
    /// Speak into a room from a WAV file (you must be on stage: a room's creator is).
    Speak {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        room: String,
        /// WAV file (any rate, mono or stereo); sent as 48 kHz mono Opus, end-to-end encrypted.
        #[arg(long)]
        input: std::path::PathBuf,
        /// Start again at the end of the file (until --duration or Ctrl-C).
        #[arg(long = "loop")]
        repeat: bool,
        /// Stop after this long (e.g. 30s).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Listen to a room and write what you hear to a WAV file.
    Listen {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        room: String,
        /// Where to write the decoded mix (48 kHz mono WAV).
        #[arg(long)]
        output: std::path::PathBuf,
        /// How long to listen (e.g. 30s).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
    },
    /// Compare safety codes with another user (read the code to each other
    /// out loud or in person); `--yes` then marks them verified on this
    /// device. Shows whether their keys changed since first seen.
    Verify {
        #[command(flatten)]
        conn: Conn,
        username: String,
        /// You compared the codes and they match.
        #[arg(long)]
        yes: bool,
        /// Accept the new root key their account now shows (after checking
        /// with them some other way why it changed).
        #[arg(long)]
        accept_change: bool,
    },
    /// Rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Your data: export or delete it.
    #[command(subcommand)]
    Account(AccountCommand),
}

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Print everything the server stores about you, as JSON.
    Export {
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete your account and everything about you on the server.
    Delete {
        #[command(flatten)]
        conn: Conn,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum RoomCommand {
    /// Raise your hand (ask to speak); `--lower` lowers it.
    Hand {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        room: String,
        #[arg(long)]
        lower: bool,
    },
    /// Accept a moderator's invitation to the stage (`--decline` to refuse it).
    Accept {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        room: String,
        #[arg(long)]
        decline: bool,
    },
    /// Moderation: act on a participant (by username).
    #[command(name = "invite-speaker")]
    InviteSpeaker(Target),
    /// Mute a speaker (or yourself); only they can unmute.
    Mute(Target),
    /// Unmute yourself.
    Unmute(Target),
    /// Move a speaker back to the audience.
    #[command(name = "move-to-audience")]
    MoveToAudience(Target),
    /// Make a speaker a moderator.
    #[command(name = "make-moderator")]
    MakeModerator(Target),
    /// Remove someone from the room (they may come back).
    Remove(Target),
    /// Ban someone from the room (they cannot come back).
    Ban(Target),
    /// Let a user into a closed room.
    Admit(Target),
    /// Start a room; prints its id as the last line.
    Create {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        title: String,
        /// open | social | closed
        #[arg(long, default_value = "open")]
        kind: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// The hallway: live rooms you may enter.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Join a room as a listener and show who is there.
    Join {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        room: String,
    },
    /// Leave a room.
    Leave {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        room: String,
    },
    /// End a room (host or moderator).
    End {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        room: String,
    },
    /// Who can decrypt the room: stage members and admitted listeners by
    /// username, each verified / unverified / CHANGED, and any key holder
    /// who is not in the room (a hidden listener). Joins as a listener.
    Roster {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        room: String,
        /// How long to wait for the room's signed roster.
        #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
}

#[derive(Args)]
pub struct Target {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    room: String,
    /// The participant's username.
    username: String,
}

/// Applies a member action to `target.username` in `target.room`.
async fn member_action(target: Target, action: &str) -> anyhow::Result<()> {
    let client = signed_in(&target.conn).await?;
    let room = RoomId(target.room);
    let view = client.room(&room).await?;
    let member = view
        .members
        .iter()
        .find(|m| m.username == target.username)
        .with_context(|| format!("@{} is not in the room", target.username))?;
    let view = client.member_action(&room, &member.user_id, action).await?;
    let now = view.members.iter().find(|m| m.username == target.username);
    match now {
        Some(m) => println!(
            "@{}: {}{}",
            m.username,
            m.role.as_str(),
            if m.muted { ", muted" } else { "" }
        ),
        None => println!("@{} is no longer in the room.", target.username),
    }
    Ok(())
}

fn ended(outcome: &SessionOutcome) -> String {
    outcome
        .ended_by
        .as_ref()
        .map(|why| format!(" Stopped early: {why}."))
        .unwrap_or_default()
}

/// Runs a speak or listen session, with a live status line on a terminal.
async fn session(
    conn: &Conn,
    room: String,
    mode: Mode,
    stop_after: Option<std::time::Duration>,
) -> anyhow::Result<SessionOutcome> {
    let profile = Profile::open(&conn.profile)?;
    let client = signed_in(conn).await?;
    let mut config = SessionConfig::new(RoomId(room), mode);
    config.stop_after = stop_after;
    config.bind_ip = local_ip_towards(client.base_url())?;
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed} {msg}",
        )?);
        Some(bar)
    } else {
        None
    };
    let mut warned = 0;
    let mut reconnects = 0;
    let outcome = sotto_client::session::run(&client, &profile, config, |s| {
        for alert in &s.alerts[warned.min(s.alerts.len())..] {
            match &bar {
                Some(bar) => bar.println(format!("warning: {alert}")),
                None => eprintln!("warning: {alert}"),
            }
        }
        warned = s.alerts.len();
        if s.reconnects > reconnects {
            reconnects = s.reconnects;
            let line =
                "the server went away or the connection dropped; reconnected, the room goes on";
            match &bar {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
        }
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "speakers {} · sent {} · received {} · decrypted {} · lost {}",
                s.streams, s.frames_sent, s.packets_received, s.decrypted, s.lost
            ));
            bar.tick();
        }
    })
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for alert in outcome.stats.alerts.iter().skip(warned) {
        eprintln!("warning: {alert}");
    }
    Ok(outcome)
}

/// `sotto verify`: the safety code of this account and another, from the
/// roots of their device chains (checked against this device's pins).
async fn verify(conn: &Conn, username: &str, yes: bool, accept_change: bool) -> anyhow::Result<()> {
    let profile = Profile::open(&conn.profile)?;
    let client = signed_in(conn).await?;
    let me = client.me().await?;
    let mine = client.profile(&me.username).await?;
    let theirs = client.profile(username).await?;
    let mut trust = profile.load_trust()?;
    let chain = |text: &str| sotto_proto::channel::decode_payload(text).unwrap_or_default();
    trust
        .check(&me.id, &chain(&mine.device_chain))
        .context("your own device chain does not verify")?;
    if accept_change && trust.accept_change(&theirs.id) {
        println!("Accepted the new root key of @{username} (unverified until you compare codes).");
    }
    match trust.check(&theirs.id, &chain(&theirs.device_chain)) {
        Ok(_) => {}
        Err(sotto_proto::chain::ChainError::RootChanged) => {
            profile.save_trust(&trust)?;
            bail!(
                "the root key of @{username} CHANGED since this device first saw it: their devices are refused. \
                 If they reset their account, check with them another way, then run `sotto verify {username} --accept-change`."
            );
        }
        Err(e) => bail!("the device chain of @{username} does not verify: {e}"),
    }
    let code = trust
        .safety_code(&me.id, &theirs.id)
        .context("no safety code: a root key is not valid")?;
    println!("Safety code with @{username}:");
    println!("  {code}");
    if yes {
        trust.mark_verified(&theirs.id);
        println!("@{username} is now verified on this device.");
    } else {
        println!(
            "@{username} is {} on this device. Compare the code with them; if it matches, run again with --yes.",
            trust
                .trust(&theirs.id)
                .map_or("unknown".into(), |t| t.to_string())
        );
    }
    profile.save_trust(&trust)?;
    Ok(())
}

/// `sotto room roster`: who can decrypt the room.
async fn roster(conn: &Conn, room: String, wait: std::time::Duration) -> anyhow::Result<()> {
    let outcome = session(conn, room, Mode::Listen, Some(wait)).await?;
    let crypto = outcome
        .crypto
        .as_ref()
        .context("the session ended before E2EE started")?;
    let report = crypto.roster_report();
    let client = signed_in(conn).await?;
    let view = client.room(&crypto_room(crypto)).await?;
    let name = |u: &sotto_proto::UserId| {
        view.members.iter().find(|m| &m.user_id == u).map_or_else(
            || format!("{} (not in the room)", u.short()),
            |m| format!("@{}", m.username),
        )
    };
    println!("Who can decrypt \"{}\":", view.title);
    for e in &report.entries {
        let who = e
            .user
            .as_ref()
            .map_or_else(|| "unknown key holder".into(), name);
        let me = e.user.as_ref() == Some(crypto.me());
        let trust = match e.trust {
            _ if me => "(you)".to_string(),
            Some(t) => t.to_string(),
            None => "unknown".into(),
        };
        let tier = if e.stage { "stage   " } else { "listener" };
        println!("  {tier} {who:<30} {trust}");
    }
    match report.roster_version {
        Some(v) => println!(
            "Signed roster: key generation {}.{}, version {}.",
            v.epoch, v.rotation, v.seq
        ),
        None => println!("No signed roster received (is a stage member online?)."),
    }
    let listeners_in_room = view
        .members
        .iter()
        .filter(|m| m.role == sotto_proto::room::Role::Listener)
        .count();
    let proven = report.entries.iter().filter(|e| !e.stage).count();
    println!(
        "The signed roster lists {} listener key(s); {proven} proven on it by this check, {} member device(s) not checked.",
        report.listed, report.unchecked
    );
    if report.hidden > 0 {
        println!(
            "WARNING: {} key holder(s) on the roster are not in the room: HIDDEN LISTENER.",
            report.hidden
        );
    }
    if report.listed as usize > listeners_in_room {
        println!(
            "Note: the roster lists {} listener keys, the room shows {listeners_in_room} listeners (an account may listen from several devices).",
            report.listed
        );
    }
    Ok(())
}

fn crypto_room(crypto: &sotto_client::RoomCrypto) -> RoomId {
    crypto.room_id().clone()
}

/// This machine's address on the route to the server (for the media socket).
fn local_ip_towards(server: &str) -> anyhow::Result<std::net::IpAddr> {
    let url = url::Url::parse(server)?;
    let host = url.host_str().context("the server URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.trim_matches(['[', ']']), port))?
        .next()
        .context("cannot resolve the server")?;
    let probe = std::net::UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    // connect() on UDP sends nothing; it only picks the route.
    probe.connect(addr)?;
    Ok(probe.local_addr()?.ip())
}

async fn signed_in(conn: &Conn) -> anyhow::Result<Client> {
    let profile = Profile::open(&conn.profile)?;
    let server = conn
        .server
        .clone()
        .or_else(|| profile.info.server.clone())
        .context("pass --server URL")?;
    let mut client = Client::new(&server, conn.ca.as_deref())?;
    client.login(&profile).await?;
    Ok(client)
}

pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Register {
            conn,
            invite,
            username,
            display_name,
        } => {
            let server = conn.server.clone().context("pass --server URL")?;
            let mut profile = Profile::open_or_create(&conn.profile)?;
            if profile.info.user_id.is_some() {
                bail!(
                    "{} already holds an account; use another --profile",
                    conn.profile.display()
                );
            }
            let mut client = Client::new(&server, conn.ca.as_deref())?;
            // An invite link works as well as a bare code.
            let code = invite.rsplit('/').next().unwrap_or(&invite).to_string();
            let display = display_name.unwrap_or_else(|| username.clone());
            let session = client
                .register(&mut profile, &code, &username, &display)
                .await?;
            println!(
                "Registered @{username}; device key in {}",
                conn.profile.display()
            );
            println!("{}", session.user_id);
        }
        ClientCommand::Whoami { conn } => {
            let client = signed_in(&conn).await?;
            let me = client.me().await?;
            println!(
                "@{} ({}){}",
                me.username,
                me.display_name,
                if me.is_admin { " admin" } else { "" }
            );
            println!("{}", me.id);
        }
        ClientCommand::Follow { conn, username } => {
            signed_in(&conn).await?.follow(&username).await?;
            println!("Following @{username}");
        }
        ClientCommand::Unfollow { conn, username } => {
            signed_in(&conn).await?.unfollow(&username).await?;
            println!("No longer following @{username}");
        }
        ClientCommand::Invite {
            conn,
            uses,
            expires,
        } => {
            let invite = signed_in(&conn)
                .await?
                .create_invite(uses, expires.as_secs())
                .await?;
            println!("Invite link: {}", invite.url);
            println!("{}", invite.code);
        }
        ClientCommand::Room(cmd) => room(cmd).await?,
        ClientCommand::Speak {
            conn,
            room,
            input,
            repeat,
            duration,
        } => {
            let samples = sotto_audio::read_wav(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let mode = Mode::Speak { samples, repeat };
            let outcome = session(&conn, room, mode, duration).await?;
            println!(
                "Sent {} frames ({} before a key was available).{}",
                outcome.stats.frames_sent,
                outcome.stats.frames_without_key,
                ended(&outcome)
            );
        }
        ClientCommand::Listen {
            conn,
            room,
            output,
            duration,
        } => {
            let outcome = session(&conn, room, Mode::Listen, Some(duration)).await?;
            sotto_audio::write_wav(&output, &outcome.mix)
                .with_context(|| format!("cannot write {}", output.display()))?;
            let s = &outcome.stats;
            println!(
                "Wrote {:.1} s to {}: {} packets, {} decrypted, {} failed to decrypt, {} lost.{}",
                outcome.mix.len() as f64 / 48_000.0,
                output.display(),
                s.packets_received,
                s.decrypted,
                s.decrypt_failures,
                s.lost,
                ended(&outcome)
            );
        }
        ClientCommand::Verify {
            conn,
            username,
            yes,
            accept_change,
        } => verify(&conn, &username, yes, accept_change).await?,
        ClientCommand::Account(AccountCommand::Export { conn }) => {
            let export = signed_in(&conn).await?.export().await?;
            println!("{}", serde_json::to_string_pretty(&export)?);
        }
        ClientCommand::Account(AccountCommand::Delete { conn, yes }) => {
            if !yes {
                bail!(
                    "this deletes your account and all its data on the server; pass --yes to confirm"
                );
            }
            let profile = Profile::open(&conn.profile)?;
            signed_in(&conn).await?.delete_account(&profile).await?;
            println!("Your account and its data are deleted from the server.");
            println!(
                "The device key is still in {}; remove it with rm -r.",
                conn.profile.display()
            );
        }
    }
    Ok(())
}

async fn room(cmd: RoomCommand) -> anyhow::Result<()> {
    match cmd {
        RoomCommand::Create {
            conn,
            title,
            kind,
            description,
        } => {
            let kind = RoomKind::parse(&kind).context("--kind is open, social or closed")?;
            let room = signed_in(&conn)
                .await?
                .create_room(&title, kind, description.as_deref())
                .await?;
            println!(
                "Room \"{}\" ({}) is live; you are its host.",
                room.title,
                kind.as_str()
            );
            println!("{}", room.id);
        }
        RoomCommand::Roster { conn, room, wait } => roster(&conn, room, wait).await?,
        RoomCommand::List { conn } => {
            let rooms = signed_in(&conn).await?.hallway().await?;
            if rooms.is_empty() {
                println!("No live rooms you may enter.");
            }
            for r in rooms {
                let stage: Vec<String> =
                    r.stage.iter().map(|u| format!("@{}", u.username)).collect();
                println!(
                    "{}  {:<7} {}  — on stage: {}; {} listening",
                    r.id,
                    r.kind.as_str(),
                    r.title,
                    stage.join(", "),
                    r.listener_count
                );
            }
        }
        RoomCommand::Join { conn, room } => {
            let view = signed_in(&conn).await?.join(&RoomId(room)).await?;
            println!("In \"{}\":", view.title);
            for m in &view.members {
                println!(
                    "  {:<10} @{}{}{}",
                    m.role.as_str(),
                    m.username,
                    if m.muted { " (muted)" } else { "" },
                    if m.hand_raised { " ✋" } else { "" }
                );
            }
            let mut hands: Vec<_> = view.members.iter().filter(|m| m.hand_raised).collect();
            hands.sort_by_key(|m| m.hand_order.unwrap_or(i64::MAX));
            if !hands.is_empty() {
                let names: Vec<String> = hands.iter().map(|m| format!("@{}", m.username)).collect();
                println!("Hands, first raised first: {}", names.join(", "));
            }
        }
        RoomCommand::Leave { conn, room } => {
            signed_in(&conn)
                .await?
                .room_action(&RoomId(room), "leave")
                .await?;
            println!("Left the room.");
        }
        RoomCommand::Hand { conn, room, lower } => {
            let action = if lower { "lower-hand" } else { "raise-hand" };
            signed_in(&conn)
                .await?
                .room_action(&RoomId(room), action)
                .await?;
            println!(
                "{}",
                if lower {
                    "Hand lowered."
                } else {
                    "Hand raised."
                }
            );
        }
        RoomCommand::Accept {
            conn,
            room,
            decline,
        } => {
            let action = if decline {
                "decline-stage"
            } else {
                "accept-stage"
            };
            signed_in(&conn)
                .await?
                .room_action(&RoomId(room), action)
                .await?;
            println!(
                "{}",
                if decline {
                    "Declined."
                } else {
                    "You are on stage."
                }
            );
        }
        RoomCommand::InviteSpeaker(t) => member_action(t, "invite-to-stage").await?,
        RoomCommand::Mute(t) => member_action(t, "mute").await?,
        RoomCommand::Unmute(t) => member_action(t, "unmute").await?,
        RoomCommand::MoveToAudience(t) => member_action(t, "move-to-audience").await?,
        RoomCommand::MakeModerator(t) => member_action(t, "make-moderator").await?,
        RoomCommand::Remove(t) => member_action(t, "remove").await?,
        RoomCommand::Ban(t) => member_action(t, "ban").await?,
        RoomCommand::Admit(t) => {
            signed_in(&t.conn)
                .await?
                .grant_access(&RoomId(t.room), &t.username)
                .await?;
            println!("@{} may now enter.", t.username);
        }
        RoomCommand::End { conn, room } => {
            signed_in(&conn)
                .await?
                .room_action(&RoomId(room), "end")
                .await?;
            println!("The room has ended.");
        }
    }
    Ok(())
}
