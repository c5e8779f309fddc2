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
