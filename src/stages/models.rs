//! `pipeline models`: the registry's models, or their recipe files written from
//! the code's defaults.

use crate::models::config::ModelName;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// `pipeline models [--write DIR]`.
#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    /// Write <DIR>/<name>.toml for every model (e.g. configs/models).
    #[arg(long, value_name = "DIR")]
    pub write: Option<PathBuf>,
}

/// Lists the models (name and first line of what it is), or writes each
/// model's recipe file into `--write DIR`.
pub fn command(args: &ModelsArgs) -> Result<()> {
    for m in ModelName::ALL {
        match &args.write {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let path = dir.join(format!("{}.toml", m.as_str()));
                crate::fsutil::write_atomic(&path, crate::config::model_recipe(m)?.as_bytes())?;
                println!("{}", path.display());
            }
            None => println!(
                "{:<14} {}",
                m.as_str(),
                m.about().lines().next().unwrap_or("")
            ),
        }
    }
    Ok(())
}
