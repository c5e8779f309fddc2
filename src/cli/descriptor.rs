//! `punctual descriptor`: writes the API's encoded `FileDescriptorSet`
//! (`punctual/v1/scheduler.proto` and every file it imports), the same bytes
//! the server's reflection service answers with. Tools that take a
//! descriptor set instead of `.proto` files (grpcurl's `-protoset`,
//! Envoy's gRPC-JSON transcoder, `buf`, dynamic clients) can use it as
//! published with the binary. Needs no server.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::error::{self, CliError};
use crate::grpc::pb::FILE_DESCRIPTOR_SET;

#[derive(Debug, Clone, Args)]
pub struct DescriptorArgs {
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Writes the descriptor set to `--out` or to standard output.
pub fn descriptor(args: DescriptorArgs) -> ExitCode {
    let written = match &args.out {
        Some(path) => write_file(path),
        None => write_stdout(),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error::report(&error),
    }
}

fn write_file(path: &Path) -> Result<(), CliError> {
    std::fs::write(path, FILE_DESCRIPTOR_SET).map_err(|error| {
        // The bare error ("No such file or directory") would not say which
        // file.
        CliError::Io(std::io::Error::new(
            error.kind(),
            format!("{}: {error}", path.display()),
        ))
    })
}

fn write_stdout() -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    // Binary protobuf on a terminal is noise and can garble its state.
    if stdout.is_terminal() {
        return Err(CliError::Usage(
            "the descriptor set is binary: redirect standard output or use -o FILE".to_owned(),
        ));
    }
    stdout.write_all(FILE_DESCRIPTOR_SET)?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use prost::Message as _;

    use super::*;
    use crate::config::{Cli, Command};

    #[test]
    fn the_command_line_names_the_file() {
        let cli = Cli::try_parse_from(["punctual", "descriptor", "-o", "api.binpb"]);
        match cli {
            Ok(Cli {
                command: Command::Descriptor(args),
            }) => assert_eq!(args.out, Some(PathBuf::from("api.binpb"))),
            other => panic!("parsed as {other:?}"),
        }
        assert!(matches!(
            Cli::try_parse_from(["punctual", "descriptor"]),
            Ok(Cli {
                command: Command::Descriptor(DescriptorArgs { out: None })
            })
        ));
    }

    #[test]
    fn the_file_holds_the_api_and_its_imports() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let path = directory.path().join("punctual.binpb");
        assert_eq!(
            descriptor(DescriptorArgs {
                out: Some(path.clone())
            }),
            ExitCode::SUCCESS
        );
        let bytes = std::fs::read(&path).expect("the written file");
        let set = prost_types::FileDescriptorSet::decode(bytes.as_slice())
            .expect("an encoded FileDescriptorSet");
        let names: Vec<&str> = set.file.iter().map(|file| file.name()).collect();
        let api = set
            .file
            .iter()
            .find(|file| file.name() == "punctual/v1/scheduler.proto")
            .unwrap_or_else(|| panic!("no punctual/v1/scheduler.proto in {names:?}"));
        assert!(
            api.service
                .iter()
                .any(|service| service.name() == "Scheduler")
        );
        assert!(!api.dependency.is_empty());
        for import in &api.dependency {
            assert!(
                names.contains(&import.as_str()),
                "{import} missing in {names:?}"
            );
        }
    }

    #[test]
    fn an_unwritable_path_is_an_error_naming_it() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let path = directory.path().join("no-such-folder").join("api.binpb");
        match write_file(&path) {
            Err(CliError::Io(error)) => {
                assert!(error.to_string().contains("no-such-folder"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }
}
