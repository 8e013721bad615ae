//! Command-line arguments (clap derive) and dispatch; one module per command.

mod bench;
mod data;
mod distill;
mod infer;
mod init;
mod inspect;
mod pack;
mod progress;
mod quickstart;
mod serve;
mod tokenizer;
mod train;

use clap::{Parser, Subcommand};

/// tern: train, pack and serve ternary ({-1, 0, +1}) language models.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline on embedded defaults: synthesize a corpus, train a small ternary
    /// model on the CPU, pack it at 2 and 1.6 bits, generate text and benchmark it.
    Quickstart(quickstart::QuickstartArgs),
    /// Train a ternary model with quantization-aware training (or a full-precision one).
    Train(train::TrainArgs),
    /// Distill a full-precision teacher (Hugging Face Llama/Qwen2, or a tern model) into a
    /// ternary student.
    Distill(distill::DistillArgs),
    /// Make training data (tern data synth).
    Data(data::DataArgs),
    /// Learn a tokenizer from a corpus (tern tokenizer train).
    Tokenizer(tokenizer::TokenizerArgs),
    /// Pack a latent checkpoint at 2 or 1.6 bits per weight (or unpack with --unpack).
    Pack(pack::PackArgs),
    /// Print a checkpoint's architecture, parameter counts, bits per weight and sizes.
    Inspect(inspect::InspectArgs),
    /// Write a randomly initialised checkpoint of any config (latent, or packed with --bits).
    Init(init::InitArgs),
    /// Generate text with a packed (or float) model on the CPU, streamed to stdout.
    Infer(infer::InferArgs),
    /// Measure prefill/decode speed, time to first token, memory and the bandwidth roofline.
    Bench(bench::BenchArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Quickstart(a) => quickstart::run(a),
        Command::Train(a) => train::run(a),
        Command::Distill(a) => distill::run(a),
        Command::Data(a) => data::run(a),
        Command::Tokenizer(a) => tokenizer::run(a),
        Command::Pack(a) => pack::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Init(a) => init::run(a),
        Command::Infer(a) => infer::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
