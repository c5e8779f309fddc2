//! The server's configuration as a test starts from: every default of
//! `punctual serve`, and nothing from the environment.

use punctual::config::ServeConfig;

/// `ServeConfig` with the defaults of its flags, read without the
/// environment: a test must not depend on what the developer exported.
pub fn serve_defaults() -> ServeConfig {
    ServeConfig::default()
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
