//! The `punctual` binary: `punctual serve` runs the service; every other
//! subcommand is a client of a running server (see [`punctual::cli`]).

use std::process::ExitCode;

use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use punctual::app::Application;
use punctual::config::{Cli, Command, ServeConfig};
use punctual::telemetry::{Telemetry, TelemetryConfig};

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(config) => match serve(*config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                // As `main() -> anyhow::Result<()>` would report it.
                eprintln!("Error: {error:?}");
                ExitCode::FAILURE
            }
        },
        Command::HashToken(args) => punctual::cli::admin::hash_token(args),
        Command::HealthCheck(args) => punctual::cli::admin::health_check(args),
        Command::Descriptor(args) => punctual::cli::descriptor::descriptor(args),
        Command::Client(command) => punctual::cli::run(*command),
    }
}

/// Runs the service until SIGTERM or Ctrl-C.
fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // Migrations block in place, which needs the multi-thread runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The OTLP exporters do their I/O on this runtime: set them up inside
    // it, and flush them (bounded) while it still runs.
    let telemetry = {
        let _runtime = runtime.enter();
        Telemetry::init(
            &TelemetryConfig::from_env(),
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )?
    };
    let served = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        Application::build(config)
            .await?
            .run_until_stopped(shutdown)
            .await
    });
    telemetry.shutdown();
    served
}

/// SIGTERM (from an orchestrator) and Ctrl-C both start a graceful shutdown.
async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
    shutdown.cancel();
}
