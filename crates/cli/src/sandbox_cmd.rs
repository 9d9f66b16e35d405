//! `minipay sandbox`: runs the local WeChat Pay v2 + WeChat API server until Ctrl-C/SIGTERM.
//!
//! It prints `SANDBOX_HTTP_URL=…` and `SANDBOX_HTTPS_URL=…` lines on stdout once both
//! listeners are up (scripts started with `--port 0` read the ports from there), and with
//! `--certs-dir` writes `ca.pem`, `apiclient_cert.pem`, `apiclient_key.pem` and
//! `apiclient_cert.p12` (password = mch_id) for clients, plus the APIv3 files
//! (`apiclient_serial_no.txt`, `apiv3_key.txt`, `v3_mode.txt`, `wechatpay_public_key.pem` +
//! `wechatpay_public_key_id.txt` and/or `wechatpay_platform_cert.pem`), also per merchant
//! under `<mch_id>/`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use minipay_sandbox::{Sandbox, SandboxConfig};

const DEFAULT_PORT: u16 = 8480;
const DEFAULT_TLS_PORT: u16 = 8443;

#[derive(Args)]
pub struct SandboxArgs {
    /// TOML configuration (merchants, apps, users, limits); the demo setup when absent.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Plain-HTTP port (default 8480; 0 = any free port).
    #[arg(long)]
    port: Option<u16>,
    /// HTTPS port (default 8443; 0 = any free port).
    #[arg(long)]
    tls_port: Option<u16>,
    /// Address to bind (default 127.0.0.1).
    #[arg(long)]
    host: Option<String>,
    /// A host name the HTTPS certificate must also be valid for (repeatable), e.g. the
    /// compose service name `sandbox`.
    #[arg(long = "tls-name", value_name = "NAME")]
    tls_names: Vec<String>,
    /// Write the CA and the merchants' client certificates here.
    #[arg(long, value_name = "DIR")]
    certs_dir: Option<PathBuf>,
    /// Multiply real waits (notification retries, refund processing): 0.001 = 1000× faster.
    #[arg(long, value_name = "X")]
    time_scale: Option<f64>,
}

fn config(args: &SandboxArgs) -> anyhow::Result<SandboxConfig> {
    let mut cfg = match &args.config {
        Some(path) => SandboxConfig::from_file(path)?,
        None => SandboxConfig::default(),
    };
    // Fixed ports by default so URLs can be written into other configs; `--port 0` (or a
    // port in the file) overrides them.
    cfg.port = args.port.unwrap_or(if cfg.port == 0 { DEFAULT_PORT } else { cfg.port });
    cfg.tls_port = args.tls_port.unwrap_or(if cfg.tls_port == 0 { DEFAULT_TLS_PORT } else { cfg.tls_port });
    cfg.tls_names.extend(args.tls_names.iter().cloned());
    if let Some(h) = &args.host {
        cfg.host.clone_from(h);
    }
    if let Some(x) = args.time_scale {
        cfg.time_scale = x;
    }
    cfg.validate()?;
    Ok(cfg)
}

async fn serve(args: &SandboxArgs) -> anyhow::Result<()> {
    let cfg = config(args)?;
    let sb = Sandbox::start(cfg).await?;
    if let Some(dir) = &args.certs_dir {
        sb.write_certs(dir)?;
        eprintln!("certificates written to {}", dir.display());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "SANDBOX_HTTP_URL={}", sb.http_url())?;
    writeln!(out, "SANDBOX_HTTPS_URL={}", sb.https_url())?;
    out.flush()?;
    drop(out);
    for m in &sb.config().merchants {
        eprintln!("merchant {} (apps {})", m.mch_id, m.appids.join(", "));
    }
    eprintln!("control API: {}/sandbox/  (Ctrl-C stops)", sb.http_url());
    wait_for_stop().await;
    sb.shutdown().await;
    Ok(())
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn run(args: &SandboxArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
