//! `sotto`: the server (`serve`), operator tasks (`admin`), and the
//! command-line client (`register`, `room`, `follow`, …).

mod bench;
mod client_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sotto_server::{DatabaseLocation, ServerConfig, TlsSetting};

#[derive(Parser)]
#[command(
    name = "sotto",
    version,
    about = "Live audio rooms the server operators cannot hear."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Operator tasks, run against the database directly.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Load generators for the media plane (benchmarks, not tests).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    #[command(flatten)]
    Client(client_cmd::ClientCommand),
}

#[derive(Args, Clone)]
struct DatabaseArgs {
    /// Directory for the SQLite database (and TLS files).
    #[arg(long, default_value = "./sotto-data")]
    data_dir: PathBuf,
    /// Use PostgreSQL instead of SQLite (postgres://…).
    #[arg(long, env = "SOTTO_DATABASE_URL")]
    database_url: Option<String>,
}

impl DatabaseArgs {
    fn location(&self) -> DatabaseLocation {
        match &self.database_url {
            Some(url) => DatabaseLocation::Postgres(url.clone()),
            None => DatabaseLocation::SqliteDir(self.data_dir.clone()),
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// Address of the HTTP API. A non-loopback address needs TLS.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Make a certificate in the data directory and print what clients pin.
    #[arg(long)]
    tls_self_signed: bool,
    /// The URL people use to reach this server (for invite links).
    #[arg(long)]
    public_url: Option<String>,
    /// Registrations and logins allowed per client address per minute (0: no limit).
    #[arg(long, default_value_t = 60)]
    auth_rate_limit: u32,
    /// UDP address of the media plane (the SFU). Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    media_udp: SocketAddr,
    /// The address clients reach the media plane at, if not the bound one
    /// (e.g. the public IP when binding 0.0.0.0 behind 1:1 NAT).
    #[arg(long)]
    public_ip: Option<std::net::IpAddr>,
    /// How long an ended room's roster, bans and access list are kept (e.g. 24h, 0s).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ended_room_retention: Duration,
    /// `direct` (the default): the SFU seals each forwarded copy itself
    /// (see docs/media.md); `rtc`: through each listener's WebRTC session
    /// object, about 2.5× the CPU per copy (kept for the benchmarks).
    #[arg(long, default_value = "direct", value_parser = ["direct", "rtc"], hide = true)]
    sfu_send_path: String,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an invite; prints the code as the last line.
    Invite {
        #[command(flatten)]
        db: DatabaseArgs,
        /// How many accounts it may create.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid (e.g. 30m, 12h, 7d).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        expires: Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SOTTO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Admin(AdminCommand::Invite { db, uses, expires }) => {
                let code =
                    sotto_server::admin::create_invite(&db.location(), uses, expires).await?;
                println!(
                    "Invite for {uses} account(s), valid for {}:",
                    humantime::format_duration(expires)
                );
                println!("{code}");
                Ok(())
            }
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Client(cmd) => client_cmd::run(cmd).await,
        }
    })
}

/// The banner goes to stdout; a server must not die because nobody reads it
/// (a closed pipe), so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let args_public_url_missing = args.public_url.is_none();
    let mut config = ServerConfig::new(&args.db.data_dir);
    config.database = args.db.location();
    config.http = args.http;
    config.public_url = args.public_url;
    config.auth_per_minute = args.auth_rate_limit;
    config.ended_room_retention = args.ended_room_retention;
    config.media = Some(sotto_server::media::MediaConfig {
        bind: args.media_udp,
        public_ip: args.public_ip,
        inject_loss: 0.0,
        direct_send: args.sfu_send_path == "direct",
    });
    config.tls = match (args.tls_cert, args.tls_key, args.tls_self_signed) {
        (Some(cert), Some(key), _) => TlsSetting::Files { cert, key },
        (_, _, true) => TlsSetting::SelfSigned,
        _ => TlsSetting::Off,
    };
    let server = sotto_server::start(config).await?;
    say!("sotto is serving at {}", server.base_url);
    if let Some(media) = server.media_addr {
        say!("Media (UDP): {media}");
    }
    if server.local_addr.ip().is_unspecified() && args_public_url_missing {
        say!("Note: pass --public-url so invite links name an address people can reach.");
    }
    if let Some((ca, fingerprint)) = &server.pinned_cert {
        if let Some(ca) = ca {
            say!(
                "TLS: self-signed; clients pin {} (pass --ca {})",
                ca.display(),
                ca.display()
            );
        }
        say!("TLS certificate SHA-256: {fingerprint}");
    }
    if let Some(url) = &server.bootstrap_invite {
        say!("No accounts yet. One-time admin invite (valid 7 days): {url}");
    }
    shutdown_signal().await;
    tracing::info!("shutting down: telling clients to reconnect");
    server.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
