//! `minipay payouts send [--once]`: runs the payout and red-packet sender outside the
//! scheduler — the operator's "send now", and what the crash test kills mid-call.
//!
//! It reads the usual configuration (`--config FILE`, else `$MINIPAY_CONFIG`, plus
//! `MINIPAY_…` overrides), connects to the database, and sends / resolves everything due:
//! `--once` until nothing is due, then exits printing one line per step; without it, every
//! `[payouts] send_interval_ms` until Ctrl-C / SIGTERM. Rows a killed sender left in
//! `sending` are resolved (query first) once their lease has run out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use minipay_config::Config;
use minipay_worker::payouts::PayoutSender;
use secrecy::ExposeSecret;

#[derive(Args)]
pub struct PayoutsArgs {
    #[command(subcommand)]
    command: PayoutsCommand,
}

#[derive(Subcommand)]
enum PayoutsCommand {
    /// Send approved payouts and red packets, resolve unknown ones, follow sent packets.
    Send(SendArgs),
}

#[derive(Args)]
struct SendArgs {
    /// TOML configuration; default `$MINIPAY_CONFIG`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Work until nothing is due, then exit.
    #[arg(long)]
    once: bool,
}

async fn send(args: &SendArgs) -> anyhow::Result<()> {
    let cfg = Config::load(args.config.as_deref()).context("configuration")?;
    let pool = minipay_store::db::connect(cfg.database.url.expose_secret(), cfg.database.max_connections)
        .await
        .context("connect to the database")?;
    let sender = PayoutSender::from_config(&cfg, pool)?;
    if args.once {
        for s in sender.run_until_idle(10_000).await? {
            println!("{} {} {} {}", s.subject.as_str(), s.id, s.merchant_no, s.status);
        }
        return Ok(());
    }
    let every = Duration::from_millis(cfg.payouts.send_interval_ms);
    loop {
        if let Err(e) = sender.run_until_idle(500).await {
            eprintln!("payout sender: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

pub fn run(args: &PayoutsArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = match &args.command {
        PayoutsCommand::Send(a) => rt.block_on(send(a)),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
