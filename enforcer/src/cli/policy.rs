//! `enforcer policy apply|check`.
use std::path::PathBuf;

use hyper::Method;

use super::Output;
use crate::{
    api::{ApplyAnswer, ApplyRequest, client},
    inventory::Inventory,
    policy::{self, PolicyFile},
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Have the running agent read, validate and apply FILE atomically. The agent
    /// watches FILE from then on. A rejected file changes nothing in the kernel: the
    /// agent answers with file, line and reason (exit code 4).
    Apply {
        file: PathBuf,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Validate FILE offline (no agent needed): syntax, fields, CIDRs, ports. With
    /// --inventory, also compile it and report how many kernel entries it needs.
    Check {
        file: PathBuf,
        #[arg(long)]
        inventory: Option<PathBuf>,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

pub fn execute(cli: &super::Cli, c: &Command) -> u8 {
    match c {
        Command::Apply { file, output } => apply(cli, file, *output),
        Command::Check {
            file,
            inventory,
            output,
        } => check(file, inventory.as_ref(), *output),
    }
}

fn apply(cli: &super::Cli, file: &std::path::Path, output: Output) -> u8 {
    // The agent reads, validates and compiles the file itself and answers a bad one
    // with file, line and reason (exit code 4); parsing it here as well would double
    // the time a large policy takes to apply. `enforcer policy check` works offline.
    let path = match std::fs::canonicalize(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return super::EXIT_REJECTED;
        }
    };
    let socket = cli.paths().socket;
    let req = ApplyRequest { path };
    let res = super::block_on(client::call::<ApplyRequest, ApplyAnswer>(
        &socket,
        Method::POST,
        "/v1/policy/apply",
        Some(&req),
    ));
    match res {
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
        Ok(Err(e)) => super::client_failure(&e),
        Ok(Ok(ans)) => {
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&ans).unwrap_or_else(|e| e.to_string())
                ),
                Output::Table => println!(
                    "applied {} as generation {} ({} policy entries, {} endpoints, {:.1} ms)",
                    ans.file,
                    ans.report.generation,
                    ans.report.policy_entries,
                    ans.report.endpoints,
                    ans.report.duration_ms
                ),
            }
            0
        }
    }
}

fn check(file: &std::path::Path, inventory: Option<&PathBuf>, output: Output) -> u8 {
    let parsed = match PolicyFile::load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_REJECTED;
        }
    };
    let mut summary = serde_json::json!({
        "file": file.display().to_string(),
        "valid": true,
        "policies": parsed.policies.len(),
    });
    if let Some(inv) = inventory {
        let inv = match Inventory::load(inv) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("error: {e}");
                return super::EXIT_REJECTED;
            }
        };
        match policy::compile(&parsed, &inv) {
            Ok(c) => {
                summary["rules"] = c.rules.len().into();
                summary["policy_entries"] = c.policy.len().into();
                summary["ipcache_entries"] = c.ipcache.len().into();
                summary["denylist_entries"] = c.denylist.len().into();
                summary["endpoints"] = c.endpoints.len().into();
            }
            Err(e) => {
                eprintln!("error: {e}");
                return super::EXIT_REJECTED;
            }
        }
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_else(|e| e.to_string())
        ),
        Output::Table => {
            let mut line = format!(
                "{}: valid, {} policies",
                file.display(),
                parsed.policies.len()
            );
            if let Some(n) = summary.get("policy_entries") {
                line.push_str(&format!(", {n} kernel policy entries"));
            }
            println!("{line}");
        }
    }
    0
}
