//! `layerlink layers`. (being written)

use std::process::ExitCode;

use crate::Error;

#[derive(clap::Args, Debug)]
pub struct LayersArgs {
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
    pub images: Vec<String>,
}

pub async fn run(_args: LayersArgs) -> Result<ExitCode, Error> {
    todo!()
}
