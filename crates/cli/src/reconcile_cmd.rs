//! `minipay reconcile --date YYYY-MM-DD [--merchant MCH] [--json] [--bill-file PATH]`: one
//! reconciliation run now, for one day, printing the report.
//!
//! Without `--bill-file` the bills are downloaded as the nightly job would. With it, a bill
//! downloaded by hand from the merchant platform (plain or gzip) is reconciled instead
//! (`--fund-flow-file` adds the fund-flow bill; without it payouts and red packets are not
//! matched). A manual run always runs, even if the day was reconciled before: every run is
//! kept, so this is how a person re-checks a day.
//!
//! Exit status: 0 when the run completed, whatever it found; 1 when it could not run (no
//! database, a bill that fails its own totals, WeChat still creating the bill, another
//! worker running the same day); 2 on bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::Args;
use minipay_config::Config;
use minipay_store::recon::Trigger;
use minipay_worker::reconcile::{BillSource, Reconciler, RunOutcome, RunRequest};
use secrecy::ExposeSecret;

#[derive(Args)]
pub struct ReconcileArgs {
    /// The day to reconcile (Beijing time), e.g. 2026-11-24.
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: NaiveDate,
    /// Only this merchant (default: every configured merchant).
    #[arg(long, value_name = "MCH_ID")]
    merchant: Option<String>,
    /// Print one JSON document instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Reconcile this trade bill (ALL, plain or gzip) instead of downloading it.
    #[arg(long, value_name = "PATH")]
    bill_file: Option<PathBuf>,
    /// With --bill-file: the fund-flow bill (Basic account) of the same day.
    #[arg(long, value_name = "PATH", requires = "bill_file")]
    fund_flow_file: Option<PathBuf>,
    /// TOML configuration; default `$MINIPAY_CONFIG`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(args: &ReconcileArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("minipay reconcile: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(reconcile(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("minipay reconcile: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn reconcile(args: &ReconcileArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(args.config.as_deref()).context("configuration")?;
    let merchants: Vec<String> = match &args.merchant {
        Some(m) => {
            if cfg.merchant(m).is_none() && args.bill_file.is_none() {
                bail!("merchant {m} is not configured");
            }
            vec![m.clone()]
        }
        None => cfg.merchants.iter().map(|m| m.mch_id.clone()).collect(),
    };
    if merchants.is_empty() {
        bail!("no merchant configured (and none given with --merchant)");
    }
    if args.bill_file.is_some() && merchants.len() != 1 {
        bail!("--bill-file is one merchant's bill: name it with --merchant");
    }
    let pool = minipay_store::db::connect(cfg.database.url.expose_secret(), cfg.database.max_connections.max(2))
        .await
        .context("connect to the database")?;
    let reconciler = if args.bill_file.is_some() && cfg.merchant(&merchants[0]).is_none() {
        // A hand-supplied bill of a merchant we have no credentials for: no repairs.
        Reconciler::new(pool)
    } else {
        Reconciler::from_config(&cfg, pool).context("reconciliation settings")?
    };
    let source = match &args.bill_file {
        Some(trade) => BillSource::Files { trade: trade.clone(), fund_flow: args.fund_flow_file.clone() },
        None => BillSource::Download,
    };
    let mut reports = Vec::new();
    let mut failed = false;
    for mch in merchants {
        let req = RunRequest {
            mch_id: mch.clone(),
            date: args.date,
            source: source.clone(),
            trigger: Trigger::Cli,
            rerun: true,
        };
        match reconciler.run(&req).await {
            Ok(RunOutcome::Completed(report)) => {
                if !args.json {
                    print!("{}", report.human());
                }
                reports.push(*report);
            }
            Ok(RunOutcome::Waiting { run_id }) => {
                eprintln!(
                    "merchant {mch}: WeChat is still creating the bill for {} (run {run_id}); try later",
                    args.date
                );
                failed = true;
            }
            Ok(RunOutcome::Busy { run_id }) => {
                eprintln!("merchant {mch}: run {run_id} for {} is in progress on another worker", args.date);
                failed = true;
            }
            Ok(RunOutcome::AlreadyCompleted { run_id }) => {
                // Not reached with rerun = true; reported rather than assumed.
                eprintln!("merchant {mch}: already reconciled by run {run_id}");
            }
            Err(e) => {
                eprintln!("merchant {mch}: reconciliation of {} could not run: {e}", args.date);
                failed = true;
            }
        }
    }
    if args.json {
        let doc = if reports.len() == 1 && args.merchant.is_some() {
            serde_json::to_string_pretty(&reports[0])?
        } else {
            serde_json::to_string_pretty(&serde_json::json!({ "date": args.date, "reports": reports }))?
        };
        println!("{doc}");
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
