//! `minipay keys create --role ROLE --name NAME [--webhook-url URL]`: creates an API client
//! and prints its key (and webhook signing secret) once. Only the key's SHA-256 is stored.
//!
//! `minipay keys disable --name NAME | --id UUID`: disables a client. Its commit notifies
//! every api replica, which drops its cached keys (`minipay_api::keys`), so the key is
//! refused (401) as soon as the disable commits, on every replica; the worker stops delivering the client's webhooks (they stay pending with the
//! reason). The disable is written to the audit log with the operator (`$USER`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use minipay_config::Config;
use minipay_store::clients::{self, Role};

#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a client with a new key.
    Create(CreateKey),
    /// Disable a client: its key stops working at once, its webhooks are held back.
    Disable(DisableKey),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["name", "id"])))]
struct DisableKey {
    /// The client's name (refused when several enabled clients have it: use --id).
    #[arg(long)]
    name: Option<String>,
    /// The client's id (printed by `keys create`).
    #[arg(long)]
    id: Option<uuid::Uuid>,
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct CreateKey {
    /// client, finance, approver, viewer or admin.
    #[arg(long)]
    role: String,
    /// Who holds the key (shown in audit logs).
    #[arg(long)]
    name: String,
    /// Where this client's webhooks go (a signing secret is generated and printed).
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(args: &KeysArgs) -> ExitCode {
    match &args.command {
        KeysCommand::Create(c) => create(c),
        KeysCommand::Disable(d) => disable(d),
    }
}

fn create(c: &CreateKey) -> ExitCode {
    let Some(role) = Role::parse(&c.role) else {
        eprintln!("error: unknown role {:?} (client, finance, approver, viewer, admin, internal)", c.role);
        return ExitCode::from(2);
    };
    if c.name.trim().is_empty() {
        eprintln!("error: --name must not be empty");
        return ExitCode::from(2);
    }
    if c.webhook_url.as_ref().is_some_and(|u| !(u.starts_with("https://") || u.starts_with("http://"))) {
        eprintln!("error: --webhook-url must be an http(s) URL");
        return ExitCode::from(2);
    }
    let result = crate::serve_cmd::runtime().and_then(|rt| {
        rt.block_on(async {
            let config = Config::load(c.config.as_deref())?;
            let pool = crate::serve_cmd::connect(&config).await?;
            let mut conn = pool.acquire().await?;
            clients::create(&mut conn, &c.name, role, c.webhook_url.as_deref()).await.context("create the key")
        })
    });
    match result {
        Ok(created) => {
            println!("id={}", created.client.id);
            println!("role={}", created.client.role);
            println!("key={}", created.key);
            if let Some(s) = &created.webhook_secret {
                println!("webhook_secret={s}");
            }
            eprintln!("The key is shown once; only its SHA-256 is stored.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Who ran the command, for the audit log.
fn operator() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

fn disable(d: &DisableKey) -> ExitCode {
    let result = crate::serve_cmd::runtime().and_then(|rt| {
        rt.block_on(async {
            let config = Config::load(d.config.as_deref())?;
            let pool = crate::serve_cmd::connect(&config).await?;
            let mut tx = pool.begin().await?;
            let id = match (&d.id, &d.name) {
                (Some(id), _) => {
                    clients::get(&mut tx, *id).await?.with_context(|| format!("no client with id {id}"))?;
                    *id
                }
                (None, Some(name)) => pick_by_name(&clients::find_by_name(&mut tx, name).await?, name)?,
                (None, None) => anyhow::bail!("give --name or --id"),
            };
            let changed = clients::disable(&mut tx, id, &operator()).await.context("disable the key")?;
            tx.commit().await?;
            Ok((id, changed))
        })
    });
    match result {
        Ok((id, true)) => {
            println!("disabled id={id}");
            ExitCode::SUCCESS
        }
        Ok((id, false)) => {
            println!("already disabled id={id}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The one client called `name`: among several, the one still enabled; more than one
/// enabled is refused (names are not unique), listing their ids.
fn pick_by_name(found: &[(clients::ApiClient, bool)], name: &str) -> anyhow::Result<uuid::Uuid> {
    let enabled: Vec<_> = found.iter().filter(|(_, disabled)| !disabled).collect();
    match (found, enabled.as_slice()) {
        ([], _) => anyhow::bail!("no client named {name:?}"),
        (_, [(c, _)]) => Ok(c.id),
        ([(c, _)], []) => Ok(c.id),
        (_, []) => anyhow::bail!("every client named {name:?} is already disabled"),
        (_, many) => {
            let ids: Vec<String> = many.iter().map(|(c, _)| format!("{} ({})", c.id, c.role)).collect();
            anyhow::bail!("{} enabled clients are named {name:?}: use --id with one of {}", many.len(), ids.join(", "))
        }
    }
}
