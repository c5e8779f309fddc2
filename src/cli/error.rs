//! What can make a client command fail, and the one place that reports it:
//! a message on stderr and the exit code (1 for the server's refusals and
//! connection problems, 2 for a command line that makes no sense).

use std::io::Write as _;
use std::process::ExitCode;

use tonic::Code;

use super::output::clean;

/// Said after any refusal of a local time that falls in a daylight-saving
/// gap (the server's message names the proto field instead).
pub const DST_GAP_HINT: &str =
    "hint: --shift-forward moves a time that falls in a daylight-saving gap forward by the gap";

/// Why a client command failed.
#[derive(Debug)]
pub enum CliError {
    /// The server answered with an error status.
    Server(tonic::Status),
    /// The server could not be reached.
    Connect { server: String, reason: String },
    /// The flags parse but cannot be used (exit code 2, like clap's errors).
    Usage(String),
    /// The server's answer makes no sense (e.g. a page token that repeats).
    Protocol(String),
    /// Writing the output failed.
    Io(std::io::Error),
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Server(status)
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError::Io(error)
    }
}

/// Prints `error` to stderr and returns the exit code that goes with it.
pub fn report(error: &CliError) -> ExitCode {
    let (message, code) = match error {
        // The reader went away (`punctual list | head`): nothing to say.
        CliError::Io(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            return ExitCode::SUCCESS;
        }
        CliError::Io(error) => (format!("error: cannot write the output: {error}"), 1),
        CliError::Usage(message) => (format!("error: {message}"), 2),
        CliError::Protocol(message) => (format!("error: unexpected answer: {message}"), 1),
        CliError::Connect { server, reason } => (
            format!(
                "error: cannot reach the server at {server}: {reason}\n\
                 hint: is `punctual serve` running there? Set --server or PUNCTUAL_SERVER."
            ),
            1,
        ),
        CliError::Server(status) => (describe_status(status), 1),
    };
    // Nothing better to do if stderr is gone too.
    let _ = writeln!(std::io::stderr().lock(), "{message}");
    ExitCode::from(code)
}

/// `error: <the server's message> (<CODE>)`, plus a hint for the codes that
/// say more about the setup than about the request.
fn describe_status(status: &tonic::Status) -> String {
    let message = match status.message().trim() {
        "" => status.code().description().to_owned(),
        message => clean(message),
    };
    let code = code_name(status.code());
    let hint = match status.code() {
        Code::Unimplemented => {
            "\nhint: the server does not offer this call yet; it may be older than this client."
        }
        Code::Unavailable => "\nhint: the server is unreachable or overloaded; try again.",
        Code::Unauthenticated => {
            "\nhint: set PUNCTUAL_TOKEN (or --token) to a token this server knows."
        }
        Code::PermissionDenied => {
            "\nhint: this token is bound to other businesses; name one of its businesses."
        }
        Code::Aborted => "\nhint: the post changed meanwhile; `punctual show ID` has its version.",
        _ => "",
    };
    let dst_hint = if message.contains("DST_GAP_SHIFT_FORWARD") {
        format!("\n{DST_GAP_HINT}")
    } else {
        String::new()
    };
    format!("error: {message} ({code}){hint}{dst_hint}")
}

/// The canonical gRPC name of a code, e.g. `INVALID_ARGUMENT`.
pub fn code_name(code: Code) -> String {
    let camel = format!("{code:?}");
    let mut name = String::with_capacity(camel.len() + 4);
    for (index, character) in camel.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(character.to_ascii_uppercase());
    }
    name
}

/// An error and its causes on one line (transport errors hide the useful
/// part, e.g. "connection refused", in their sources).
pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_canonical() {
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
    }

    #[test]
    fn status_message_and_code_are_shown() {
        let status = tonic::Status::invalid_argument("time_zone: unknown time zone \"Mars\"");
        assert_eq!(
            describe_status(&status),
            "error: time_zone: unknown time zone \"Mars\" (INVALID_ARGUMENT)"
        );
        let status = tonic::Status::unimplemented("");
        assert!(describe_status(&status).contains("(UNIMPLEMENTED)\nhint:"));
        let status = tonic::Status::invalid_argument(
            "local_time: … set dst_gap_policy to DST_GAP_SHIFT_FORWARD",
        );
        assert!(describe_status(&status).ends_with(DST_GAP_HINT));
    }

    #[test]
    fn control_characters_from_the_server_are_neutralised() {
        let status = tonic::Status::not_found("post \u{1b}[31mx\u{1b}[0m not found");
        assert!(!describe_status(&status).contains('\u{1b}'));
    }
}
