//! `minipay bench reconcile --rows 1000000`: the reconciliation benchmark.
//!
//! Builds a day of data in a throwaway database (`DATABASE_URL` as an admin URL, else a
//! private PostgreSQL cluster started for the run, as the tests do): orders, refunds and
//! their ledger postings, plus a gzip ALL bill of `--rows` rows written with
//! `wxpay::bill::BillWriter`, with planted discrepancies of every trade-bill category. Then it
//! times one reconciliation run of that bill (checksum + raw storage → parse → COPY → match
//! → totals → report) and prints wall time per step and peak RSS of this process.
//!
//! Set-up is not timed. The ledger is bulk-loaded with `session_replication_role = replica`
//! (the per-row balance trigger would take minutes for two million entries; every generated
//! posting is balanced by construction). Peak RSS is this process's `VmHWM`, reset through
//! `/proc/self/clear_refs` just before the timed run, so it measures the reconciliation, not
//! the generator; Postgres' own memory is not included.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use chrono::{Duration, NaiveDate, NaiveDateTime};
use clap::{Args, Subcommand};
use minipay_store::Fen;
use minipay_store::recon::Trigger;
use minipay_worker::reconcile::{BillSource, Reconciler, RunOutcome, RunRequest, Settings};
use sqlx::{Executor, PgPool};
use wxpay::bill::{BillWriter, MilliFen, TradeLayout, TradeRow};

const MCH: &str = "1900000109";
const APPID: &str = "wxd930ea5d5a258f4f";
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time one reconciliation of a generated bill against a generated day of orders.
    Reconcile(ReconcileBench),
    /// Load-test `POST /v1/orders` against the sandbox: `bench orders --requests N --concurrency C`.
    Orders(crate::bench_orders::OrdersBench),
}

#[derive(Args)]
struct ReconcileBench {
    /// Rows in the generated bill (about 90 % payments, 10 % refunds).
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Write the bill uncompressed (default: gzip, as `downloadbill` with tar_type=GZIP).
    #[arg(long)]
    plain: bool,
    /// Print the report as JSON too.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &BenchArgs) -> ExitCode {
    let b = match &args.command {
        BenchCommand::Reconcile(b) => b,
        BenchCommand::Orders(o) => return crate::bench_orders::run(o),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("minipay bench: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(bench_reconcile(b)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minipay bench reconcile: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 24).unwrap_or_default()
}

/// Which planted discrepancy (if any) payment `i` carries: one of each per 10,000.
fn plant(i: u64) -> u64 {
    i % 10_000
}
const MISSING_LOCAL: u64 = 1;
const AMOUNT: u64 = 2;
const STATUS: u64 = 3;
const FEE: u64 = 4;
const REFUND_UNKNOWN: u64 = 5;
const REFUND_AMOUNT: u64 = 6;

struct Shape {
    payments: u64,
    refunds: u64,
    /// Paid orders the bill does not have (missing_remote), one per 10,000 payments.
    extra: u64,
}

fn amount(i: u64) -> i64 {
    100 + (i % 9_900) as i64
}

fn paid_at(i: u64, payments: u64) -> NaiveDateTime {
    let secs = (i * 86_000 / payments.max(1)) as i64;
    day().and_hms_opt(0, 0, 0).unwrap_or_default() + Duration::seconds(secs)
}

fn bj(t: NaiveDateTime) -> String {
    format!("{}+08", t.format("%Y-%m-%d %H:%M:%S"))
}

async fn bench_reconcile(b: &ReconcileBench) -> anyhow::Result<()> {
    let refunds = b.rows / 10;
    let shape = Shape { payments: b.rows - refunds, refunds, extra: (b.rows - refunds) / 10_000 };
    let t = Instant::now();
    let db = minipay_testkit::TestDb::new().await;
    let pool = db.pool.clone();
    eprintln!("database {} ready in {:.1?}", db.name, t.elapsed());

    let t = Instant::now();
    let dir = std::env::temp_dir().join(format!("minipay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bill_path = dir.join(if b.plain { "bill.csv" } else { "bill.csv.gz" });
    let bill_bytes = write_bill(&bill_path, &shape, !b.plain)?;
    eprintln!("bill: {} rows, {} bytes, written in {:.1?}", b.rows, bill_bytes, t.elapsed());

    let t = Instant::now();
    load_ours(&pool, &shape).await?;
    eprintln!("orders, refunds and ledger loaded in {:.1?}", t.elapsed());

    let settings = Settings { fee_rate_ppm: Some(6000), ..Settings::default() };
    let r = Reconciler::new(pool.clone()).with_settings(MCH, settings);
    let req = RunRequest {
        mch_id: MCH.into(),
        date: day(),
        source: BillSource::Files { trade: bill_path.clone(), fund_flow: None },
        trigger: Trigger::Bench,
        rerun: true,
    };
    let data_dir: Option<String> =
        sqlx::query_scalar("SELECT current_setting('data_directory')").fetch_one(&pool).await.ok();
    let pg_before = data_dir.as_deref().and_then(server_cpu_ticks);
    let me_before = cpu_ticks(std::process::id());
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let start = Instant::now();
    let outcome = r.run(&req).await?;
    let wall = start.elapsed();
    let peak = vm_hwm_kib();
    let me_cpu = cpu_ticks(std::process::id()).zip(me_before).map(|(a, b)| a.saturating_sub(b));
    let pg_cpu = data_dir.as_deref().and_then(server_cpu_ticks).zip(pg_before).map(|(a, b)| a.saturating_sub(b));
    let RunOutcome::Completed(report) = outcome else {
        anyhow::bail!("the run did not complete: {outcome:?}");
    };
    print!("{}", report.human().lines().take_while(|l| !l.starts_with("  [")).collect::<Vec<_>>().join("\n"));
    println!();
    println!("rows: {}  bill file: {} bytes ({})", b.rows, bill_bytes, if b.plain { "plain" } else { "gzip" });
    println!("steps (ms): {:?}", report.timings_ms);
    println!("wall: {:.2} s", wall.as_secs_f64());
    // CPU seconds spent, which the other work on a shared machine does not inflate the way
    // it inflates wall time: this process, and the Postgres server when it runs locally.
    let secs = |t: u64| t as f64 / 100.0;
    match (me_cpu, pg_cpu) {
        (Some(me), Some(pg)) => {
            println!("cpu: this process {:.2} s, postgres {:.2} s (total {:.2} s)", secs(me), secs(pg), secs(me + pg))
        }
        (Some(me), None) => println!("cpu: this process {:.2} s (postgres not local)", secs(me)),
        _ => {}
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average after the run: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    }
    match peak {
        Some(kib) => println!(
            "peak RSS: {:.1} MiB ({})",
            kib as f64 / 1024.0,
            if reset { "VmHWM reset before the run" } else { "VmHWM since process start: reset refused" }
        ),
        None => println!("peak RSS: unavailable (/proc/self/status)"),
    }
    let expected = [
        ("missing_local", shape_count(&shape, MISSING_LOCAL) + refund_count(&shape, REFUND_UNKNOWN)),
        ("amount_mismatch", shape_count(&shape, AMOUNT) + refund_count(&shape, REFUND_AMOUNT)),
        ("status_mismatch", shape_count(&shape, STATUS)),
        ("fee_mismatch", shape_count(&shape, FEE)),
        ("missing_remote", shape.extra),
        ("cross_day", 1),
    ];
    let mut all_found = true;
    for (cat, want) in expected {
        let got = report.categories.get(cat).map(|c| c.count).unwrap_or(0) as u64;
        if got != want {
            all_found = false;
            println!("planted {cat}: {want}, found {got}  MISMATCH");
        }
    }
    println!("planted discrepancies: {}", if all_found { "all found, nothing else" } else { "see MISMATCH lines" });
    if b.json {
        println!("{}", serde_json::to_string_pretty(&*report)?);
    }
    std::fs::remove_dir_all(&dir).ok();
    if !all_found {
        anyhow::bail!("the planted discrepancies were not found exactly");
    }
    Ok(())
}

fn shape_count(s: &Shape, which: u64) -> u64 {
    (0..s.payments).filter(|i| plant(*i) == which).count() as u64
}

fn refund_count(s: &Shape, which: u64) -> u64 {
    (0..s.refunds).filter(|j| plant(*j) == which).count() as u64
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU ticks of every process of the local Postgres server whose data directory is `dir`
/// (the postmaster and its children: backends, WAL writer, checkpointer…).
fn server_cpu_ticks(dir: &str) -> Option<u64> {
    let pid_file = std::fs::read_to_string(std::path::Path::new(dir).join("postmaster.pid")).ok()?;
    let postmaster: u32 = pid_file.lines().next()?.trim().parse().ok()?;
    let mut total = cpu_ticks(postmaster)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let ppid = stat[close + 2..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(postmaster) {
            // Children that exit during the run take their ticks with them; backends of our
            // pool live for the whole run.
            total += cpu_ticks(pid).unwrap_or(0);
        }
    }
    Some(total)
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn base_row(i: u64, s: &Shape) -> TradeRow {
    let a = amount(i);
    TradeRow {
        trade_time: paid_at(i, s.payments),
        appid: APPID.into(),
        mch_id: MCH.into(),
        sub_mch_id: "0".into(),
        device_info: String::new(),
        transaction_id: format!("42000{i:015}"),
        out_trade_no: format!("B{i:09}"),
        openid: OPENID.into(),
        trade_type: "JSAPI".into(),
        trade_state: "SUCCESS".into(),
        bank: "CFT".into(),
        currency: "CNY".into(),
        settlement_amount: Fen::new(a),
        coupon_amount: Fen::new(0),
        refund_id: "0".into(),
        out_refund_no: "0".into(),
        refund_amount: Fen::new(0),
        recharge_coupon_refund: Fen::new(0),
        refund_type: String::new(),
        refund_status: String::new(),
        product_name: "会员月卡,连续包月".into(),
        attach: "scene=1,src=bench".into(),
        fee: MilliFen::new(a * 6),
        rate: "0.60%".into(),
        order_amount: Some(Fen::new(a)),
        requested_refund_amount: Some(Fen::new(0)),
        rate_remark: Some(String::new()),
        refund_apply_time: None,
        refund_success_time: None,
    }
}

fn refund_amount(j: u64) -> i64 {
    amount(j).min(50)
}

fn write_bill(path: &std::path::Path, s: &Shape, gzip: bool) -> anyhow::Result<u64> {
    let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let out: Box<dyn Write> =
        if gzip { Box::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast())) } else { Box::new(file) };
    let mut w = BillWriter::new(out, TradeLayout::All)?;
    for i in 0..s.payments {
        let mut row = base_row(i, s);
        match plant(i) {
            AMOUNT => {
                row.settlement_amount = Fen::new(amount(i) + 1);
                row.order_amount = Some(Fen::new(amount(i) + 1));
                row.fee = MilliFen::new((amount(i) + 1) * 6);
            }
            STATUS => row.transaction_id = format!("43000{i:015}"),
            FEE => row.fee = MilliFen::new(amount(i) * 6 + 1),
            _ => {}
        }
        w.write_row(&row)?;
    }
    for j in 0..s.refunds {
        let mut row = base_row(j, s);
        let ra = refund_amount(j) + if plant(j) == REFUND_AMOUNT { 1 } else { 0 };
        row.trade_time = paid_at(j, s.payments) + Duration::seconds(1);
        row.trade_state = "REFUND".into();
        row.refund_id = format!("50300{j:015}");
        row.out_refund_no = format!("RB{j:09}");
        row.refund_amount = Fen::new(ra);
        row.refund_type = "ORIGINAL".into();
        row.refund_status = "SUCCESS".into();
        row.requested_refund_amount = Some(Fen::new(ra));
        row.fee = MilliFen::new(-ra * 6);
        w.write_row(&row)?;
    }
    let mut out = w.finish()?;
    out.flush()?;
    drop(out);
    Ok(std::fs::metadata(path)?.len())
}

/// Streams COPY text into `table` in batches produced by `line`.
async fn copy(pool: &PgPool, stmt: &str, n: u64, mut line: impl FnMut(u64, &mut String)) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    conn.execute("SET session_replication_role = replica").await.context("bulk load needs a superuser")?;
    let mut c = conn.copy_in_raw(stmt).await?;
    let mut buf = String::with_capacity(1 << 20);
    for i in 0..n {
        line(i, &mut buf);
        if buf.len() > (1 << 20) - 512 {
            c.send(buf.as_bytes()).await?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        c.send(buf.as_bytes()).await?;
    }
    c.finish().await?;
    conn.execute("SET session_replication_role = DEFAULT").await?;
    Ok(())
}

/// Our side of the day: orders (paid unless planted missing_local, plus the extra ones the
/// bill lacks and one at 23:59:59 that WeChat books the next day), succeeded refunds (except
/// the ones we never heard of), and the ledger postings of both.
async fn load_ours(pool: &PgPool, s: &Shape) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    sqlx::query("INSERT INTO apps (appid, mch_id, name) VALUES ($1, $2, 'bench')")
        .bind(APPID)
        .bind(MCH)
        .execute(pool)
        .await?;
    let total = s.payments + s.extra + 1;
    let expires = bj(day().and_hms_opt(23, 59, 59).unwrap_or_default());
    let midnight = day().and_hms_opt(23, 59, 59).unwrap_or_default();
    // The extra (missing_remote) orders are paid around noon, far from midnight, so they are
    // not mistaken for cross-day candidates.
    let noon = day().and_hms_opt(12, 0, 0).unwrap_or_default();
    let order_time = |i: u64| {
        if i < s.payments {
            paid_at(i, s.payments)
        } else if i < s.payments + s.extra {
            noon + Duration::seconds((i - s.payments) as i64)
        } else {
            midnight
        }
    };
    copy(
        pool,
        "COPY orders (id, out_trade_no, appid, mch_id, openid, amount, description, status, expires_at, transaction_id, \
         paid_at) FROM STDIN",
        total,
        |i, buf| {
            let no = format!("B{i:09}");
            if i < s.payments && plant(i) == MISSING_LOCAL {
                let _ = writeln!(buf, "{}\t{no}\t{APPID}\t{MCH}\t{OPENID}\t{}\tbench\tprepaid\t{expires}\t\\N\t\\N", i + 1, amount(i));
            } else {
                let _ = writeln!(
                    buf,
                    "{}\t{no}\t{APPID}\t{MCH}\t{OPENID}\t{}\tbench\tpaid\t{expires}\t42000{i:015}\t{}",
                    i + 1,
                    amount(i),
                    bj(order_time(i))
                );
            }
        },
    )
    .await?;
    copy(
        pool,
        "COPY refunds (id, out_refund_no, order_id, amount, status, refund_id, succeeded_at) FROM STDIN",
        s.refunds,
        |j, buf| {
            if plant(j) != REFUND_UNKNOWN {
                let _ = writeln!(
                    buf,
                    "{}\tRB{j:09}\t{}\t{}\tsucceeded\t50300{j:015}\t{}",
                    j + 1,
                    j + 1,
                    refund_amount(j),
                    bj(paid_at(j, s.payments) + Duration::seconds(1))
                );
            }
        },
    )
    .await?;
    // Ledger: transaction ids 1..=total for payments (only paid orders), then refunds.
    copy(
        pool,
        "COPY ledger_transactions (id, kind, reference, mch_id, occurred_at) FROM STDIN",
        total + s.refunds,
        |k, buf| {
            if k < total {
                if !(k < s.payments && plant(k) == MISSING_LOCAL) {
                    let _ = writeln!(buf, "{}\tpayment\tB{k:09}\t{MCH}\t{}", k + 1, bj(order_time(k)));
                }
            } else {
                let j = k - total;
                if plant(j) != REFUND_UNKNOWN {
                    let _ = writeln!(
                        buf,
                        "{}\trefund\tRB{j:09}\t{MCH}\t{}",
                        k + 1,
                        bj(paid_at(j, s.payments) + Duration::seconds(1))
                    );
                }
            }
        },
    )
    .await?;
    copy(pool, "COPY ledger_entries (transaction_id, account, amount) FROM STDIN", total + s.refunds, |k, buf| {
        if k < total {
            if !(k < s.payments && plant(k) == MISSING_LOCAL) {
                let a = amount(k);
                let _ = writeln!(buf, "{}\twechat:{MCH}\t{a}\n{}\tsales:{MCH}\t-{a}", k + 1, k + 1);
            }
        } else {
            let j = k - total;
            if plant(j) != REFUND_UNKNOWN {
                let a = refund_amount(j);
                let _ = writeln!(buf, "{}\trefunds:{MCH}\t{a}\n{}\twechat:{MCH}\t-{a}", k + 1, k + 1);
            }
        }
    })
    .await?;
    for t in ["orders", "refunds", "ledger_transactions", "ledger_entries"] {
        let mut conn = pool.acquire().await?;
        conn.execute(sqlx::AssertSqlSafe(format!("ANALYZE {t}"))).await?;
    }
    for seq in ["orders_id_seq", "refunds_id_seq", "ledger_transactions_id_seq"] {
        let mut conn = pool.acquire().await?;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "SELECT setval('{seq}', 1 + (SELECT max(id) FROM {})) ",
            seq.trim_end_matches("_id_seq")
        )))
        .await?;
    }
    Ok(())
}
