//! The training loop: data → model → AdamW, with evaluation, metrics, plots, checkpoints,
//! resume and export. Everything the user sees goes through [`Event`]s, which the CLI renders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use tern_pack::spec::{HfConfig, ModelSpec, WeightKind};
use tokenizers::Tokenizer;

use crate::checkpoint::{self, RunState};
use crate::config::TrainConfig;
use crate::data::corpus::{CorpusFormat, read_corpus};
use crate::data::tokenize::{
    Batcher, DataPosition, TokenDataset, eval_batches, load_tokenizer, save_tokenizer,
    split_and_pack, tokenize_documents, train_bpe,
};
use crate::error::{IoContext, Result, TrainError};
use crate::export;
use crate::metrics::{MetricsLog, Record, plot_svg};
use crate::model::{QuantMode, Transformer, cross_entropy};
use crate::optim::{AdamW, AdamWConfig, ScheduleParams, clip_global_norm};
use crate::params::{self, HostTensor};
use crate::quant::warmup_lambda;

/// The end-of-text token of tokenizers that tern learns.
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// What a run reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// A line of information.
    Message(String),
    /// Training starts (or resumes) at `start` of `steps`.
    Start { start: u64, steps: u64 },
    /// An update finished (`parts`: the terms of a composite loss, e.g. CE and KL).
    Step {
        step: u64,
        loss: f64,
        parts: Vec<(String, f64)>,
        tok_per_s: f64,
        lr: f64,
    },
    /// A validation pass finished (`extra`: the objective's own metrics, e.g. KL to a teacher).
    Eval {
        step: u64,
        val_loss: f64,
        val_ppl: f64,
        extra: Vec<(String, f64)>,
    },
    /// A checkpoint was written.
    Checkpoint(PathBuf),
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub steps: u64,
    pub final_loss: f64,
    pub val_loss: Option<f64>,
    /// The objective's validation metrics at the end (e.g. KL to a teacher).
    pub val_extra: Vec<(String, f64)>,
    /// The best achievable loss per token, when the corpus is synthetic (`tern data synth`).
    pub best_loss: Option<f64>,
    pub tokens_per_s: f64,
    pub params: usize,
    /// The exported latent checkpoint, and packed ones.
    pub model_dir: PathBuf,
    pub packed: Vec<PathBuf>,
}

/// One micro-batch: `inputs` and next-token `targets`, `shape` = `[batch, seq_len]`.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub inputs: &'a [u32],
    pub targets: &'a [u32],
    pub shape: [usize; 2],
}

impl Batch<'_> {
    /// The inputs as `[batch, seq_len]` ids on `device`.
    pub fn tokens(&self, device: &Device) -> Tensor<2, Int> {
        ids2(self.inputs, self.shape, device)
    }

    /// The targets as `[batch·seq_len]` ids on `device`.
    pub fn target_ids(&self, device: &Device) -> Tensor<1, Int> {
        ids1(self.targets, device)
    }
}

/// What a run minimizes. `tern train` uses [`LanguageModeling`]; `tern distill` adds a
/// teacher. Everything else (data, optimizer, metrics, checkpoints, resume, export) is the
/// loop's.
pub trait Objective {
    /// The student's shape (default: `model.config`).
    fn shape(&self, cfg: &TrainConfig) -> Result<HfConfig> {
        Ok(HfConfig::load(&cfg.model.config)?)
    }

    /// Checks the objective's own inputs against the prepared data, before anything is
    /// written (e.g. that a teacher shares the tokenizer).
    fn check(&mut self, _data: &Prepared) -> Result<()> {
        Ok(())
    }

    /// The weights a fresh run starts from, with their origin for messages (`None`:
    /// `model.init_from`, else random). Tensors the map lacks keep their initial values.
    fn initial_weights(
        &self,
        _spec: &ModelSpec,
    ) -> Result<Option<(BTreeMap<String, HostTensor>, String)>> {
        Ok(None)
    }

    /// The loss of `model` on `batch` (a scalar with gradients), and its named terms.
    fn loss(
        &self,
        model: &Transformer,
        batch: &Batch,
        q: QuantMode,
    ) -> (Tensor<1>, Vec<(String, f64)>);

    /// Validation metrics of the student's `logits` on `batch` besides the loss (averaged
    /// over batches by the loop).
    fn eval_metrics(&self, _logits: Tensor<2>, _batch: &Batch) -> Vec<(String, f64)> {
        Vec::new()
    }

    /// The training mode, for the opening message.
    fn describe(&self, quantize: bool) -> String {
        if quantize {
            "ternary QAT mode".into()
        } else {
            "full-precision mode".into()
        }
    }
}

/// Next-token cross-entropy on the data: plain (QAT or full-precision) training.
pub struct LanguageModeling;

impl Objective for LanguageModeling {
    fn loss(
        &self,
        model: &Transformer,
        batch: &Batch,
        q: QuantMode,
    ) -> (Tensor<1>, Vec<(String, f64)>) {
        let device = model.model.embed_tokens.weight.device();
        let logits = model.forward(batch.tokens(&device), q);
        (cross_entropy(logits, batch.target_ids(&device)), Vec::new())
    }
}

/// The device of `--device cpu|gpu`.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "gpu" => gpu_device(),
        #[cfg(not(feature = "wgpu"))]
        "gpu" => Err(TrainError::Device(
            "this tern was built without GPU support; rebuild with `--features wgpu`".into(),
        )),
        other => Err(TrainError::Device(format!(
            "unknown device {other:?} (expected cpu or gpu)"
        ))),
    }
}

/// The wgpu device, checked with a small computation: wgpu panics when it finds no adapter,
/// which becomes a clear error here.
#[cfg(feature = "wgpu")]
fn gpu_device() -> Result<Device> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        let d = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        let sum = Tensor::<1>::ones([4], &d).sum().into_scalar::<f32>();
        (d, sum)
    });
    std::panic::set_hook(hook);
    match probe {
        Ok((d, 4.0)) => Ok(d),
        Ok((_, sum)) => Err(TrainError::Device(format!(
            "the wgpu device computed 1+1+1+1 = {sum}; its driver is broken"
        ))),
        Err(_) => Err(TrainError::Device(
            "no GPU adapter found through wgpu (looked for Vulkan, Metal, DX12 and OpenGL \
             adapters). On Linux install a Vulkan driver, e.g. Debian's mesa-vulkan-drivers for \
             the lavapipe software device"
                .into(),
        )),
    }
}

/// Tokenized data and everything derived from the corpus.
pub struct Prepared {
    pub config: HfConfig,
    pub spec: ModelSpec,
    pub tokenizer: Tokenizer,
    pub eos: u32,
    pub train: TokenDataset,
    pub val: TokenDataset,
    /// Best achievable loss per token for a synthetic corpus.
    pub best_loss: Option<f64>,
}

/// Reads and checks everything a run needs before anything is written: model shape, corpus,
/// tokenizer (loaded, or learned when `cached` is absent), sequences.
pub fn prepare(cfg: &TrainConfig, cached_tokenizer: Option<&Path>) -> Result<Prepared> {
    prepare_with(cfg, HfConfig::load(&cfg.model.config)?, cached_tokenizer)
}

/// [`prepare`] for a model shape given as a config.
pub fn prepare_with(
    cfg: &TrainConfig,
    config: HfConfig,
    cached_tokenizer: Option<&Path>,
) -> Result<Prepared> {
    let spec = ModelSpec::from_config(&config)?;
    if cfg.data.seq_len > spec.max_position_embeddings {
        return Err(TrainError::Config(format!(
            "data.seq_len {} exceeds the model's max_position_embeddings {}",
            cfg.data.seq_len, spec.max_position_embeddings
        )));
    }
    let format = cfg.data.format.as_deref().map(|f| match f {
        "jsonl" => CorpusFormat::Jsonl {
            field: cfg.data.text_field.clone(),
        },
        _ => CorpusFormat::Text,
    });
    let docs = read_corpus(&cfg.data.corpus, format)?;
    let tokenizer = match cached_tokenizer.or(cfg.data.tokenizer.as_deref()) {
        Some(path) => load_tokenizer(path)?,
        None => train_bpe(&docs, spec.vocab_size, &[EOS_TOKEN])?,
    };
    let vocab = tokenizer.get_vocab_size(true);
    if vocab > spec.vocab_size {
        return Err(TrainError::Config(format!(
            "the tokenizer has {vocab} tokens but the model's vocab_size is {} ({}); use a \
             tokenizer that fits or raise vocab_size",
            spec.vocab_size,
            cfg.model.config.display()
        )));
    }
    let eos = tokenizer
        .token_to_id(EOS_TOKEN)
        .or_else(|| tokenizer.token_to_id("</s>"))
        .or_else(|| {
            config
                .extra
                .get("eos_token_id")
                .and_then(|v| v.as_u64())
                .map(|v| v as u32)
        })
        .ok_or_else(|| {
            TrainError::Config(format!(
                "the tokenizer has no end-of-text token ({EOS_TOKEN} or </s>) and {} sets no \
                 eos_token_id",
                cfg.model.config.display()
            ))
        })?;
    let tokens = tokenize_documents(&tokenizer, &docs, eos)?;
    let total: usize = tokens.iter().map(Vec::len).sum();
    let best_loss = synth_floor(&cfg.data.corpus, total);
    let (train, val) = split_and_pack(
        tokens,
        cfg.data.seq_len,
        cfg.data.val_fraction,
        cfg.train.seed,
    )?;
    if train.sequences.len() < cfg.train.batch_size {
        return Err(TrainError::Config(format!(
            "the corpus gives {} training sequences of {} tokens, fewer than one batch of {}; \
             lower train.batch_size or data.seq_len, or add text",
            train.sequences.len(),
            cfg.data.seq_len,
            cfg.train.batch_size
        )));
    }
    Ok(Prepared {
        config,
        spec,
        tokenizer,
        eos,
        train,
        val,
        best_loss,
    })
}

/// `CORPUS.synth.json`, written by `tern data synth`, gives the entropy of the corpus.
fn synth_floor(corpus: &Path, tokens: usize) -> Option<f64> {
    let mut p = corpus.as_os_str().to_owned();
    p.push(".synth.json");
    let text = std::fs::read_to_string(PathBuf::from(p)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let nats = v.get("entropy_nats")?.as_f64()?;
    (tokens > 0).then(|| nats / tokens as f64)
}

fn ids2(v: &[u32], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = v.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn ids1(v: &[u32], device: &Device) -> Tensor<1, Int> {
    let data: Vec<i64> = v.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(data, [v.len()]), device)
}

/// Adds `v` to the entry `name` of `sums` (appended when new, so the order is first seen).
fn add_named(sums: &mut Vec<(String, f64)>, name: String, v: f64) {
    match sums.iter_mut().find(|(k, _)| *k == name) {
        Some((_, acc)) => *acc += v,
        None => sums.push((name, v)),
    }
}

/// Mean loss of `model` over (at most `max_batches` of) `data`.
pub fn evaluate(
    model: &Transformer,
    data: &TokenDataset,
    batch_size: usize,
    max_batches: usize,
    q: QuantMode,
    device: &Device,
) -> Option<f64> {
    evaluate_with(
        model,
        &LanguageModeling,
        data,
        batch_size,
        max_batches,
        q,
        device,
    )
    .map(|(loss, _)| loss)
}

/// Mean loss of `model` over (at most `max_batches` of) `data`, and the means of the
/// objective's [`Objective::eval_metrics`].
pub fn evaluate_with(
    model: &Transformer,
    objective: &dyn Objective,
    data: &TokenDataset,
    batch_size: usize,
    max_batches: usize,
    q: QuantMode,
    device: &Device,
) -> Option<(f64, Vec<(String, f64)>)> {
    let model = model.valid();
    let (mut sum, mut n) = (0.0, 0usize);
    let mut extra: Vec<(String, f64)> = Vec::new();
    let limit = if max_batches == 0 {
        usize::MAX
    } else {
        max_batches
    };
    for (b, inp, tgt) in eval_batches(data, batch_size).take(limit) {
        let batch = Batch {
            inputs: &inp,
            targets: &tgt,
            shape: [b, data.seq_len],
        };
        let logits = model.forward(batch.tokens(device), q);
        for (name, v) in objective.eval_metrics(logits.clone(), &batch) {
            add_named(&mut extra, name, v * b as f64);
        }
        let loss = cross_entropy(logits, batch.target_ids(device)).into_scalar::<f32>() as f64;
        sum += loss * b as f64;
        n += b;
    }
    for (_, v) in &mut extra {
        *v /= n.max(1) as f64;
    }
    (n > 0).then(|| (sum / n as f64, extra))
}

/// Runs (or, with `resume`, continues) the training run of `cfg`.
pub fn train(
    cfg: &TrainConfig,
    resume: bool,
    force: bool,
    progress: &mut dyn FnMut(Event),
) -> Result<Summary> {
    train_with(
        cfg,
        &cfg.to_json(),
        &mut LanguageModeling,
        resume,
        force,
        progress,
    )
}

/// [`train`] minimizing `objective`; `config_json` is the run's whole config as the user
/// wrote it, saved with the run and its checkpoints.
pub fn train_with(
    cfg: &TrainConfig,
    config_json: &str,
    objective: &mut dyn Objective,
    resume: bool,
    force: bool,
    progress: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let run = cfg.run.dir.clone();
    let ckpt = if resume {
        let c = checkpoint::latest(&run)?;
        if c.is_none() {
            progress(Event::Message(format!(
                "no checkpoint in {}; starting from scratch",
                run.display()
            )));
        }
        c
    } else {
        if checkpoint::latest(&run)?.is_some() && !force {
            return Err(TrainError::Config(format!(
                "{} already holds a run; pass --resume to continue it or --force to start over",
                run.display()
            )));
        }
        None
    };
    let tok_path = run.join("tokenizer.json");
    let cached = (ckpt.is_some() && tok_path.exists()).then_some(tok_path.as_path());
    progress(Event::Message(format!(
        "reading {} and {}",
        cfg.data.corpus.display(),
        if cached.is_some() || cfg.data.tokenizer.is_some() {
            "loading the tokenizer"
        } else {
            "learning a BPE tokenizer"
        }
    )));
    let data = prepare_with(cfg, objective.shape(cfg)?, cached)?;
    objective.check(&data)?;
    let device = device(&cfg.run.device)?;
    let quantize = cfg
        .model
        .quantize
        .unwrap_or(data.spec.quant.weights == WeightKind::Ternary);

    // Everything is checked: from here on the run directory is written.
    if force && !resume && run.exists() {
        std::fs::remove_dir_all(&run).at(&run)?;
    }
    std::fs::create_dir_all(&run).at(&run)?;
    save_tokenizer(&data.tokenizer, &tok_path)?;
    tern_pack::fsutil::write_atomic(&run.join("train.json"), config_json.as_bytes())?;

    let train_device = device.clone().autodiff();
    let mut model = Transformer::init(
        &data.spec,
        cfg.train.seed,
        cfg.model.init_std,
        &train_device,
    );
    let t = &cfg.train;
    let mut opt = AdamW::new(AdamWConfig {
        beta1: t.beta1,
        beta2: t.beta2,
        eps: t.adam_eps,
    });
    let mut state = RunState {
        step: 0,
        position: DataPosition { epoch: 0, batch: 0 },
        tokens: 0,
        elapsed_s: 0.0,
    };
    if let Some(path) = &ckpt {
        let loaded = checkpoint::load(path)?;
        model = params::load(model, &loaded.model, &path.display().to_string())?;
        opt.restore(loaded.state.step, &loaded.optimizer, &device);
        state = loaded.state;
        progress(Event::Message(format!(
            "resumed from {} (step {})",
            path.display(),
            state.step
        )));
    } else if let Some((tensors, origin)) = objective.initial_weights(&data.spec)? {
        model = params::load_some(model, &tensors, &origin)?;
        progress(Event::Message(format!("initialised from {origin}")));
    } else if let Some(init) = &cfg.model.init_from {
        let tensors = export::read_latent(init, &data.spec)?;
        model = params::load(model, &tensors, &init.display().to_string())?;
        progress(Event::Message(format!(
            "initialised from {}",
            init.display()
        )));
    }
    let n_params = model.num_params();
    progress(Event::Message(format!(
        "{} parameters, {} training / {} validation sequences of {} tokens, {}, device {}",
        n_params,
        data.train.sequences.len(),
        data.val.sequences.len(),
        cfg.data.seq_len,
        objective.describe(quantize),
        cfg.run.device
    )));

    let mut batcher = Batcher::try_new(&data.train, t.batch_size, t.seed, state.position)?;
    let mut log = MetricsLog::open(&run, ckpt.as_ref().map(|_| state.step))?;
    let sched = ScheduleParams {
        kind: t.schedule,
        lr: t.lr,
        weight_decay: t.weight_decay,
        warmup_steps: t.warmup_steps,
        steps: t.steps,
        min_lr_ratio: t.min_lr_ratio,
        stage2_at: t.stage2_at,
        stage2_lr_ratio: t.stage2_lr_ratio,
    };
    let tokens_per_step = (t.batch_size * t.grad_accum * cfg.data.seq_len) as u64;
    let mode = |step: u64| QuantMode {
        enabled: quantize,
        lambda: warmup_lambda(step, cfg.model.quant_warmup_steps),
    };
    let validate = |model: &Transformer, objective: &dyn Objective, step: u64| {
        evaluate_with(
            model,
            objective,
            &data.val,
            t.batch_size,
            cfg.run.eval_batches,
            mode(step),
            &device,
        )
    };
    let mut last_ckpt = ckpt.clone();
    let mut final_loss = f64::NAN;
    let mut val_loss = None;
    let mut val_extra = Vec::new();
    let mut window = (Instant::now(), 0u64);
    let start_elapsed = state.elapsed_s;
    let session = Instant::now();
    progress(Event::Start {
        start: state.step,
        steps: t.steps,
    });
    let plot = |log: &MetricsLog| -> Result<()> {
        let records = crate::metrics::read(log.path())?;
        let title = format!("{} — loss", run.display());
        let svg = plot_svg(&records, data.best_loss, &title);
        tern_pack::fsutil::write_atomic(&run.join("loss.svg"), svg.as_bytes())?;
        Ok(())
    };

    while state.step < t.steps {
        let q = mode(state.step);
        let mut grads: Option<BTreeMap<String, Tensor<1>>> = None;
        let mut loss_sum = 0.0;
        let mut parts_sum: Vec<(String, f64)> = Vec::new();
        for _ in 0..t.grad_accum {
            let (inp, tgt) = batcher.next_batch();
            let batch = Batch {
                inputs: &inp,
                targets: &tgt,
                shape: [t.batch_size, cfg.data.seq_len],
            };
            let (loss, parts) = objective.loss(&model, &batch, q);
            for (name, v) in parts {
                add_named(&mut parts_sum, name, v / t.grad_accum as f64);
            }
            let value = loss.clone().into_scalar::<f32>();
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    step: state.step + 1,
                    loss: value,
                    checkpoint: last_ckpt.clone().unwrap_or_else(|| checkpoint::dir(&run)),
                });
            }
            loss_sum += value as f64;
            let g = loss.div_scalar(t.grad_accum as f64).backward();
            let g = params::gradients(&model, &g);
            grads = Some(match grads {
                None => g,
                Some(mut acc) => {
                    for (k, v) in g {
                        let sum = acc.remove(&k).map_or(v.clone(), |a| a + v);
                        acc.insert(k, sum);
                    }
                    acc
                }
            });
        }
        let mut grads = grads.expect("grad_accum >= 1");
        let grad_norm = clip_global_norm(&mut grads, t.clip);
        let (lr, wd) = sched.at(state.step);
        model = opt.update(model, grads, lr, wd);
        state.step += 1;
        state.tokens += tokens_per_step;
        state.position = batcher.position();
        final_loss = loss_sum / t.grad_accum as f64;
        window.1 += tokens_per_step;
        let tok_per_s = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
        progress(Event::Step {
            step: state.step,
            loss: final_loss,
            parts: parts_sum.clone(),
            tok_per_s,
            lr,
        });
        let last = state.step == t.steps;
        if state.step.is_multiple_of(cfg.run.log_every.max(1)) || last || state.step == 1 {
            state.elapsed_s = start_elapsed + session.elapsed().as_secs_f64();
            log.push(&Record::Train {
                step: state.step,
                tokens: state.tokens,
                loss: final_loss,
                lr,
                grad_norm,
                lambda: q.lambda,
                tok_per_s,
                elapsed_s: state.elapsed_s,
                extra: parts_sum.into_iter().collect(),
            })?;
            window = (Instant::now(), 0);
        }
        if (cfg.run.eval_every > 0 && state.step.is_multiple_of(cfg.run.eval_every)) || last {
            if let Some((v, extra)) = validate(&model, objective, state.step) {
                val_loss = Some(v);
                log.push(&Record::Eval {
                    step: state.step,
                    val_loss: v,
                    val_ppl: v.exp(),
                    extra: extra.iter().cloned().collect(),
                })?;
                progress(Event::Eval {
                    step: state.step,
                    val_loss: v,
                    val_ppl: v.exp(),
                    extra: extra.clone(),
                });
                val_extra = extra;
            }
            plot(&log)?;
        }
        if (cfg.run.checkpoint_every > 0 && state.step.is_multiple_of(cfg.run.checkpoint_every))
            || last
        {
            state.elapsed_s = start_elapsed + session.elapsed().as_secs_f64();
            let path = checkpoint::save(
                &run,
                &state,
                &params::collect(&model),
                &opt.state(),
                config_json,
                cfg.run.keep_checkpoints,
            )?;
            progress(Event::Checkpoint(path.clone()));
            last_ckpt = Some(path);
            window = (Instant::now(), 0);
        }
    }
    if val_loss.is_none() {
        // Resumed a finished run (the loop did not run): report its validation loss.
        if let Some((v, extra)) = validate(&model, objective, state.step) {
            val_loss = Some(v);
            val_extra = extra;
        }
    }
    let model_dir = run.join("model");
    progress(Event::Message(format!(
        "exporting the latent checkpoint to {}",
        model_dir.display()
    )));
    export::write_latent(
        &params::collect(&model),
        &data.config,
        &data.spec,
        quantize,
        data.eos,
        &tok_path,
        &model_dir,
    )?;
    let mut packed = Vec::new();
    for bits in &cfg.run.pack {
        let out = run.join(format!("model-{bits}bit"));
        progress(Event::Message(format!(
            "packing at {bits} bits to {}",
            out.display()
        )));
        export::pack(&model_dir, &out, bits)?;
        packed.push(out);
    }
    let total_s = start_elapsed + session.elapsed().as_secs_f64();
    Ok(Summary {
        steps: state.step,
        final_loss,
        val_loss,
        val_extra,
        best_loss: data.best_loss,
        tokens_per_s: state.tokens as f64 / total_s.max(1e-9),
        params: n_params,
        model_dir,
        packed,
    })
}
