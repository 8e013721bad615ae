//! `tern bench`: prefill and decode throughput, time to first token, peak memory, and how close
//! decoding gets to the machine's read-bandwidth roofline (measured here, not assumed).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use tern_pack::init::SplitMix64;

use crate::attention::{KvCache, KvDtype};
use crate::error::{Error, Result};
use crate::generate::{CpuDecoder, Decoder};
use crate::kernels::{self, Isa};
use crate::model::{Logits, Model};
use crate::team;

/// What one benchmark run measured. Field names are the `--json` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// What was run (a path or a config name) and its weight format.
    pub model: String,
    pub format: String,
    /// What the linear layers read: `int8` or `float` (see [`Model::activations`]).
    #[serde(default)]
    pub activations: String,
    /// `cpu`, or the GPU adapter (name, backend, type).
    #[serde(default = "cpu")]
    pub device: String,
    /// CPU kernels (`gpu` on the GPU path).
    pub isa: String,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Prompt tokens over the time to first token.
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// From an empty KV cache to the first token's logits (CPU path: creating the cache, whose
    /// pages are faulted in then, included).
    pub ttft_ms: f64,
    /// Peak resident set of the process (VmHWM), when the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// Size of the weights file served (0 for weights built in memory).
    pub file_bytes: u64,
    /// Bytes of the KV cache at the end of the run.
    pub kv_cache_bytes: u64,
    /// Its element type (`f16`, `f32`, `q8`; the GPU path keeps f32).
    #[serde(default)]
    pub kv: String,
    /// GPU path: bytes of device memory allocated (weights, KV cache, activations).
    #[serde(default)]
    pub gpu_memory_bytes: Option<u64>,
    /// Bytes of weights read per decoded token (all linear layers plus the head).
    pub weight_bytes_per_token: u64,
    /// `weight_bytes_per_token · decode_tok_s`.
    pub effective_gb_s: f64,
    /// Read bandwidth measured on this machine with the same thread count. CPU path: streaming
    /// the model's own weight bytes once each [`ReadWay`] after every eighth decode step, the
    /// mean over the passes of the fastest way (so that a shared machine's drift hits both
    /// sides of the ratio alike). GPU path: the device's copy bandwidth, bytes read plus bytes
    /// written per second.
    pub measured_bandwidth_gb_s: f64,
    /// Decode speed over the roofline `measured_bandwidth / weight_bytes_per_token`.
    pub roofline_fraction: f64,
    /// Mean bytes of the KV cache that one decode step reads (every cached key and value, at
    /// the step's context length): reads beside the weights, which grow with the context.
    #[serde(default)]
    pub kv_bytes_per_token: u64,
    /// Decode speed over the roofline of weights and KV reads together,
    /// `measured_bandwidth / (weight_bytes_per_token + kv_bytes_per_token)`: the share of the
    /// read bandwidth that decoding used.
    #[serde(default)]
    pub read_roofline_fraction: f64,
    /// Multiply-accumulates of the linear layers per token.
    pub linear_macs_per_token: u64,
    /// The int8 dot-product peak of the threads used, measured (G multiply-accumulates/s; CPU
    /// path only).
    pub int8_peak_gmacs: Option<f64>,
    /// Prefill MACs/s of the linear layers over `int8_peak_gmacs` (ternary int8 models only).
    pub prefill_int8_peak_fraction: Option<f64>,
    /// The round trip between two of the threads used, in nanoseconds (CPU path, two threads
    /// or more): the cost of each hand-off between them, which every parallel region pays. On
    /// a virtual machine it moves with where the host places the CPUs, and the roofline
    /// fraction with it (see [`team::round_trip_ns`]).
    #[serde(default)]
    pub thread_round_trip_ns: Option<f64>,
    /// The same round trip measured before the prefill: where it differs from
    /// `thread_round_trip_ns` by several times, the host moved the CPUs during the run, and
    /// the decode ran partly in each placement.
    #[serde(default)]
    pub thread_round_trip_before_ns: Option<f64>,
    /// CPU path: the `--prefetch` option (`auto`, `nta`, `l2`), the hint the decode held at
    /// the end, and how many times `auto` changed it during the run.
    #[serde(default)]
    pub prefetch: Option<String>,
    #[serde(default)]
    pub prefetch_hint: Option<String>,
    #[serde(default)]
    pub prefetch_switches: Option<u32>,
    /// CPU path, Linux: the share of the weights' resident bytes that the process maps in huge
    /// pages (2 MiB on x86-64). A decode step streams every weight page, so how the file sits in
    /// the page cache moves its speed: see `tern_pack::fsutil::HugePageWriter`.
    #[serde(default)]
    pub weights_huge_page_fraction: Option<f64>,
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// Bytes read per pass when measuring bandwidth.
    pub bandwidth_bytes: usize,
    pub seed: u64,
    pub kv: KvDtype,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            prompt_tokens: 128,
            gen_tokens: 64,
            bandwidth_bytes: 1 << 30,
            seed: 0,
            kv: KvDtype::F16,
        }
    }
}

fn cpu() -> String {
    "cpu".to_string()
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The share of the bytes of `regions` that this process maps in huge pages, as Linux reports
/// it per mapping in `/proc/self/smaps` (`FilePmdMapped`, `AnonHugePages` and `ShmemPmdMapped`
/// over `Rss`): each mapping's share, weighted by how many bytes of the regions it holds.
/// `None` where that file cannot be read or no mapping that holds them is resident. Regions
/// under 2 MiB (norms, scales) are left out: they are few bytes, in heaps that hold much else.
pub fn huge_page_fraction(regions: &[&[u8]]) -> Option<f64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    huge_page_fraction_in(&smaps, regions)
}

fn huge_page_fraction_in(smaps: &str, regions: &[&[u8]]) -> Option<f64> {
    let spans: Vec<(usize, usize)> = regions
        .iter()
        .filter(|r| r.len() >= 2 << 20)
        .map(|r| (r.as_ptr() as usize, r.as_ptr() as usize + r.len()))
        .collect();
    // Per mapping that holds any of the regions: bytes of them it holds, resident and huge KiB.
    let mut maps: Vec<(usize, u64, u64)> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let held = spans
                .iter()
                .map(|&(s, e)| e.min(b).saturating_sub(s.max(a)))
                .sum();
            maps.push((held, 0, 0));
            continue;
        }
        let Some(m) = maps.last_mut().filter(|m| m.0 > 0) else {
            continue;
        };
        let kb = words
            .next()
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(0);
        match first {
            "Rss:" => m.1 += kb,
            "FilePmdMapped:" | "AnonHugePages:" | "ShmemPmdMapped:" => m.2 += kb,
            _ => {}
        }
    }
    let (mut huge, mut held) = (0.0, 0.0);
    for &(bytes, rss, h) in maps.iter().filter(|m| m.0 > 0 && m.1 > 0) {
        huge += bytes as f64 * h as f64 / rss as f64;
        held += bytes as f64;
    }
    (held > 0.0).then(|| huge / held)
}

/// How a probe pass reads memory: plain loads, which leave the stream to the hardware
/// prefetchers, or with a software prefetch of each line some way ahead, as the decode kernels
/// read their weights. The roofline takes the fastest way: on Zen 4 the plain loop, the only
/// way before, read 8–17 % below the others, so the fractions it gave were that much too high.
/// Measured (`tern bench --model <700M, 2 bits> -p 128 -n 48`, every way after each step, two
/// runs): one thread 29.5 and 30.3 GB/s plain, 33.4 and 33.8 non-temporally 4 KB ahead, 35.0
/// and 35.2 into L1 8 KB ahead; two threads 41.9 and 44.0, 46.3 and 48.6, 44.0 and 47.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadWay {
    Plain,
    /// `prefetchnta` 4 KB ahead.
    NonTemporal,
    /// `prefetcht0` 8 KB ahead.
    IntoL1,
}

impl ReadWay {
    /// Every way, in the order the probe takes them.
    pub const ALL: [ReadWay; 3] = [ReadWay::Plain, ReadWay::NonTemporal, ReadWay::IntoL1];
}

/// Sums a slice of u64 (wrapping) in 8 independent lanes so it streams at full speed, reading it
/// the way `WAY` says (a [`ReadWay`] as a number: a constant, so each way is its own loop).
fn sum_u64<const WAY: u8>(v: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_NTA, _MM_HINT_T0, _mm_prefetch};
            let p = c.as_ptr().cast::<i8>();
            // SAFETY: a prefetch never faults and dereferences nothing.
            unsafe {
                match WAY {
                    1 => _mm_prefetch::<_MM_HINT_NTA>(p.wrapping_add(4096)),
                    2 => _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(8192)),
                    _ => {}
                }
            }
        }
        for (a, x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(*x);
        }
    }
    acc.iter().chain(rest).fold(0u64, |s, x| s.wrapping_add(*x))
}

/// A read-bandwidth probe over given memory: one pass streams every byte once on the current
/// rayon pool, in 1 MiB pieces shared among the threads.
pub struct StreamProbe<'a> {
    pieces: Vec<&'a [u64]>,
    /// Bytes one pass reads.
    pub bytes: usize,
}

impl<'a> StreamProbe<'a> {
    /// Bytes per piece handed to one thread at a time.
    const PIECE: usize = 1 << 20;

    /// A probe over `regions` (their 8-byte-aligned middles: at most 14 bytes of each are left
    /// out).
    pub fn new(regions: &[&'a [u8]]) -> StreamProbe<'a> {
        let pieces: Vec<&[u64]> = regions
            .iter()
            .flat_map(|r| {
                bytemuck::pod_align_to::<u8, u64>(r)
                    .1
                    .chunks(Self::PIECE / 8)
            })
            .collect();
        let bytes = pieces.iter().map(|p| p.len() * 8).sum();
        StreamProbe { pieces, bytes }
    }

    /// Streams every byte once, read the given way; returns the seconds taken.
    pub fn pass(&self, way: ReadWay) -> f64 {
        let sum = match way {
            ReadWay::Plain => sum_u64::<0>,
            ReadWay::NonTemporal => sum_u64::<1>,
            ReadWay::IntoL1 => sum_u64::<2>,
        };
        let t = Instant::now();
        // On the engine's own threads (those of its parallel regions), as decoding reads.
        let s = AtomicU64::new(0);
        team::for_each(self.pieces.len(), |i| {
            s.fetch_add(sum(self.pieces[i]), Ordering::Relaxed);
        });
        std::hint::black_box(s.load(Ordering::Relaxed));
        t.elapsed().as_secs_f64()
    }
}

/// The int8 multiply-accumulate peak of every thread of the current pool together, measured by
/// running the kernel module's register-only dot-product loop on all of them at once.
pub fn measure_int8_peak(isa: Isa) -> f64 {
    rayon::broadcast(|_| kernels::int8_peak_macs_per_s(isa, 300))
        .into_iter()
        .sum()
}

/// Checks `-p` and `-n` against a context and draws the random prompt.
fn bench_prompt(opts: &BenchOptions, context: usize, vocab: usize) -> Result<Vec<u32>> {
    let (p, n) = (opts.prompt_tokens, opts.gen_tokens);
    if p == 0 || n == 0 {
        return Err(Error::Usage("-p and -n must be at least 1".into()));
    }
    if p + n > context {
        return Err(Error::Usage(format!(
            "-p {p} plus -n {n} exceed the model's context of {context}"
        )));
    }
    let mut rng = SplitMix64::new(opts.seed);
    Ok((0..p)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect())
}

/// The mean bytes of the KV cache that the decode steps of a run read, `read(tokens)` for a
/// step attending to `tokens`: step `i` (`1..n`) attends to the `p` prompt tokens and `i` more.
fn kv_bytes_per_step(p: usize, n: usize, read: impl Fn(usize) -> usize) -> u64 {
    let steps = n.saturating_sub(1).max(1);
    (1..=steps).map(|i| read(p + i) as u64).sum::<u64>() / steps as u64
}

/// What [`timed_greedy`] measured.
struct Timing {
    ttft: std::time::Duration,
    decode_tok_s: f64,
    /// Per [`ReadWay`], the seconds of the probe passes run between decode steps, and how many.
    probe_secs: [f64; 3],
    probe_passes: [usize; 3],
}

impl Timing {
    /// The probe's read bandwidth, GB/s: that of its fastest way (`None` without passes).
    fn bandwidth(&self, bytes: usize) -> Option<f64> {
        (self.probe_passes.iter().all(|&n| n > 0)).then(|| {
            self.probe_passes
                .iter()
                .zip(&self.probe_secs)
                .map(|(&n, &secs)| (bytes * n) as f64 / secs / 1e9)
                .fold(0.0, f64::max)
        })
    }
}

/// Decode steps between two rounds of the bandwidth probe. A probe pass evicts what a step
/// reads again from the caches (norms, activations, the KV rows being appended), which the
/// step's own non-temporal streams leave in place: with a pass after every step, 700M 2-bit
/// decoded 2-4 % slower at one thread than with none during the decode (three alternated
/// pairs of `tern bench -p 128 -n 64`).
const PROBE_EVERY: usize = 8;

/// The prefill of `prompt` (time to first token, including the first argmax) and `n - 1`
/// greedy decode steps, every [`PROBE_EVERY`]th and the last followed (outside its timing) by
/// one pass of `probe` each [`ReadWay`] when given: the decode and the bandwidth it is compared
/// with are measured in the same stretch of a shared machine.
fn timed_greedy(
    dec: &mut dyn Decoder,
    prompt: &[u32],
    n: usize,
    probe: Option<&StreamProbe<'_>>,
) -> Result<Timing> {
    let t0 = Instant::now();
    let mut next = dec.argmax(prompt)?;
    let ttft = t0.elapsed();
    let (mut decode, mut probe_secs, mut probe_passes) = (0f64, [0f64; 3], [0usize; 3]);
    for step in 1..n {
        let t = Instant::now();
        next = dec.argmax(&[next])?;
        decode += t.elapsed().as_secs_f64();
        if let Some(p) = probe.filter(|_| step % PROBE_EVERY == 0 || step == n - 1) {
            for (w, &way) in ReadWay::ALL.iter().enumerate() {
                probe_secs[w] += p.pass(way);
                probe_passes[w] += 1;
            }
        }
    }
    let decode_tok_s = if n > 1 {
        (n - 1) as f64 / decode
    } else {
        1.0 / ttft.as_secs_f64()
    };
    Ok(Timing {
        ttft,
        decode_tok_s,
        probe_secs,
        probe_passes,
    })
}

/// Runs a prefill of `opts.prompt_tokens` random tokens and `opts.gen_tokens` greedy decode
/// steps on the current rayon pool, after a short warm-up that faults the weights in.
pub fn run(
    model: &Model<'_>,
    name: &str,
    format: &str,
    file_bytes: u64,
    opts: &BenchOptions,
) -> Result<BenchReport> {
    let (p, n) = (opts.prompt_tokens, opts.gen_tokens);
    let prompt = bench_prompt(opts, model.max_context(), model.spec.vocab_size)?;

    // Warm-up: fault in every page of the weights and the first caches.
    let mut cache = KvCache::new(&model.spec, p.min(8) + 1, opts.kv);
    model.forward(&prompt[..p.min(8)], &mut cache, Logits::Last)?;
    model.forward(&prompt[..1], &mut cache, Logits::Last)?;
    drop(cache);

    // The roofline's bandwidth: streaming the very weight pages a decode step reads, a round of
    // passes every few steps. It allocates nothing, so the peak RSS is the engine's own.
    let regions = model.weight_regions();
    let probe = StreamProbe::new(&regions);
    probe.pass(ReadWay::Plain);
    let round_trip_before = team::round_trip_ns(20);
    // The cache faults its pages in when created: part of the time to first token.
    let t0 = Instant::now();
    let cache = KvCache::new(&model.spec, p + n, opts.kv);
    let create = t0.elapsed();
    let mut dec = CpuDecoder { model, cache };
    let t = timed_greedy(&mut dec, &prompt, n, (n > 1).then_some(&probe))?;
    let (ttft, decode_tok_s) = (t.ttft + create, t.decode_tok_s);
    let prefill_tok_s = p as f64 / ttft.as_secs_f64();
    let cache = dec.cache;
    // Right after decoding, before anything else may move the threads.
    let round_trip = team::round_trip_ns(20);
    let bytes_per_token = model.weight_bytes_per_token() as u64;
    let peak_rss = peak_rss_bytes();
    let huge = huge_page_fraction(&regions);
    // No decode steps: three passes of each way after the prefill, the fastest.
    let bandwidth = t.bandwidth(probe.bytes).unwrap_or_else(|| {
        ReadWay::ALL
            .iter()
            .flat_map(|&w| (0..3).map(move |_| w))
            .map(|w| probe.bytes as f64 / probe.pass(w) / 1e9)
            .fold(0.0, f64::max)
    });
    let effective = bytes_per_token as f64 * decode_tok_s / 1e9;
    let kv_read = kv_bytes_per_step(p, n, |t| KvCache::read_bytes_for(&model.spec, t, opts.kv));
    let macs = model.linear_macs_per_token();
    let peak = measure_int8_peak(model.isa);
    let int8_model = model.activations() == "int8";
    Ok(BenchReport {
        model: name.to_string(),
        format: format.to_string(),
        activations: model.activations().to_string(),
        device: cpu(),
        isa: model.isa.name().to_string(),
        threads: rayon::current_num_threads(),
        prompt_tokens: p,
        generated_tokens: n,
        prefill_tok_s,
        decode_tok_s,
        ttft_ms: ttft.as_secs_f64() * 1e3,
        peak_rss_bytes: peak_rss,
        file_bytes,
        kv_cache_bytes: cache.bytes(&model.spec) as u64,
        kv: cache.dtype().name().to_string(),
        gpu_memory_bytes: None,
        weight_bytes_per_token: bytes_per_token,
        effective_gb_s: effective,
        measured_bandwidth_gb_s: bandwidth,
        roofline_fraction: effective / bandwidth,
        kv_bytes_per_token: kv_read,
        read_roofline_fraction: (bytes_per_token + kv_read) as f64 * decode_tok_s / 1e9 / bandwidth,
        linear_macs_per_token: macs,
        int8_peak_gmacs: Some(peak / 1e9),
        prefill_int8_peak_fraction: int8_model.then(|| macs as f64 * prefill_tok_s / peak),
        thread_round_trip_ns: round_trip,
        thread_round_trip_before_ns: round_trip_before,
        prefetch: Some(model.prefetch.mode().name().to_string()),
        prefetch_hint: Some(model.prefetch.held().name().to_string()),
        prefetch_switches: Some(model.prefetch.switches()),
        weights_huge_page_fraction: huge,
    })
}

/// [`run`] on the GPU path: the same prefill and greedy decode (argmax on the device, one
/// submission and a 4-byte read-back per token), the device's memory, and the effective
/// bandwidth over the device's measured copy bandwidth.
#[cfg(feature = "gpu")]
pub fn run_gpu(
    gpu: &crate::gpu::GpuModel,
    name: &str,
    format: &str,
    file_bytes: u64,
    opts: &BenchOptions,
) -> Result<BenchReport> {
    use crate::gpu::{GpuSession, Want};
    let spec = gpu.spec();
    let (p, n) = (opts.prompt_tokens, opts.gen_tokens);
    let prompt = bench_prompt(opts, spec.max_position_embeddings, spec.vocab_size)?;
    let mut s = GpuSession::new(gpu, p + n, false)?;
    // Warm-up: first dispatches of every pipeline, driver-side allocations.
    s.forward(&prompt[..p.min(8)], Want::Argmax)?;
    s.forward(&prompt[..1], Want::Argmax)?;
    s.clear();
    let t = timed_greedy(&mut s, &prompt, n, None)?;
    let (ttft, decode_tok_s) = (t.ttft, t.decode_tok_s);
    let prefill_tok_s = p as f64 / ttft.as_secs_f64();
    let bytes_per_token = gpu.weight_bytes_per_token();
    // Before the bandwidth probe allocates its buffers (host memory on a software device).
    let peak_rss = peak_rss_bytes();
    let bandwidth = gpu
        .context()
        .measure_copy_bandwidth(opts.bandwidth_bytes as u64)?;
    let effective = bytes_per_token as f64 * decode_tok_s / 1e9;
    // The GPU's cache is not blocked: each step reads its rows.
    let kv_read = kv_bytes_per_step(p, n, |t| KvCache::bytes_for(spec, t, KvDtype::F32));
    Ok(BenchReport {
        model: name.to_string(),
        format: format.to_string(),
        activations: gpu.activations().to_string(),
        device: gpu.context().describe(),
        isa: "gpu".to_string(),
        threads: 1,
        prompt_tokens: p,
        generated_tokens: n,
        prefill_tok_s,
        decode_tok_s,
        ttft_ms: ttft.as_secs_f64() * 1e3,
        peak_rss_bytes: peak_rss,
        file_bytes,
        kv_cache_bytes: s.kv_cache_bytes(),
        kv: KvDtype::F32.name().to_string(),
        gpu_memory_bytes: Some(gpu.resident_bytes() + s.session_bytes()),
        weight_bytes_per_token: bytes_per_token,
        effective_gb_s: effective,
        measured_bandwidth_gb_s: bandwidth,
        roofline_fraction: effective / bandwidth,
        kv_bytes_per_token: kv_read,
        read_roofline_fraction: (bytes_per_token + kv_read) as f64 * decode_tok_s / 1e9 / bandwidth,
        linear_macs_per_token: gpu.linear_macs_per_token(),
        int8_peak_gmacs: None,
        prefill_int8_peak_fraction: None,
        thread_round_trip_ns: None,
        thread_round_trip_before_ns: None,
        prefetch: None,
        prefetch_hint: None,
        prefetch_switches: None,
        weights_huge_page_fraction: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_counted_in_the_weights_mappings_only() {
        let buf = vec![0u8; 4 << 20];
        let at = buf.as_ptr() as usize;
        // The weights' mapping (two entries, as the kernel splits one map where its pages
        // differ), then another file's, in the format of `/proc/PID/smaps`.
        let smaps = format!(
            "{a:x}-{b:x} r--s 00000000 fd:00 12 /m/model.safetensors\n\
             Size:               4096 kB\nRss:                4096 kB\n\
             FilePmdMapped:      2048 kB\nAnonHugePages:         0 kB\n\
             {b:x}-{c:x} r--s 00400000 fd:00 12 /m/model.safetensors\n\
             Rss:                1024 kB\nFilePmdMapped:         0 kB\n\
             {c:x}-{d:x} r--p 00000000 fd:00 13 /usr/lib/libc.so.6\n\
             Rss:                8192 kB\nFilePmdMapped:      8192 kB\n",
            a = at - 8,
            b = at + (3 << 20),
            c = at + buf.len(),
            d = at + buf.len() + 8192,
        );
        let whole = [&buf[..]];
        // Three of its MiB in the first mapping (half huge), one in the second (none).
        assert_eq!(huge_page_fraction_in(&smaps, &whole), Some(0.375));
        let first = [&buf[..2 << 20]];
        assert_eq!(huge_page_fraction_in(&smaps, &first), Some(0.5));
        // Small regions do not count: nothing is left.
        assert_eq!(huge_page_fraction_in(&smaps, &[&buf[..64]]), None);
        assert_eq!(huge_page_fraction_in("", &whole), None);
        // This process's own map of its heap, as Linux reports it: a fraction, whatever it is.
        if let Some(f) = huge_page_fraction(&whole) {
            assert!((0.0..=1.0).contains(&f), "{f}");
        }
    }

    #[test]
    fn every_read_way_sums_the_same() {
        let v: Vec<u64> = (0..10_003u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        // Empty, shorter than one 8-lane chunk, whole chunks, and a tail.
        for n in [0, 1, 7, 8, 9, 4096, 10_003] {
            let v = &v[..n];
            let want = v.iter().fold(0u64, |s, x| s.wrapping_add(*x));
            let got = [sum_u64::<0>(v), sum_u64::<1>(v), sum_u64::<2>(v)];
            assert_eq!(got, [want; 3], "{n} values");
        }
    }
}
