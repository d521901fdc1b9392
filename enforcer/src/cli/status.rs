//! `enforcer status`: what is attached and pinned, the live policy, and per-workload
//! verdict counters by reason.
use hyper::Method;

use super::Output;
use crate::{api::client, status::Status};

/// Show the agent's status: programs attached per workload interface, the policy
/// generation in force (and the last rejected reload, if any), allowed and dropped
/// packets per workload and direction by reason (port not declared, peer not
/// allowed, CIDR denied), and the fill of every kernel map.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn execute(cli: &super::Cli, a: &Args) -> u8 {
    let socket = cli.paths().socket;
    let res = super::block_on(client::call::<(), Status>(
        &socket,
        Method::GET,
        "/v1/status",
        None,
    ));
    match res {
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
        Ok(Err(e)) => super::client_failure(&e),
        Ok(Ok(status)) => {
            match a.output {
                Output::Json => match serde_json::to_string_pretty(&status) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return 1;
                    }
                },
                Output::Table => print!("{}", crate::status::render_table(&status)),
            }
            0
        }
    }
}
