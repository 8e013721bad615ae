//! `tern distill`: load the teacher, check it against the student, and run the training loop
//! of `tern_train` with the distillation objective.

use tern_train::error::{Result, TrainError};
use tern_train::run::{Event, Summary, device, train_with};

use crate::config::DistillConfig;
use crate::objective::Distill;
use crate::teacher::Teacher;

/// Runs (or, with `resume`, continues) the distillation run of `cfg`.
pub fn distill(
    cfg: &DistillConfig,
    resume: bool,
    force: bool,
    progress: &mut dyn FnMut(Event),
) -> Result<Summary> {
    progress(Event::Message(format!(
        "loading the teacher from {}",
        cfg.teacher.dir.display()
    )));
    let device = device(&cfg.run.device)?;
    let teacher = Teacher::load(&cfg.teacher.dir, cfg.teacher.quantize, &device)?;
    if let Some(path) = &cfg.data.tokenizer {
        let theirs = tern_train::data::tokenize::load_tokenizer(path)?;
        if theirs.get_vocab(true) != teacher.tokenizer.get_vocab(true) {
            return Err(TrainError::Teacher(format!(
                "data.tokenizer {} differs from the teacher's {}/tokenizer.json; the student \
                 must use the teacher's tokenizer (leave data.tokenizer unset)",
                path.display(),
                cfg.teacher.dir.display()
            )));
        }
    }
    progress(Event::Message(format!(
        "teacher: {} layers, hidden {}, vocab {}, {} parameters",
        teacher.spec.num_layers,
        teacher.spec.hidden_size,
        teacher.spec.vocab_size,
        teacher.spec.num_parameters()
    )));
    let mut objective = Distill::new(cfg.clone(), teacher, device);
    train_with(
        &cfg.to_train(),
        &cfg.to_json(),
        &mut objective,
        resume,
        force,
        progress,
    )
}
