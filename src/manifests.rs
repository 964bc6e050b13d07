//! `layerlink mutate -f`: pins images in multi-document YAML. (being written)

use std::process::ExitCode;

use crate::Error;

#[derive(clap::Args, Debug)]
pub struct MutateArgs {
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
    /// File to read, or - for standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: String,
}

pub async fn mutate(_args: MutateArgs) -> Result<ExitCode, Error> {
    todo!()
}
