//! `kubectl-kache`: parses the command line and prints; the work is in the library.
//! kubectl runs it as `kubectl kache ...` when it is on PATH.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kubectl_kache::target::Connection;

/// A kache CacheCluster at a glance, and its keys, through the Kubernetes API.
#[derive(Debug, Parser)]
#[command(name = "kubectl kache", bin_name = "kubectl kache", version)]
struct Cli {
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace of the CacheCluster (default: the context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// A kache token (default: the generated admin token of Secret `<name>-auth`).
    #[arg(long, env = "KACHE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Phase, members, roles, epochs, ownership, memory, conditions and the move in progress.
    Status { name: String },
    /// Follow a rebalance with a progress bar until the cluster is Available again.
    Watch {
        name: String,
        /// Give up after this long: seconds, or a number with s, m or h (e.g. 10m).
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// The partition and owners of a key.
    Locate { name: String, key: String },
    /// Print a key's value.
    Get { name: String, key: String },
    /// Store a value (from standard input when VALUE is left out).
    Put {
        name: String,
        key: String,
        value: Option<String>,
        /// Time to live in seconds.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Delete a key.
    Del { name: String, key: String },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (digits, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 10m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            #[expect(clippy::print_stderr, reason = "the error is the command's output")]
            {
                eprintln!("error: {error}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(cli: Cli) -> kubectl_kache::Result<()> {
    let connection = Connection::new(cli.context, cli.namespace).await?;
    let token = cli.token;
    let mut stdout = std::io::stdout().lock();
    let out = match cli.command {
        Command::Status { name } => kubectl_kache::status(&connection, &name, token)
            .await?
            .into_bytes(),
        Command::Watch { name, timeout } => {
            drop(stdout);
            return kubectl_kache::watch::run(&connection, &name, timeout).await;
        }
        Command::Locate { name, key } => kubectl_kache::locate(&connection, &name, token, &key)
            .await?
            .into_bytes(),
        Command::Get { name, key } => {
            let mut value = kubectl_kache::get(&connection, &name, token, &key).await?;
            if std::io::IsTerminal::is_terminal(&stdout) && !value.ends_with(b"\n") {
                value.push(b'\n');
            }
            value
        }
        Command::Put {
            name,
            key,
            value,
            ttl,
        } => {
            let value = match value {
                Some(value) => value.into_bytes(),
                None => {
                    let mut buffer = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buffer)
                        .map_err(|err| kubectl_kache::Error::Stdin(err.to_string()))?;
                    buffer
                }
            };
            kubectl_kache::put(&connection, &name, token, &key, &value, ttl).await?;
            Vec::new()
        }
        Command::Del { name, key } => {
            kubectl_kache::del(&connection, &name, token, &key).await?;
            Vec::new()
        }
    };
    let _ = stdout.write_all(&out);
    let _ = stdout.flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn the_command_line_parses_like_kubectl() {
        let cli = Cli::try_parse_from([
            "kubectl-kache",
            "-n",
            "shop",
            "put",
            "cache",
            "k",
            "v",
            "--ttl",
            "60",
        ])
        .expect("parse");
        assert_eq!(cli.namespace.as_deref(), Some("shop"));
        assert!(matches!(cli.command, Command::Put { ttl: Some(60), .. }));
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
