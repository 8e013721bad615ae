//! `tern tokenizer train`: learn a byte-level BPE tokenizer from a corpus.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tern_train::data::corpus::{CorpusFormat, read_corpus};
use tern_train::data::tokenize::{save_tokenizer, train_bpe};
use tern_train::run::EOS_TOKEN;

#[derive(Debug, Args)]
pub struct TokenizerArgs {
    #[command(subcommand)]
    pub command: TokenizerCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenizerCommand {
    /// Learn a byte-level BPE (GPT-2 style, every byte covered) and write tokenizer.json.
    Train(TokTrainArgs),
}

#[derive(Debug, Args)]
pub struct TokTrainArgs {
    /// A text file, a directory of text files, or a .jsonl file.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Vocabulary size, special tokens included (may come out smaller on a small corpus).
    #[arg(long, default_value_t = 2048)]
    pub vocab_size: usize,
    /// The JSONL field with the text (for .jsonl corpora).
    #[arg(long)]
    pub text_field: Option<String>,
    /// Where to write tokenizer.json.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: TokenizerArgs) -> anyhow::Result<()> {
    let TokenizerCommand::Train(a) = args.command;
    let format = a
        .text_field
        .clone()
        .map(|field| CorpusFormat::Jsonl { field });
    let docs = read_corpus(&a.corpus, format)?;
    let tok = train_bpe(&docs, a.vocab_size, &[EOS_TOKEN])?;
    save_tokenizer(&tok, &a.out)?;
    eprintln!(
        "wrote {} ({} tokens, learned from {} documents)",
        a.out.display(),
        tok.get_vocab_size(true),
        docs.len()
    );
    Ok(())
}
