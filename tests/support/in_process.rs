//! The server started inside the test process, as `punctual serve` builds
//! it (`Application::build`), for tests that reach into its database or set
//! its clock; stopped as on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use punctual::app::Application;
use punctual::clock::Clock;
use punctual::config::ServeConfig;

/// A running in-process server.
pub struct InProcessServer {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessServer {
    /// Builds the application (its database migrated, its listener bound)
    /// and runs it on this runtime.
    pub async fn start(config: ServeConfig, clock: Arc<dyn Clock>) -> InProcessServer {
        let app = Application::build_with_clock(config, clock)
            .await
            .expect("build the application");
        let addr = app.local_addr().expect("the bound address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        InProcessServer {
            addr,
            shutdown,
            task,
        }
    }

    /// A graceful stop, as on SIGTERM; panics unless it ends cleanly
    /// within 20 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("server stops within 20 s")
            .expect("server task")
            .expect("server exits cleanly");
    }
}
