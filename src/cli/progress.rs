//! A progress bar over the tensors of a checkpoint being written.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tern_pack::convert::Progress;

/// A bar that `tern_pack::convert` callbacks advance; hidden when stderr is not a terminal.
pub struct TensorBar {
    bar: ProgressBar,
}

impl TensorBar {
    pub fn new(verb: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{verb:>9} [{{bar:30}}] {{pos}}/{{len}} tensors · {{elapsed_precise}} · ETA {{eta}} · {{msg}}"
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        TensorBar { bar }
    }

    /// The callback to hand to the library.
    pub fn update(&self, p: Progress<'_>) {
        self.bar.set_length(p.total as u64);
        self.bar.set_position(p.index as u64 - 1);
        self.bar.set_message(p.name.to_string());
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
