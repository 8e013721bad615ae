//! `tern`: train, pack and serve ternary language models.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The engine and the trainers allocate their activation buffers (up to a few MiB each) per
/// layer. glibc's defaults serve such sizes with `mmap` or hand freed heap tops back to the
/// kernel, so every layer would fault its buffers in again: measured, 7–10 % of a 700M prefill.
/// Keep freed memory below 256 MiB in the process (peak RSS is unchanged: it is the same
/// memory, reused) and map only allocations of 64 MiB and more.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
