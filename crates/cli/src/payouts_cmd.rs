//! `minipay payouts send [--once]`: runs the payout and red-packet sender outside the
//! scheduler — the operator's "send now", and what the crash test kills mid-call.
//!
//! It reads the usual configuration (`--config FILE`, else `$MINIPAY_CONFIG`, plus
//! `MINIPAY_…` overrides), connects to the database, and sends / resolves everything due:
//! `--once` until nothing is due, then exits printing one line per step; without it, every
//! `[payouts] send_interval_ms` until Ctrl-C / SIGTERM. Rows a killed sender left in
//! `sending` are resolved (query first) once their lease has run out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use minipay_config::Config;
use minipay_worker::payouts::{PayoutSender, SenderConfig};
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

/// The sender's timing from `[payouts]`. The lease is at least twice the WeChat timeout: a
/// live call must never look abandoned.
pub fn sender_config(cfg: &Config) -> SenderConfig {
    let p = &cfg.payouts;
    SenderConfig {
        lease: Duration::from_millis(p.lease_ms).max(cfg.wechat.timeout.saturating_mul(2)),
        retry_initial: Duration::from_millis(p.retry_initial_ms),
        retry_max: Duration::from_millis(p.retry_max_ms),
        redpack_followup: Duration::from_millis(p.redpack_followup_ms),
    }
}

/// One WeChat Pay client per configured app.
pub fn clients(cfg: &Config) -> anyhow::Result<HashMap<String, wxpay::Client>> {
    let mut out = HashMap::new();
    for app in &cfg.apps {
        out.insert(app.appid.clone(), cfg.wxpay_client_for(&app.mch_id, &app.appid)?);
    }
    Ok(out)
}

async fn send(args: &SendArgs) -> anyhow::Result<()> {
    let cfg = Config::load(args.config.as_deref()).context("configuration")?;
    let pool = minipay_store::db::connect(cfg.database.url.expose_secret(), cfg.database.max_connections)
        .await
        .context("connect to the database")?;
    let sender = PayoutSender::new(pool, clients(&cfg)?, sender_config(&cfg));
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
