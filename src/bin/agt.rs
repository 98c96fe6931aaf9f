//! The `agt` executable: the CLI, and (`agt daemon run`) the daemon itself.
//! Exit codes are documented in `agt::cli`: 0 ok, 1 the daemon answered an error,
//! 2 usage error, 3 the daemon cannot be reached.

use std::process::ExitCode;

fn main() -> ExitCode {
    agt::cli::main()
}
