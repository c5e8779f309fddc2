//! The server's configuration as a test starts from: every default of
//! `punctual serve`, and nothing from the environment.

use clap::{Args as _, FromArgMatches as _};

use punctual::config::ServeConfig;

/// `ServeConfig` with the defaults of its flags. `ServeConfig::with_defaults`
/// also reads `PUNCTUAL_*` variables, as the binary does; a test must not
/// depend on what the developer exported, so the same flags are parsed here
/// with their environment variables taken off.
pub fn serve_defaults() -> ServeConfig {
    let command =
        ServeConfig::augment_args(clap::Command::new("punctual")).mut_args(|arg| arg.env(None));
    let matches = command
        .try_get_matches_from(["punctual"])
        .expect("the defaults of `punctual serve` parse");
    ServeConfig::from_arg_matches(&matches).expect("the defaults of `punctual serve` are valid")
}

/// The defaults, on an ephemeral loopback port, with a database and a
/// publisher.
pub fn local_server(database_url: &str, publisher_url: &str) -> ServeConfig {
    let mut config = serve_defaults();
    config.listen_addr = "127.0.0.1:0".parse().expect("a loopback address");
    config.database_url = database_url.to_owned();
    config.publisher_url = publisher_url.to_owned();
    config
}
