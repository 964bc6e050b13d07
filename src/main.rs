//! The `layerlink` binary: parses the command line and runs one verb (see `cli`). Run as the
//! kubectl plugin `kubectl-layerlink`, its usage says `kubectl layerlink`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    layerlink::install_crypto_provider();
    let cli = cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(cli.run())
}
