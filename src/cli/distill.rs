//! `tern distill`: a ternary student distilled from a full-precision teacher.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tern_distill::config::DistillConfig;

use super::train::{Overrides, Reporter, print_summary, toml_str};

#[derive(Debug, Args)]
pub struct DistillArgs {
    /// The distillation config (see configs/distill/).
    #[arg(long)]
    pub config: PathBuf,
    /// Override any config field, e.g. --set distill.temperature=2 (repeatable).
    #[arg(long = "set", value_name = "SECTION.FIELD=VALUE")]
    pub set: Vec<String>,
    /// The teacher's model directory (teacher.dir).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// The corpus (data.corpus).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Optimizer updates (train.steps).
    #[arg(long)]
    pub steps: Option<u64>,
    /// cpu or gpu (run.device).
    #[arg(long)]
    pub device: Option<String>,
    /// The run directory (run.dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also pack the exported student at these widths: 2 and/or 1.6 (run.pack).
    #[arg(long, value_name = "BITS")]
    pub pack: Vec<String>,
    /// Continue the run from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Replace an existing run directory.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
}

impl DistillArgs {
    /// The config with every flag applied as an override.
    pub fn config(&self) -> anyhow::Result<DistillConfig> {
        let mut o = Overrides::new(&self.set);
        o.path("teacher.dir", &self.teacher);
        o.path("data.corpus", &self.corpus);
        o.value("train.steps", self.steps);
        o.add("run.device", self.device.as_deref().map(toml_str));
        o.path("run.dir", &self.out);
        o.list("run.pack", &self.pack);
        DistillConfig::load(&self.config, &o.0)
            .with_context(|| format!("reading {}", self.config.display()))
    }
}

pub fn run(args: DistillArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let mut reporter = Reporter::new(cfg.run.log_every);
    let summary = tern_distill::distill(&cfg, args.resume, args.force, &mut |e| reporter.event(e));
    reporter.finish();
    print_summary(&summary?);
    Ok(())
}
