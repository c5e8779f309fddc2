//! Test databases on PostgreSQL: each test makes its own, and drops it when
//! done so that runs do not pile databases up on the server.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// Drops database `name` (if it still exists), closing its connections.
/// Blocks, on a thread of its own: it is called from `Drop`, which may run
/// inside a test's runtime, where a future cannot be blocked on.
pub fn drop_database(admin_url: String, name: String) {
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        runtime.block_on(async {
            let mut admin = AsyncPgConnection::establish(&admin_url)
                .await
                .map_err(|error| error.to_string())?;
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .map_err(|error| format!("DROP DATABASE {name}: {error}"))
        })
    })
    .join();
    match dropped {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("warning: test database left behind: {error}"),
        Err(_) => eprintln!("warning: dropping the test database panicked"),
    }
}
