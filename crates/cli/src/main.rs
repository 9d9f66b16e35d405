//! The `minipay` binary: a thin layer that parses the command line and calls into the
//! library crates. Each subcommand lives in its own module.

mod bench_cmd;
mod bench_orders;
mod check_cmd;
mod config_check;
mod demo_cmd;
mod dev_cmd;
mod keys_cmd;
mod payouts_cmd;
mod reconcile_cmd;
mod sandbox_cmd;
mod serve_cmd;
mod signing;
mod signing_v3;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "minipay", version, about = "WeChat Pay (v2) payments, payouts and reconciliation for mini-programs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign a WeChat XML document read from stdin: prints the string-to-sign (key masked)
    /// and, as the last line, `sign=<HEX>`.
    Sign(signing::SignArgs),
    /// Verify the `sign` of a WeChat XML document read from stdin. Exit 0 when it matches,
    /// 1 when it does not, 2 on bad input.
    Verify(signing::SignArgs),
    /// APIv3: print the string a request signs and its `Authorization` header (body on
    /// stdin; merchant key from --key-file), or check a given header with --authorization
    /// and --merchant-cert as WeChat does. Exit 0 signed / matches, 1 mismatch, 2 bad input.
    SignV3(signing_v3::SignV3Args),
    /// APIv3: verify an answer or notification (the four Wechatpay-* headers as options,
    /// body on stdin) against the platform certificate and/or public key. Exit 0 when it
    /// matches, 1 when it does not (the reason is printed), 2 on bad input.
    VerifyV3(signing_v3::VerifyV3Args),
    /// Run the local WeChat Pay v2 + WeChat API sandbox (see crates/sandbox/README.md).
    Sandbox(sandbox_cmd::SandboxArgs),
    /// Payouts and red packets: `payouts send [--once]` sends and resolves what is due.
    Payouts(payouts_cmd::PayoutsArgs),
    /// Reconcile one day now: `reconcile --date YYYY-MM-DD [--merchant MCH] [--json]
    /// [--bill-file PATH]`. Exit 0 when the run completed (whatever it found), 1 when it
    /// could not run.
    Reconcile(reconcile_cmd::ReconcileArgs),
    /// Benchmarks: `bench reconcile --rows 1000000`.
    Bench(bench_cmd::BenchArgs),
    /// Run a service: `serve api|notify|worker|all [--config FILE] [--migrate]`.
    Serve(serve_cmd::ServeArgs),
    /// Apply the database migrations (`--config FILE` / `MINIPAY_DATABASE_URL`).
    Migrate(serve_cmd::MigrateArgs),
    /// API keys: `keys create --role ROLE --name NAME [--webhook-url URL]` prints the key once.
    Keys(keys_cmd::KeysArgs),
    /// Everything local with no configuration: throwaway Postgres, sandbox, api, notify,
    /// worker; writes the configuration it runs to a directory it prints.
    Dev(dev_cmd::DevArgs),
    /// HTTPS certificate rules of a mini-program server domain: `check-cert HOST[:PORT]
    /// [--ca FILE] [--json]`. Exit 0 only when every rule passes.
    CheckCert(check_cmd::CheckCertArgs),
    /// Server-domain lists (request, socket, uploadFile, downloadFile) against WeChat's
    /// rules: `check-domains FILE|- [--check-cert]`. One line per violation.
    CheckDomains(check_cmd::CheckDomainsArgs),
    /// Walk the whole story against a running `minipay dev` (`--env FILE`: its dev.env).
    Demo(demo_cmd::DemoArgs),
    /// `config check [--config FILE] [--database]`: every problem of a configuration, by field.
    Config(config_check::ConfigArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sign(args) => signing::run_sign(&args),
        Command::Verify(args) => signing::run_verify(&args),
        Command::SignV3(args) => signing_v3::run_sign(&args),
        Command::VerifyV3(args) => signing_v3::run_verify(&args),
        Command::Sandbox(args) => sandbox_cmd::run(&args),
        Command::Payouts(args) => payouts_cmd::run(&args),
        Command::Reconcile(args) => reconcile_cmd::run(&args),
        Command::Bench(args) => bench_cmd::run(&args),
        Command::Serve(args) => serve_cmd::run_serve(&args),
        Command::Migrate(args) => serve_cmd::run_migrate(&args),
        Command::Keys(args) => keys_cmd::run(&args),
        Command::Dev(args) => dev_cmd::run(&args),
        Command::CheckCert(args) => check_cmd::run_check_cert(&args),
        Command::CheckDomains(args) => check_cmd::run_check_domains(&args),
        Command::Demo(args) => demo_cmd::run(&args),
        Command::Config(args) => config_check::run(&args),
    }
}
