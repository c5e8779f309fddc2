//! Operator commands that are not calls to the Scheduler: making the digest
//! of a bearer token for the tokens file, and probing a server's health
//! (what the container image's `HEALTHCHECK` runs).

use std::io::{BufRead as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::error::{self, CliError};
use crate::auth::TokenDigest;

#[derive(Debug, Clone, Args)]
pub struct HashTokenArgs {
    /// The token. Read from standard input when omitted, which keeps it out
    /// of the shell history and the process list.
    pub token: Option<String>,
}

/// Prints the SHA-256 digest of a token, as the tokens file wants it.
pub fn hash_token(args: HashTokenArgs) -> ExitCode {
    let token = match args.token {
        Some(token) => token,
        None => {
            let mut line = String::new();
            if let Err(error) = std::io::stdin().lock().read_line(&mut line) {
                return error::report(&CliError::Io(error));
            }
            line
        }
    };
    // The server trims the token it receives, so the digest is of the
    // trimmed token too.
    let token = token.trim();
    if token.is_empty() {
        return error::report(&CliError::Usage("the token is empty".to_owned()));
    }
    match writeln!(
        std::io::stdout().lock(),
        "{}",
        TokenDigest::of(token).to_hex()
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error::report(&CliError::Io(error)),
    }
}

#[derive(Debug, Clone, Args)]
pub struct HealthCheckArgs {
    /// The server to probe [default: the address `serve` listens on, from
    /// PUNCTUAL_LISTEN_ADDR, reached through loopback when it is 0.0.0.0 or
    /// ::].
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,

    /// The address `serve` listens on (only read to find the default
    /// --server).
    #[arg(
        long,
        env = "PUNCTUAL_LISTEN_ADDR",
        default_value = "127.0.0.1:50051",
        hide = true
    )]
    pub listen_addr: SocketAddr,

    /// The health service name asked about; `""` asks about the server as a
    /// whole.
    #[arg(long, default_value = "punctual.v1.Scheduler")]
    pub service: String,

    /// Give up (and report unhealthy) after this long.
    #[arg(long, default_value = "5s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
}

impl HealthCheckArgs {
    fn target(&self) -> String {
        if let Some(server) = &self.server {
            return server.clone();
        }
        let mut address = self.listen_addr;
        // A server bound to every interface is reachable on loopback.
        if address.ip().is_unspecified() {
            address.set_ip(match address.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        format!("http://{address}")
    }
}

/// Asks `grpc.health.v1.Health/Check`; exits 0 on `SERVING` and 1 on any
/// other answer, or none within the timeout. Needs no token.
pub fn health_check(args: HealthCheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return error::report(&CliError::Io(error)),
    };
    let target = args.target();
    let check = async {
        let channel = super::connect_channel(&target).await?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await?;
        Ok::<_, CliError>(response.into_inner().status)
    };
    let status = match runtime.block_on(async { tokio::time::timeout(args.timeout, check).await }) {
        Ok(Ok(status)) => status,
        Ok(Err(error)) => return error::report(&error),
        Err(_) => {
            return error::report(&CliError::Connect {
                server: target,
                reason: format!(
                    "no answer within {}",
                    humantime::format_duration(args.timeout)
                ),
            });
        }
    };
    let name = ServingStatus::try_from(status)
        .map(|status| status.as_str_name())
        .unwrap_or("UNKNOWN");
    let _ = writeln!(std::io::stdout().lock(), "{name}");
    if status == ServingStatus::Serving as i32 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(server: Option<&str>, listen_addr: &str) -> HealthCheckArgs {
        HealthCheckArgs {
            server: server.map(str::to_owned),
            listen_addr: listen_addr.parse().unwrap(),
            service: String::new(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_probe_reaches_a_wildcard_listener_through_loopback() {
        assert_eq!(args(None, "0.0.0.0:7000").target(), "http://127.0.0.1:7000");
        assert_eq!(args(None, "[::]:7000").target(), "http://[::1]:7000");
        assert_eq!(args(None, "10.0.0.5:7000").target(), "http://10.0.0.5:7000");
        assert_eq!(
            args(Some("http://other:1"), "0.0.0.0:7000").target(),
            "http://other:1"
        );
    }
}
