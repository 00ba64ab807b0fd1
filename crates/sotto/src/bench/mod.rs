//! `sotto bench`: load generators for the media plane. Benchmarks, not
//! tests: they print figures, they assert nothing.
//!
//! - `fanout`: N receive-only WebRTC listeners and S speakers against a
//!   running server (`listener`, `speaker`), with the server's CPU and
//!   memory from `/proc` and its counters from `/metrics` (`probe`).
//! - `raw`: the floor: receive, SRTP-seal per listener, `sendmmsg`.
//! - `churn`: listeners joining and leaving at a steady rate (`churner`)
//!   around a speaking host and stable listeners that check every frame
//!   (`stable`, `room_keys`).
//! - `storm`: N listeners admitted into one E2EE room within a window;
//!   bytes per listener per change; a ban's exposure window.

mod churn;
mod churner;
mod fanout;
mod janus;
mod listener;
mod probe;
mod raw;
mod room_keys;
mod speaker;
mod stable;
mod storm;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// N receive-only WebRTC listeners and S speakers against a running server.
    Fanout(fanout::FanoutArgs),
    /// The limit harness: receive, SRTP-seal for each listener, sendmmsg. No SFU.
    Raw(raw::RawArgs),
    /// The same fan-out through Janus's VideoRoom (started here, loopback only).
    Janus(janus::JanusArgs),
    /// Listeners join and leave at a steady rate while a host speaks and
    /// stable listeners check every frame.
    Churn(churn::ChurnArgs),
    /// N listeners join one E2EE room within a window (keys delivered);
    /// then what a change costs each listener, and a ban's exposure.
    Storm(storm::StormArgs),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    // reqwest (for /metrics and Janus's REST API) needs a crypto provider
    // even for plain HTTP; an error only means one is installed already.
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a TLS crypto provider was already installed");
    }
    match command {
        BenchCommand::Fanout(args) => {
            let markdown = args.markdown.clone();
            let report = fanout::run(args).await?;
            report.print();
            append_row(markdown.as_deref(), &report)
        }
        BenchCommand::Janus(args) => {
            let markdown = args.markdown.clone();
            let report = janus::run(args).await?;
            report.print();
            append_row(markdown.as_deref(), &report)
        }
        BenchCommand::Storm(args) => {
            let report = storm::run(args).await?;
            report.print();
            Ok(())
        }
        BenchCommand::Churn(args) => {
            churn::run(args).await?.print();
            Ok(())
        }
        BenchCommand::Raw(args) => {
            let r = raw::measure(args.listeners, args.speakers, args.seconds).await?;
            println!(
                "raw: {} listeners, {} speaker(s): {:.0} packets/s forwarded, {:.2} µs CPU per packet ({:.0} packets per CPU-s), loss {:.3} %",
                args.listeners,
                args.speakers,
                r.forwarded as f64 / r.wall_seconds,
                r.cpu_per_packet() * 1e6,
                1.0 / r.cpu_per_packet(),
                r.loss() * 100.0
            );
            Ok(())
        }
    }
}

/// Appends the report as a row of the Markdown table in `path` (with the
/// header if the file is new).
fn append_row(path: Option<&std::path::Path>, report: &fanout::FanoutReport) -> anyhow::Result<()> {
    use std::io::Write as _;
    let Some(path) = path else {
        return Ok(());
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if file.metadata()?.len() == 0 {
        writeln!(file, "{}", fanout::MARKDOWN_HEADER)?;
    }
    writeln!(file, "{}", report.markdown_row())?;
    Ok(())
}
