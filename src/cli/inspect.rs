//! `tern inspect DIR`.

use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `tern inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Checkpoint directory (packed or latent).
    dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    let summary = tern_pack::inspect::inspect(&a.dir)
        .with_context(|| format!("cannot inspect {}", a.dir.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{summary}");
    }
    Ok(())
}
