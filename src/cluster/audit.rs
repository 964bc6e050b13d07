//! `layerlink audit`. (being written)

use std::process::ExitCode;

use crate::Error;

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
}

pub async fn run(_args: AuditArgs) -> Result<ExitCode, Error> {
    todo!()
}
