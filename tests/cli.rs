//! The client subcommands of the `punctual` binary, run as a user would run
//! them, against a real server started in-process (SQLite in a temp dir, the
//! publisher pointed at a closed local port so that every attempt fails).

#[path = "support/mod.rs"]
mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike as _, Utc};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use punctual::clock::SystemClock;
use punctual::config::ServeConfig;
use support::database::TestDatabase;
use support::free_port;
use support::in_process::InProcessServer;

const WAIT: Duration = Duration::from_secs(20);

/// A running server; stopped when the test ends.
struct Server {
    url: String,
    server: InProcessServer,
    _database: TestDatabase,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> Server {
        let database = TestDatabase::sqlite().expect("a temporary SQLite database");
        let mut config = support::config::local_server(
            &database.url,
            &format!("http://{}/publish", free_port()),
        );
        config.publisher_secret = None;
        config.max_attempts = 2;
        config.retry_base_delay = Duration::from_millis(50);
        config.retry_max_delay = Duration::from_millis(100);
        adjust(&mut config);
        let server = InProcessServer::start(config, Arc::new(SystemClock)).await;
        Server {
            url: format!("http://{}", server.addr),
            server,
            _database: database,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
    }

    /// Runs `punctual ARGS…` against this server (through PUNCTUAL_SERVER).
    async fn run(&self, args: &[&str]) -> Run {
        run_with_server(&self.url, args).await
    }

    /// Runs a command that must succeed and print JSON; returns the JSON.
    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        let run = self.run(&args).await;
        run.assert_success();
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|error| panic!("{args:?} printed invalid JSON ({error}):\n{run:?}"))
    }
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_success(&self) {
        assert_eq!(self.code, Some(0), "command failed: {self:#?}");
    }
}

/// The binary with nothing of the developer's environment.
fn punctual() -> tokio::process::Command {
    let mut command = support::process::punctual();
    // The system zone must not matter: every test that shows times says --tz.
    command.env("TZ", "UTC");
    command
}

async fn run_with_server(server: &str, args: &[&str]) -> Run {
    run_with_env(&[("PUNCTUAL_SERVER", server)], args).await
}

async fn run_with_env(env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut command = punctual();
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("punctual {args:?} did not finish"))
        .expect("run the binary");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// October of next year: always in the future, always the same shape.
fn next_october() -> i32 {
    Utc::now().year() + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_show_list_and_cancel() {
    let server = Server::start().await;
    let year = next_october();
    let local = format!("{year}-10-15T14:00");

    // The table form: a detail view in the --tz zone.
    let run = server
        .run(&[
            "schedule",
            "--business",
            "acme",
            "--content",
            "launch",
            "--platform",
            "instagram",
            "--local",
            &local,
            "--zone",
            "Europe/Paris",
            "--payload",
            r#"{"text":"Hello"}"#,
            "--tz",
            "America/New_York",
        ])
        .await;
    run.assert_success();
    assert!(run.stdout.contains("Status        scheduled"), "{run:?}");
    // 14:00 in Paris is 08:00 in New York (both on summer time mid-October).
    assert!(
        run.stdout.contains(&format!(
            "When          {year}-10-15 08:00 America/New_York"
        )),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains(&format!("Local time    {year}-10-15T14:00:00 Europe/Paris")),
        "{run:?}"
    );
    assert!(
        run.stdout.contains(r#"Payload       {"text":"Hello"}"#),
        "{run:?}"
    );
    let id = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("ID"))
        .map(str::trim)
        .expect("an ID line")
        .to_owned();

    // `show` finds it, in both forms.
    let run = server.run(&["show", &id, "--tz", "Europe/Paris"]).await;
    run.assert_success();
    assert!(run.stdout.contains(&id), "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("{year}-10-15 14:00 Europe/Paris")),
        "{run:?}"
    );
    let shown = server.json(&["show", &id]).await;
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["status"], "SCHEDULED");
    assert_eq!(shown["payload_json"], r#"{"text":"Hello"}"#);
    assert_eq!(
        shown["scheduled_for"],
        format!("{year}-10-15T12:00:00Z").as_str()
    );

    // Two more posts, then `list --output json` parses back and holds all.
    for (content, at) in [
        ("teaser", format!("{year}-10-01T09:00:00Z")),
        ("recap", format!("{year}-10-30T18:00:00+01:00")),
    ] {
        let run = server
            .run(&[
                "schedule",
                "--business",
                "acme",
                "--content",
                content,
                "--platform",
                "facebook",
                "--at",
                &at,
            ])
            .await;
        run.assert_success();
    }
    let listed = server.json(&["list", "--business", "acme"]).await;
    let posts = listed["schedules"].as_array().expect("schedules");
    let contents: Vec<&str> = posts
        .iter()
        .map(|post| post["content_id"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["teaser", "launch", "recap"], "{listed:#}");
    assert!(posts.iter().any(|post| post["id"] == id.as_str()));
    // Fields holding their default are left out, as grpcurl leaves them out.
    assert_eq!(listed.get("next_page_token"), None, "{listed:#}");

    // Pages of one: without --all one page and a token, with --all all three.
    let first = server
        .json(&["list", "--business", "acme", "--page-size", "1"])
        .await;
    assert_eq!(first["schedules"].as_array().unwrap().len(), 1);
    assert!(
        first["next_page_token"]
            .as_str()
            .is_some_and(|token| !token.is_empty())
    );
    let all = server
        .json(&["list", "--business", "acme", "--page-size", "1", "--all"])
        .await;
    assert_eq!(all["schedules"].as_array().unwrap().len(), 3, "{all:#}");
    let run = server
        .run(&["list", "--business", "acme", "--page-size", "1"])
        .await;
    assert!(run.stdout.contains("(more: --page-token "), "{run:?}");

    // Filters: by platform and by a local window.
    let instagram = server
        .json(&["list", "--business", "acme", "--platform", "instagram"])
        .await;
    assert_eq!(instagram["schedules"].as_array().unwrap().len(), 1);
    let window = server
        .json(&[
            "list",
            "--business",
            "acme",
            "--from",
            &format!("{year}-10-10"),
            "--to",
            &format!("{year}-10-20T00:00"),
            "--tz",
            "Europe/Paris",
        ])
        .await;
    assert_eq!(window["schedules"][0]["id"], id.as_str(), "{window:#}");
    assert_eq!(window["schedules"].as_array().unwrap().len(), 1);

    // The table lists them in the --tz zone.
    let run = server
        .run(&["list", "--business", "acme", "--tz", "Europe/Paris"])
        .await;
    run.assert_success();
    assert!(run.stdout.starts_with("ID "), "{run:?}");
    assert!(run.stdout.contains("WHEN (Europe/Paris)"), "{run:?}");
    assert!(
        run.stdout.lines().any(|line| line.contains(&id)
            && line.contains(&format!("{year}-10-15 14:00"))
            && line.contains("scheduled")
            && line.contains("instagram")),
        "{run:?}"
    );

    // Reschedule, then cancel; both show the post as it now is.
    let moved = server
        .json(&["reschedule", &id, "--local", &format!("{year}-10-16T10:30")])
        .await;
    assert_eq!(
        moved["local_time"],
        format!("{year}-10-16T10:30:00").as_str()
    );
    assert_eq!(moved["time_zone"], "Europe/Paris");
    let run = server.run(&["cancel", &id]).await;
    run.assert_success();
    assert!(run.stdout.contains("Status        cancelled"), "{run:?}");
    let cancelled = server.json(&["show", &id]).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    let listed = server
        .json(&["list", "--business", "acme", "--status", "cancelled"])
        .await;
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 1);

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_exit_1_with_the_servers_message() {
    let server = Server::start().await;
    let year = next_october();

    let run = server
        .run(&[
            "schedule",
            "--business",
            "acme",
            "--content",
            "launch",
            "--platform",
            "instagram",
            "--local",
            &format!("{year}-10-15T14:00"),
            "--zone",
            "Mars/Olympus",
        ])
        .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr.contains(r#"unknown time zone "Mars/Olympus""#),
        "{run:?}"
    );
    assert!(run.stderr.contains("(INVALID_ARGUMENT)"), "{run:?}");

    // A post that does not exist.
    let run = server
        .run(&["show", "01900000-0000-7000-8000-000000000000"])
        .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("not found (NOT_FOUND)"), "{run:?}");

    // JSON output does not change where errors go.
    let run = server
        .run(&["cancel", "not-a-uuid", "--output", "json"])
        .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.starts_with("error: "), "{run:?}");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_and_an_absent_server_exits_1() {
    // Missing --at/--local/--next-free-slot: clap's usage error.
    let unreachable = format!("http://{}", free_port());
    let run = run_with_server(
        &unreachable,
        &[
            "schedule",
            "--business",
            "b",
            "--content",
            "c",
            "--platform",
            "x",
        ],
    )
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    // A display zone that does not exist.
    let run = run_with_server(&unreachable, &["list", "--tz", "Nowhere/City"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("unknown time zone"), "{run:?}");
    // A weekly bulk without its weekdays.
    let run = run_with_server(
        &unreachable,
        &[
            "bulk",
            "--business",
            "b",
            "--platform",
            "x",
            "--content",
            "a,b",
            "--pattern",
            "weekly",
            "--start-date",
            "2030-01-01",
            "--time",
            "09:00",
            "--zone",
            "UTC",
        ],
    )
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("--weekdays"), "{run:?}");

    // Nobody listening.
    let run = run_with_server(&unreachable, &["list"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("cannot reach the server"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

/// The calendar of a month with posts made with `schedule --local`: each
/// post's local time under its day, two posts of a day on two lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_shows_posts_on_their_days() {
    let server = Server::start().await;
    let year = next_october();
    for (day, time, platform) in [
        ("07", "09:00", "facebook"),
        ("07", "15:00", "linkedin"),
        ("15", "14:00", "instagram"),
        ("31", "23:30", "x"),
    ] {
        let run = server
            .run(&[
                "schedule",
                "--business",
                "cal",
                "--content",
                &format!("post-{day}-{time}"),
                "--platform",
                platform,
                "--local",
                &format!("{year}-10-{day}T{time}"),
                "--zone",
                "Europe/Paris",
            ])
            .await;
        run.assert_success();
    }
    // Another business's post must not show.
    let run = server
        .run(&[
            "schedule",
            "--business",
            "other",
            "--content",
            "no",
            "--platform",
            "x",
            "--local",
            &format!("{year}-10-20T12:00"),
            "--zone",
            "Europe/Paris",
        ])
        .await;
    run.assert_success();

    let month = format!("{year}-10");
    let run = server
        .run(&[
            "calendar",
            "--business",
            "cal",
            "--month",
            &month,
            "--tz",
            "Europe/Paris",
            "--ascii",
        ])
        .await;
    run.assert_success();
    let text = &run.stdout;
    assert!(text.is_ascii(), "{text}");
    assert!(
        text.starts_with(&format!(" October {year} (Europe/Paris)\n Mon ")),
        "{text}"
    );
    assert_eq!(posts_under_day(text, 7), ["F 09:00", "L 15:00"], "{text}");
    assert_eq!(posts_under_day(text, 15), ["I 14:00"], "{text}");
    assert_eq!(posts_under_day(text, 31), ["X 23:30"], "{text}");
    assert!(posts_under_day(text, 20).is_empty(), "{text}");

    // In New York the last post is still on the 31st, at 18:30.
    let run = server
        .run(&[
            "calendar",
            "--business",
            "cal",
            "--month",
            &month,
            "--tz",
            "America/New_York",
            "--ascii",
        ])
        .await;
    run.assert_success();
    assert_eq!(posts_under_day(&run.stdout, 31), ["X 18:30"], "{run:?}");

    // The JSON form carries the same days.
    let calendar = server
        .json(&[
            "calendar",
            "--business",
            "cal",
            "--month",
            &month,
            "--tz",
            "Europe/Paris",
        ])
        .await;
    let day = calendar["weeks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|week| week["days"].as_array().unwrap())
        .find(|day| day["date"] == format!("{year}-10-07").as_str())
        .expect("the 7th");
    let times: Vec<&str> = day["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["local_time"].as_str().unwrap())
        .collect();
    assert_eq!(times, ["09:00", "15:00"], "{calendar:#}");
    assert_eq!(day["in_month"], true);

    server.stop().await;
}

/// The posts drawn under day `day` of an ASCII calendar: the lines after the
/// line holding the day's number, read at the day's column, up to the next
/// line of day numbers.
fn posts_under_day(calendar: &str, day: u32) -> Vec<String> {
    let is_day_line = |line: &str| {
        !line.trim().is_empty()
            && line.split_whitespace().all(|token| {
                token
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<u32>()
                    .is_ok()
            })
    };
    let lines: Vec<&str> = calendar.lines().collect();
    let wanted = day.to_string();
    for (index, line) in lines.iter().enumerate() {
        if !is_day_line(line) {
            continue;
        }
        // Byte offsets equal columns: ASCII only.
        let mut offset = 0;
        for token in line.split_whitespace() {
            let start = offset + line[offset..].find(token).unwrap();
            offset = start + token.len();
            if token.trim_matches(|c| c == '[' || c == ']') != wanted {
                continue;
            }
            return lines[index + 1..]
                .iter()
                .take_while(|line| !is_day_line(line) && !line.is_empty())
                .filter_map(|line| line.get(start..))
                .map(|rest| rest.split("  ").next().unwrap_or("").trim().to_owned())
                .filter(|cell| !cell.is_empty())
                .collect();
        }
    }
    panic!("day {day} not found in\n{calendar}");
}

/// A post that fails against the closed port: its attempts show in `show`,
/// it becomes a dead letter, and can be discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_history_and_dead_letters() {
    let server = Server::start().await;
    let soon = (Utc::now() + chrono::Duration::milliseconds(500)).to_rfc3339();
    let post = server
        .json(&[
            "schedule",
            "--business",
            "dl",
            "--content",
            "doomed",
            "--platform",
            "x",
            "--at",
            &soon,
        ])
        .await;
    let id = post["id"].as_str().unwrap().to_owned();

    let deadline = tokio::time::Instant::now() + WAIT;
    let dead = loop {
        let shown = server.json(&["show", &id]).await;
        if shown["status"] == "DEAD_LETTERED" {
            break shown;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered: {shown:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let history = dead["attempt_history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{dead:#}");
    assert_eq!(history[0]["attempt"], 1);

    let run = server.run(&["show", &id, "--tz", "UTC"]).await;
    run.assert_success();
    let table = run
        .stdout
        .split("Attempt history:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no attempt history in {run:?}"));
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("#  STARTED (UTC)"), "{run:?}");
    assert!(rows[1].starts_with("1  "), "{run:?}");
    assert!(rows[2].starts_with("2  "), "{run:?}");

    let letters = server
        .json(&["dead-letters", "list", "--business", "dl"])
        .await;
    assert_eq!(letters["schedules"][0]["id"], id.as_str(), "{letters:#}");
    let run = server
        .run(&["dead-letters", "list", "--business", "dl"])
        .await;
    run.assert_success();
    assert!(run.stdout.contains("LAST ERROR"), "{run:?}");
    assert!(run.stdout.contains(&id), "{run:?}");

    let discarded = server.json(&["dead-letters", "discard", &id]).await;
    assert_eq!(discarded["status"], "DISCARDED");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_and_queue_commands_print_parsable_json() {
    let server = Server::start().await;
    let year = next_october();
    let planned = server
        .json(&[
            "bulk",
            "--business",
            "b",
            "--platform",
            "linkedin",
            "--content",
            "a,b,c",
            "--pattern",
            "weekly",
            "--weekdays",
            "mon,thu",
            "--start-date",
            &format!("{year}-10-01"),
            "--time",
            "09:30",
            "--zone",
            "Europe/Paris",
            "--validate-only",
        ])
        .await;
    let planned = planned["schedules"].as_array().unwrap();
    assert_eq!(planned.len(), 3);
    assert!(planned.iter().all(|post| post.get("id").is_none()));
    assert!(
        planned
            .iter()
            .all(|post| post["local_time"].as_str().unwrap().ends_with("T09:30:00")),
        "{planned:?}"
    );

    let run = server
        .run(&[
            "bulk",
            "--business",
            "b",
            "--platform",
            "linkedin",
            "--content",
            "a,b",
            "--pattern",
            "daily",
            "--start-date",
            &format!("{year}-10-01"),
            "--time",
            "09:30",
            "--zone",
            "Europe/Paris",
            "--tz",
            "Europe/Paris",
        ])
        .await;
    run.assert_success();
    assert!(
        run.stdout.contains(&format!("{year}-10-02 09:30")),
        "{run:?}"
    );

    let stats = server.json(&["queue", "--business", "b"]).await;
    let scheduled = stats["counts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|count| count["status"] == "SCHEDULED")
        .map(|count| count["count"].clone());
    assert_eq!(scheduled, Some(Value::from(2)), "{stats:#}");

    let pause = server
        .json(&["pause", "--business", "b", "--platform", "linkedin"])
        .await;
    assert_eq!(pause["platform"], "linkedin");
    let pauses = server.json(&["pauses"]).await;
    assert_eq!(pauses["pauses"][0]["business_id"], "b", "{pauses:#}");
    let resumed = server
        .json(&["resume", "--business", "b", "--platform", "linkedin"])
        .await;
    // Nothing was missed: the default, left out.
    assert_eq!(resumed.get("missed"), None, "{resumed:#}");

    server.stop().await;
}

/// The largest batch, with a payload, fits the CLI's default message limit,
/// and a retry with its request id prints the same posts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_of_ten_thousand_posts_and_its_retry_print_the_same_ids() {
    let server = Server::start().await;
    let content: Vec<String> = (0..10_000).map(|i| format!("c{i:05}")).collect();
    let content = content.join(",");
    let payload = format!("{{\"text\":\"{}\"}}", "p".repeat(1_000));
    let start_date = format!("{}-01-01", next_october());
    let args = [
        "bulk",
        "--business",
        "big",
        "--platform",
        "x",
        "--content",
        &content,
        "--pattern",
        "every-n-hours",
        "--interval-hours",
        "1",
        "--start-date",
        &start_date,
        "--time",
        "00:00",
        "--zone",
        "UTC",
        "--payload",
        &payload,
        "--request-id",
        "cli-big-bulk",
    ];
    let ids = |answer: &Value| -> Vec<String> {
        answer["schedules"]
            .as_array()
            .expect("schedules")
            .iter()
            .map(|post| post["id"].as_str().expect("an id").to_owned())
            .collect()
    };
    let first = ids(&server.json(&args).await);
    assert_eq!(first.len(), 10_000);
    assert!(first.iter().all(|id| !id.is_empty()));
    let retry = ids(&server.json(&args).await);
    assert_eq!(
        retry, first,
        "the retry prints the same posts in the same order"
    );
    server.stop().await;
}

/// `watch` prints one line per event as it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_events() {
    let server = Server::start().await;
    let year = next_october();
    let mut watcher = punctual()
        .args(["watch", "--business", "w", "--output", "json"])
        .env("PUNCTUAL_SERVER", &server.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start watch");
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();

    // The watcher subscribes asynchronously: schedule until it sees one.
    let deadline = tokio::time::Instant::now() + WAIT;
    let event = loop {
        let run = server
            .run(&[
                "schedule",
                "--business",
                "w",
                "--content",
                "watched",
                "--platform",
                "x",
                "--local",
                &format!("{year}-10-01T12:00"),
                "--zone",
                "UTC",
            ])
            .await;
        run.assert_success();
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
        {
            break line.expect("read").expect("a line before the end");
        }
        assert!(tokio::time::Instant::now() < deadline, "no event seen");
    };
    let event: Value = serde_json::from_str(&event).expect("one JSON object per line");
    assert_eq!(event["type"], "SCHEDULED");
    assert_eq!(event["schedule"]["content_id"], "watched");

    watcher.start_kill().expect("stop watch");
    let _ = watcher.wait().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_as_a_bearer_header() {
    use punctual::auth::{TokenDigest, TokenGrant};
    let grant =
        TokenGrant::parse_assignment(&format!("{}=acme", TokenDigest::of("acme-token").to_hex()))
            .unwrap();
    let server = Server::start_with(|config| config.auth_token_hashes = vec![grant]).await;
    let list = ["list", "--business", "acme", "--output", "json"];

    let run = server.run(&list).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("(UNAUTHENTICATED)"), "{run:?}");
    assert!(run.stderr.contains("PUNCTUAL_TOKEN"), "{run:?}");

    let with_token = [
        ("PUNCTUAL_SERVER", server.url.as_str()),
        ("PUNCTUAL_TOKEN", "acme-token"),
    ];
    run_with_env(&with_token, &list).await.assert_success();
    let mut flagged = list.to_vec();
    flagged.extend(["--token", "acme-token"]);
    server.run(&flagged).await.assert_success();

    let other = ["list", "--business", "globex"];
    let run = run_with_env(&with_token, &other).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("(PERMISSION_DENIED)"), "{run:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_exits_zero_only_for_a_serving_server() {
    use punctual::auth::{TokenDigest, TokenGrant};
    let grant =
        TokenGrant::parse_assignment(&format!("{}=*", TokenDigest::of("root").to_hex())).unwrap();
    // Tokens are required, yet the probe needs none.
    let server = Server::start_with(|config| config.auth_token_hashes = vec![grant]).await;
    let run = server.run(&["health-check", "--server", &server.url]).await;
    run.assert_success();
    assert_eq!(run.stdout.trim(), "SERVING");

    // The default target is the listen address, through loopback.
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let listen_addr = format!("0.0.0.0:{port}");
    run_with_env(&[("PUNCTUAL_LISTEN_ADDR", &listen_addr)], &["health-check"])
        .await
        .assert_success();

    let run = server
        .run(&[
            "health-check",
            "--server",
            &server.url,
            "--service",
            "no.such.Service",
        ])
        .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    server.stop().await;

    let closed = format!("http://{}", free_port());
    let run = run_with_env(
        &[],
        &["health-check", "--server", &closed, "--timeout", "2s"],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
}

#[tokio::test]
async fn hash_token_prints_the_sha256_of_the_token() {
    let expected = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
    let run = run_with_env(&[], &["hash-token", "secret"]).await;
    run.assert_success();
    assert_eq!(run.stdout, format!("{expected}\n"));

    let mut child = punctual()
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the binary");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"secret\n")
        .await
        .expect("write the token");
    drop(stdin);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("hash-token finishes")
        .expect("output");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{expected}\n")
    );
}
