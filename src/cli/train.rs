//! `tern train`: quantization-aware training (or full-precision training) from a config.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tern_train::config::TrainConfig;
use tern_train::run::{Event, Summary, train};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The training config (see configs/train/).
    #[arg(long)]
    pub config: PathBuf,
    /// Override any config field, e.g. --set train.lr=3e-4 (repeatable).
    #[arg(long = "set", value_name = "SECTION.FIELD=VALUE")]
    pub set: Vec<String>,
    /// Optimizer updates (train.steps).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Peak learning rate (train.lr).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Sequences per micro-batch (train.batch_size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed of the initial weights and data order (train.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Tokens per sequence (data.seq_len).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// The corpus (data.corpus).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// A tokenizer.json to use instead of learning one (data.tokenizer).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// cpu or gpu (run.device).
    #[arg(long)]
    pub device: Option<String>,
    /// The run directory (run.dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also pack the exported model at these widths: 2 and/or 1.6 (run.pack).
    #[arg(long, value_name = "BITS")]
    pub pack: Vec<String>,
    /// Train without fake-quantization (model.quantize = false): the full-precision baseline.
    #[arg(long)]
    pub full_precision: bool,
    /// Start from this latent checkpoint (model.init_from).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Quantization warm-up steps (model.quant_warmup_steps).
    #[arg(long)]
    pub quant_warmup_steps: Option<u64>,
    /// Continue the run from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Replace an existing run directory.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
}

impl TrainArgs {
    /// The config with every flag applied as an override.
    pub fn config(&self) -> anyhow::Result<TrainConfig> {
        let mut o = Overrides::new(&self.set);
        o.value("train.steps", self.steps);
        o.add("train.lr", self.lr.map(|v| format!("{v:e}")));
        o.value("train.batch_size", self.batch_size);
        o.value("train.seed", self.seed);
        o.value("data.seq_len", self.seq_len);
        o.path("data.corpus", &self.corpus);
        o.path("data.tokenizer", &self.tokenizer);
        o.add("run.device", self.device.as_deref().map(toml_str));
        o.path("run.dir", &self.out);
        o.path("model.init_from", &self.init_from);
        o.value("model.quant_warmup_steps", self.quant_warmup_steps);
        if self.full_precision {
            o.add("model.quantize", Some("false".into()));
        }
        o.list("run.pack", &self.pack);
        TrainConfig::load(&self.config, &o.0)
            .with_context(|| format!("reading {}", self.config.display()))
    }
}

/// `--set SECTION.FIELD=VALUE` overrides: the user's, then one per flag given.
pub struct Overrides(pub Vec<String>);

impl Overrides {
    pub fn new(set: &[String]) -> Overrides {
        Overrides(set.to_vec())
    }

    /// `key=value` (a TOML value) when the flag was given.
    pub fn add(&mut self, key: &str, value: Option<String>) {
        if let Some(v) = value {
            self.0.push(format!("{key}={v}"));
        }
    }

    /// A number or other value written as it displays.
    pub fn value<T: std::fmt::Display>(&mut self, key: &str, value: Option<T>) {
        self.add(key, value.map(|v| v.to_string()));
    }

    /// A path, as a TOML string.
    pub fn path(&mut self, key: &str, path: &Option<PathBuf>) {
        self.add(
            key,
            path.as_ref().map(|p| toml_str(&p.display().to_string())),
        );
    }

    /// A list of strings, when not empty.
    pub fn list(&mut self, key: &str, items: &[String]) {
        if !items.is_empty() {
            let list: Vec<String> = items.iter().map(|b| toml_str(b)).collect();
            self.add(key, Some(format!("[{}]", list.join(", "))));
        }
    }
}

/// A TOML string literal.
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let summary = run_config(&cfg, args.resume, args.force)?;
    print_summary(&summary);
    Ok(())
}

/// Trains with a progress bar on a terminal (plain lines otherwise).
pub fn run_config(cfg: &TrainConfig, resume: bool, force: bool) -> anyhow::Result<Summary> {
    let mut reporter = Reporter::new(cfg.run.log_every);
    let summary = train(cfg, resume, force, &mut |e| reporter.event(e))?;
    reporter.finish();
    Ok(summary)
}

pub fn print_summary(s: &Summary) {
    println!(
        "trained {} steps{}{}{} · {:.0} tokens/s · {} parameters",
        s.steps,
        // NaN when a finished run is resumed: no step ran in this session.
        if s.final_loss.is_finite() {
            format!(": final train loss {:.4}", s.final_loss)
        } else {
            String::new()
        },
        s.val_loss
            .map(|v| format!(", validation loss {v:.4} (perplexity {:.2})", v.exp()))
            .unwrap_or_default(),
        s.best_loss
            .map(|b| format!(", best achievable {b:.4}"))
            .unwrap_or_default()
            + &s.val_extra
                .iter()
                .map(|(k, v)| format!(", validation {k} {v:.4}"))
                .collect::<String>(),
        s.tokens_per_s,
        s.params
    );
    println!("latent checkpoint: {}", s.model_dir.display());
    for p in &s.packed {
        println!("packed: {}", p.display());
    }
}

/// Renders [`Event`]s.
pub struct Reporter {
    bar: Option<ProgressBar>,
    tty: bool,
    log_every: u64,
    started: Instant,
    steps: u64,
}

impl Reporter {
    pub fn new(log_every: u64) -> Reporter {
        Reporter {
            bar: None,
            tty: std::io::stderr().is_terminal(),
            log_every: log_every.max(1),
            started: Instant::now(),
            steps: 0,
        }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(b) if self.tty => b.println(s),
            _ => eprintln!("{s}"),
        }
    }

    pub fn event(&mut self, e: Event) {
        match e {
            Event::Message(m) => self.line(&m),
            Event::Start { start, steps } => {
                self.steps = steps;
                self.started = Instant::now();
                if self.tty {
                    let bar =
                        ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
                    bar.set_style(
                        ProgressStyle::with_template(
                            "    train [{bar:30}] {pos}/{len} steps · {elapsed_precise} · ETA {eta} · {msg}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_position(start);
                    bar.reset_eta();
                    self.bar = Some(bar);
                }
            }
            Event::Step {
                step,
                loss,
                parts,
                tok_per_s,
                lr,
            } => {
                let parts: String = parts.iter().map(|(k, v)| format!(" {k} {v:.4}")).collect();
                let msg = format!("loss {loss:.4}{parts} · {tok_per_s:.0} tok/s · lr {lr:.2e}");
                if let Some(b) = &self.bar {
                    b.set_position(step);
                    b.set_message(msg);
                } else if step % self.log_every == 0 || step == self.steps {
                    eprintln!(
                        "step {step}/{} · {msg} · {:.0}s",
                        self.steps,
                        self.started.elapsed().as_secs_f64()
                    );
                }
            }
            Event::Eval {
                step,
                val_loss,
                val_ppl,
                extra,
            } => {
                let extra: String = extra.iter().map(|(k, v)| format!(", {k} {v:.4}")).collect();
                self.line(&format!(
                    "step {step}: validation loss {val_loss:.4}, perplexity {val_ppl:.2}{extra}"
                ))
            }
            Event::Checkpoint(p) => self.line(&format!("checkpoint {}", p.display())),
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
