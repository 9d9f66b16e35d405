//! `minipay keys create --role ROLE --name NAME [--webhook-url URL]`: creates an API client
//! and prints its key (and webhook signing secret) once. Only the key's SHA-256 is stored.

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
    let KeysCommand::Create(c) = &args.command;
    let Some(role) = Role::parse(&c.role) else {
        eprintln!("error: unknown role {:?} (client, finance, approver, viewer, admin)", c.role);
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
