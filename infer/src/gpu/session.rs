//! One generation on a [`GpuModel`]: the KV cache and activation buffers, and the forward pass
//! as one submission per batch of tokens.

use super::dispatch::{STEP_BYTES, read_back};
use super::model::{GpuModel, HeadRef, Matrix};
use super::plan::{Count, Grid, Op, Out, Planner};
use super::{GpuError, Result, scoped};
use crate::model::Logits;
use crate::{KvCache, KvDtype};

/// Tokens of one prefill pass at most (longer prompts run in several passes).
pub const MAX_BATCH: usize = 128;

/// Session buffers.
pub(crate) struct Buffers {
    pub(crate) step: wgpu::Buffer,
    pub(crate) tokens: wgpu::Buffer,
    pub(crate) rope: wgpu::Buffer,
    /// The residual stream, `[batch, hidden]`.
    pub(crate) x: wgpu::Buffer,
    /// Normed floats, `[batch, widest stride]`.
    pub(crate) xn: wgpu::Buffer,
    /// Int8 codes, `[batch, widest stride / 4]` words, and `(x_scale, sum)` per token.
    pub(crate) codes: wgpu::Buffer,
    pub(crate) tokq: wgpu::Buffer,
    pub(crate) q: wgpu::Buffer,
    pub(crate) k: wgpu::Buffer,
    pub(crate) v: wgpu::Buffer,
    pub(crate) attn: wgpu::Buffer,
    pub(crate) gate: wgpu::Buffer,
    pub(crate) up: wgpu::Buffer,
    pub(crate) scores: wgpu::Buffer,
    pub(crate) logits: wgpu::Buffer,
    pub(crate) argmax: wgpu::Buffer,
    pub(crate) readback: wgpu::Buffer,
    pub(crate) k_cache: Vec<wgpu::Buffer>,
    pub(crate) v_cache: Vec<wgpu::Buffer>,
}

/// What a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Logits (`[1, vocab]` or `[n, vocab]`).
    Logits(Logits),
    /// The greedy next token only.
    Argmax,
}

/// The outputs of [`GpuSession::forward`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Logits(Vec<f32>),
    Token(u32),
}

/// One generation on a [`GpuModel`]: its KV cache, activations and recorded dispatches.
pub struct GpuSession<'m> {
    model: &'m GpuModel,
    capacity: usize,
    batch: usize,
    len: usize,
    all_logits: bool,
    b: Buffers,
    body: Vec<Op>,
    head: Vec<Op>,
    argmax: Op,
    session_bytes: u64,
    /// RoPE angles per token (`head_dim / 2`).
    half: usize,
}

impl<'m> GpuSession<'m> {
    /// A session for up to `capacity` tokens (prompt and generated). With `all_logits` it can
    /// return every token's logits ([`Logits::All`]); otherwise only the last token's.
    pub fn new(model: &'m GpuModel, capacity: usize, all_logits: bool) -> Result<GpuSession<'m>> {
        Self::with_max_batch(model, capacity, all_logits, MAX_BATCH)
    }

    /// [`Self::new`] running at most `max_batch` tokens per pass (at least 1).
    pub fn with_max_batch(
        model: &'m GpuModel,
        capacity: usize,
        all_logits: bool,
        max_batch: usize,
    ) -> Result<GpuSession<'m>> {
        let spec = &model.spec;
        let device = &model.ctx.inner.device;
        let limits = device.limits();
        let max_bind = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        if capacity == 0 || capacity > spec.max_position_embeddings {
            return Err(GpuError::shape(
                "KV cache",
                format!(
                    "capacity {capacity} must be in 1..={} (max_position_embeddings)",
                    spec.max_position_embeddings
                ),
            ));
        }
        let heads = spec.num_heads;
        let mut batch = capacity.min(max_batch).max(1);
        while batch > 1 && (batch * heads * capacity * 4) as u64 > max_bind {
            batch /= 2;
        }
        let (h, hd, kv_heads) = (spec.hidden_size, spec.head_dim, spec.num_kv_heads);
        let (qd, kvd, inter, vocab) = (
            heads * hd,
            kv_heads * hd,
            spec.intermediate_size,
            spec.vocab_size,
        );
        let mut hidden_readers: Vec<&Matrix> = Vec::new();
        let mut attn_readers: Vec<&Matrix> = Vec::new();
        let mut ffn_readers: Vec<&Matrix> = Vec::new();
        for l in &model.layers {
            hidden_readers.extend([&l.q.m, &l.k.m, &l.v.m, &l.gate.m, &l.up.m]);
            attn_readers.push(&l.o.m);
            ffn_readers.push(&l.down.m);
        }
        if let HeadRef::Own(m) = model.head() {
            hidden_readers.push(m);
        }
        let s_h = GpuModel::stride(h, &hidden_readers);
        let s_q = GpuModel::stride(qd, &attn_readers);
        let s_i = GpuModel::stride(inter, &ffn_readers);
        let widest = s_h.max(s_q).max(s_i);
        let logit_rows = if all_logits { batch } else { 1 };

        let mut bytes = 0u64;
        let mut alloc = |name: &str, size: usize, usage: wgpu::BufferUsages| -> Result<_> {
            let size = (size.max(4).next_multiple_of(4)) as u64;
            if size > max_bind {
                return Err(GpuError::limit(
                    name,
                    format!(
                        "{size} bytes exceed this device's storage binding of {max_bind} \
                         (try a shorter --max-tokens)"
                    ),
                ));
            }
            bytes += size;
            Ok(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(name),
                size,
                usage,
                mapped_at_creation: false,
            }))
        };
        use wgpu::BufferUsages as U;
        let rw = U::STORAGE | U::COPY_SRC | U::COPY_DST;
        let half = hd / 2;
        let mut k_cache = Vec::new();
        let mut v_cache = Vec::new();
        let b = scoped(
            device,
            "allocating the session's buffers",
            || -> Result<_> {
                for l in 0..model.layers.len() {
                    k_cache.push(alloc(
                        &format!("layer {l} k cache"),
                        capacity * kvd * 4,
                        rw,
                    )?);
                    v_cache.push(alloc(
                        &format!("layer {l} v cache"),
                        capacity * kvd * 4,
                        rw,
                    )?);
                }
                Ok(Buffers {
                    step: alloc("step", STEP_BYTES as usize, U::UNIFORM | U::COPY_DST)?,
                    tokens: alloc("tokens", batch * 4, rw)?,
                    rope: alloc("rope", 2 * batch * half * 4, rw)?,
                    x: alloc("residual", batch * h * 4, rw)?,
                    xn: alloc("normed", batch * widest * 4, rw)?,
                    codes: alloc("int8 codes", batch * widest, rw)?,
                    tokq: alloc("int8 scales", batch * 8, rw)?,
                    q: alloc("q", batch * qd * 4, rw)?,
                    k: alloc("k", batch * kvd * 4, rw)?,
                    v: alloc("v", batch * kvd * 4, rw)?,
                    attn: alloc("attention", batch * s_q * 4, rw)?,
                    gate: alloc("gate", batch * s_i * 4, rw)?,
                    up: alloc("up", batch * s_i * 4, rw)?,
                    scores: alloc("scores", batch * heads * capacity * 4, rw)?,
                    logits: alloc("logits", logit_rows * vocab * 4, rw)?,
                    argmax: alloc("argmax", 16, rw)?,
                    readback: alloc(
                        "readback",
                        logit_rows * vocab * 4,
                        U::MAP_READ | U::COPY_DST,
                    )?,
                    k_cache: std::mem::take(&mut k_cache),
                    v_cache: std::mem::take(&mut v_cache),
                })
            },
        )??;

        let plan = Planner {
            model,
            b: &b,
            eps: spec.rms_norm_eps as f32,
            batch,
            capacity,
        };
        let mut body = vec![plan.embed()];
        for (l, layer) in model.layers.iter().enumerate() {
            plan.layer(l, layer, (s_h, s_q, s_i), &mut body);
        }
        let mut head = Vec::new();
        let head_readers: Vec<&Matrix> = match model.head() {
            HeadRef::Own(m) => vec![m],
            HeadRef::Tied(_) => vec![],
        };
        let head_in = plan.norm(
            "final norm",
            (&b.x, h, h),
            Some(&model.norm),
            &head_readers,
            s_h,
            true,
            &mut head,
        );
        let out = Out {
            buf: &b.logits,
            stride: vocab,
            accumulate: false,
            bias: None,
            count: Count::M,
        };
        head.push(match model.head() {
            HeadRef::Own(m) => plan.matmul("lm_head", m, head_in.pick(m), out),
            HeadRef::Tied(e) => plan.dense("lm_head (tied)", e, head_in.float(), out),
        });
        let argmax = plan.op(
            &model.ctx.inner.ops.argmax,
            "argmax",
            &[
                (0, &b.logits),
                (1, &b.argmax),
                (2, &plan.uniform("argmax", &[vocab as u32, 0, 0, 0])),
                (3, &b.step),
            ],
            Grid::One,
        );
        Ok(GpuSession {
            model,
            capacity,
            batch,
            len: 0,
            all_logits,
            b,
            body,
            head,
            argmax,
            session_bytes: bytes,
            half,
        })
    }

    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens the cache holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tokens per forward pass (longer batches are split).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Forgets the cached tokens.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Bytes of the session's buffers (KV cache, activations, logits).
    pub fn session_bytes(&self) -> u64 {
        self.session_bytes
    }

    /// Bytes of the KV cache (f32 keys and values for `capacity` tokens).
    pub fn kv_cache_bytes(&self) -> u64 {
        KvCache::bytes_for(&self.model.spec, self.capacity, KvDtype::F32) as u64
    }

    /// Runs `tokens` at positions `len()..` and returns what `want` asks for.
    pub fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Output> {
        let spec = &self.model.spec;
        let n_all = tokens.len();
        if n_all == 0 {
            return Err(GpuError::shape("prompt", "no tokens to run"));
        }
        if self.len + n_all > self.capacity {
            return Err(GpuError::shape(
                "prompt",
                format!(
                    "{n_all} tokens do not fit the context: {} cached, room for {}",
                    self.len, self.capacity
                ),
            ));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= spec.vocab_size) {
            return Err(GpuError::shape(
                "prompt",
                format!(
                    "token id {t} is outside the vocabulary (size {})",
                    spec.vocab_size
                ),
            ));
        }
        if want == Want::Logits(Logits::All) && !self.all_logits {
            return Err(GpuError::shape(
                "logits",
                "this session was created for the last token's logits only",
            ));
        }
        let chunks: Vec<&[u32]> = tokens.chunks(self.batch).collect();
        let mut all = Vec::new();
        let mut token = 0;
        for (c, chunk) in chunks.iter().enumerate() {
            let last = c + 1 == chunks.len();
            let n = chunk.len();
            // (first, m, run the head, read back)
            let (first, m, head) = match want {
                Want::Logits(Logits::All) => (0, n, true),
                _ if last => (n - 1, 1, true),
                _ => (0, 0, false),
            };
            let read = self.pass(chunk, first, m, head, want == Want::Argmax && last)?;
            match want {
                Want::Logits(_) if head => all.extend(read.iter().map(|&b| f32::from_bits(b))),
                Want::Argmax if last => token = read[0],
                _ => {}
            }
        }
        Ok(match want {
            Want::Argmax => Output::Token(token),
            Want::Logits(_) => Output::Logits(all),
        })
    }

    /// One submission: `n <= batch` tokens through every layer, then (with `head`) the head on
    /// tokens `first .. first + m`, and argmax of the last of those rows.
    fn pass(
        &mut self,
        tokens: &[u32],
        first: usize,
        m: usize,
        head: bool,
        argmax: bool,
    ) -> Result<Vec<u32>> {
        let inner = &self.model.ctx.inner;
        if let Some(e) = inner.uncaptured.lock().ok().and_then(|mut e| e.take()) {
            return Err(GpuError::device(
                "forward pass",
                format!("earlier error: {e}"),
            ));
        }
        let device = &inner.device;
        let q = &inner.queue;
        let n = tokens.len();
        let start = self.len;
        // RoPE angles of the pass's n positions, as the CPU engine computes them; the buffer
        // holds the cos table, then the sin table at `batch · half`.
        let (cos, sin): (Vec<f32>, Vec<f32>) = (start..start + n)
            .flat_map(|pos| {
                self.model.inv_freq.iter().map(move |&f| {
                    let a = pos as f32 * f;
                    (a.cos(), a.sin())
                })
            })
            .unzip();
        let sin_at = (self.batch * self.half * 4) as u64;
        let vocab = self.model.spec.vocab_size;
        let read_bytes = if argmax { 4 } else { (m * vocab * 4) as u64 };
        let words = scoped(device, "forward pass", || {
            q.write_buffer(&self.b.tokens, 0, bytemuck::cast_slice(tokens));
            q.write_buffer(&self.b.rope, 0, bytemuck::cast_slice(&cos));
            q.write_buffer(&self.b.rope, sin_at, bytemuck::cast_slice(&sin));
            let step = [n as u32, start as u32, first as u32, m as u32];
            q.write_buffer(&self.b.step, 0, bytemuck::cast_slice(&step));
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                let head_ops: &[Op] = if head { &self.head } else { &[] };
                let ops = (self.body.iter())
                    .chain(head_ops)
                    .chain(argmax.then_some(&self.argmax));
                for op in ops {
                    let (pipeline, bind) = op.choose(n as u32, m as u32);
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, bind, &[]);
                    let [x, y, z] = op.grid.size(n as u32, m as u32);
                    pass.dispatch_workgroups(x, y, z);
                }
            }
            if head {
                let src = if argmax {
                    &self.b.argmax
                } else {
                    &self.b.logits
                };
                enc.copy_buffer_to_buffer(src, 0, &self.b.readback, 0, read_bytes);
            }
            q.submit([enc.finish()]);
            // A pass without the head feeds the next one (queued after it): nothing to wait for.
            if head {
                read_back(device, &self.b.readback, read_bytes)
            } else {
                Ok(Vec::new())
            }
        })?;
        let words = words.map_err(|e| GpuError::device("forward pass", e))?;
        self.len += n;
        Ok(words)
    }
}

impl crate::generate::Decoder for GpuSession<'_> {
    fn spec(&self) -> &tern_pack::spec::ModelSpec {
        self.model.spec()
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn cached(&self) -> usize {
        self.len
    }
    fn last_logits(&mut self, tokens: &[u32]) -> crate::Result<Vec<f32>> {
        match self.forward(tokens, Want::Logits(Logits::Last))? {
            Output::Logits(l) => Ok(l),
            Output::Token(_) => unreachable!("logits were asked for"),
        }
    }
    fn argmax(&mut self, tokens: &[u32]) -> crate::Result<u32> {
        match self.forward(tokens, Want::Argmax)? {
            Output::Token(t) => Ok(t),
            Output::Logits(_) => unreachable!("a token was asked for"),
        }
    }
}
