//! The `kache-node` binary: parse flags, set up logging, bind, and run the node.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use kache_node::config::{Cli, LogFormat, NodeConfig};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Configuration errors are one clear line on stderr and exit code 2.
#[expect(
    clippy::print_stderr,
    reason = "the one place a configuration error reaches the user"
)]
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            let rendered = err.render().to_string();
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error: invalid arguments");
            eprintln!("{line}");
            return ExitCode::from(2);
        }
    };
    let http_addr = cli.http_addr;
    let log_format = cli.log_format;
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    init_logging(log_format);
    match serve(http_addr, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines go to stderr, filtered by RUST_LOG (default `info`). In JSON, each line is
/// one object: the event's fields at the top level, the current span's (a request's
/// `request_id`, `method`, `route`) under `span`.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn serve(http_addr: std::net::SocketAddr, config: NodeConfig) -> anyhow::Result<()> {
    let grpc_addr = config.grpc_addr;
    let resp_addr = config.resp_addr;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let http = TcpListener::bind(http_addr)
            .await
            .with_context(|| format!("cannot listen on {http_addr}"))?;
        let grpc = TcpListener::bind(grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {grpc_addr}"))?;
        let resp = match resp_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let bound_resp = match &resp {
            Some(listener) => listener
                .local_addr()
                .context("listener has no address")?
                .to_string(),
            None => "off".to_owned(),
        };
        let bound = http.local_addr().context("listener has no address")?;
        let bound_grpc = grpc.local_addr().context("listener has no address")?;
        tracing::info!(
            http_addr = %bound,
            grpc_addr = %bound_grpc,
            resp_addr = %bound_resp,
            node_id = %config.store.node_id,
            partitions = config.store.partitions,
            max_memory = config.store.max_memory,
            eviction = ?config.store.eviction,
            "listening"
        );
        let listeners = kache_node::Listeners { http, grpc, resp };
        kache_node::run(listeners, config, kache_node::shutdown::signal_received()).await?;
        Ok(())
    })
}
