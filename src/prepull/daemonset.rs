//! `layerlink prepuller`. (being written)

use std::process::ExitCode;

use crate::Error;

#[derive(clap::Args, Debug)]
pub struct PrepullerArgs {
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
}

pub async fn run(_args: PrepullerArgs) -> Result<ExitCode, Error> {
    todo!()
}
