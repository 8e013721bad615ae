//! The wgpu inference path (feature `gpu`): the whole forward pass of tern's models on a GPU,
//! with WGSL kernels over the packed ternary matrices.
//!
//! * [`GpuContext`]: one adapter, device and queue, with the compiled kernels.
//! * [`GpuTernaryMatrix`]: a packed 2-bit or 1.6-bit matrix uploaded once, then multiplied by
//!   batches of `n >= 1` tokens, in the arithmetic of [`crate::linear::TernaryLinear`]: float
//!   activations (TriLM) or per-token int8 activations (BitNet) with exact i32 dot products.
//! * [`GpuModel`]: every weight of a loaded [`crate::Model`] on the device; [`GpuSession`]: one
//!   generation (KV cache, activations), a forward pass being one submission
//!   (`model.rs`, `plan.rs`, `session.rs`; the non-matrix kernels in `ops.rs`).
//!
//! The kernels read the checkpoint's bytes as they are (see `tern_pack::codec`) and decode trits
//! in registers; float weights never exist on the device. `ternary.rs` holds the matrix and the
//! workgroup design, `dispatch.rs` the pipelines and the per-call buffers, `common.wgsl` the
//! layout walk and the digit decoders shared by `ternary_f32.wgsl` and `ternary_i8.wgsl`. Their
//! scalar twins are `tern_pack::dot` (tested in `tests/gpu_kernels.rs`).
//!
//! wgpu's native futures (adapter, device, error scopes) are ready on their first poll, and
//! buffer mapping completes inside `Device::poll`, so a ten-line `block_on` replaces an async
//! runtime.

mod dispatch;
mod error;
mod model;
mod ops;
mod plan;
mod session;
mod ternary;

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

pub use error::{GpuError, Result};
pub use model::GpuModel;
pub use session::{GpuSession, MAX_BATCH, Output, Want};
pub use ternary::{
    GpuTernaryMatrix, MAX_GROUPS_PER_DIMENSION, ROWS_PER_WORKGROUP, THREADS_PER_ROW,
    TOKENS_PER_WORKGROUP,
};

/// The backends searched for an adapter (the native compute APIs; no GL, no browser).
const BACKENDS: wgpu::Backends = wgpu::Backends::VULKAN
    .union(wgpu::Backends::METAL)
    .union(wgpu::Backends::DX12);

/// A GPU device with tern's kernels compiled for it. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct GpuContext {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub kernels: dispatch::Kernels,
    pub ops: ops::Ops,
    /// Activation, output and readback buffers reused across calls (grown on demand); the lock
    /// also serializes calls, which share one queue anyway.
    pub scratch: Mutex<dispatch::Scratch>,
    /// The last error wgpu raised outside an error scope (reported by the next call).
    pub uncaptured: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// Opens the highest-performance adapter wgpu finds on Vulkan, Metal or DX12 (a discrete GPU
    /// before an integrated one, a software device such as lavapipe last), with every limit the
    /// adapter offers, and compiles the kernels.
    pub fn new() -> Result<GpuContext> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = BACKENDS;
        let instance = wgpu::Instance::new(desc);
        let adapter = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|_| GpuError::NoAdapter {
            backends: "Vulkan, Metal, DX12".to_string(),
        })?;
        let info = adapter.get_info();
        let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("tern"),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|source| GpuError::RequestDevice {
            adapter: info.name.clone(),
            source,
        })?;
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                *slot = Some(e.to_string());
            }
        }));
        let (kernels, ops) = scoped(&device, "compiling the kernels", || {
            (dispatch::Kernels::new(&device), ops::Ops::new(&device))
        })?;
        let scratch = Mutex::new(dispatch::Scratch::new(&device));
        Ok(GpuContext {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                kernels,
                ops,
                scratch,
                uncaptured,
            }),
        })
    }

    /// The adapter in use: name, backend, device type, driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// One line naming the adapter, e.g. `llvmpipe (LLVM 19.1.7, 256 bits) (Vulkan, Cpu)`.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        format!("{} ({}, {:?})", i.name, i.backend, i.device_type)
    }

    /// The device's memory bandwidth as a copy of a `bytes` buffer (at most the binding limit)
    /// into another sees it: bytes read plus bytes written per second (GB/s, 10^9), the best of
    /// 5 timed copies after a warm-up.
    pub fn measure_copy_bandwidth(&self, bytes: u64) -> Result<f64> {
        let device = &self.inner.device;
        let limits = device.limits();
        let size = bytes.min(limits.max_buffer_size).max(1 << 20) & !3;
        let buffers = scoped(device, "measuring the copy bandwidth", || {
            let make = |label, usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage,
                    mapped_at_creation: false,
                })
            };
            (
                make("bandwidth src", wgpu::BufferUsages::COPY_SRC),
                make("bandwidth dst", wgpu::BufferUsages::COPY_DST),
            )
        })?;
        let mut best = 0f64;
        for round in 0..6 {
            let t = std::time::Instant::now();
            let mut enc = device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&buffers.0, 0, &buffers.1, 0, size);
            self.inner.queue.submit([enc.finish()]);
            device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| GpuError::device("measuring the copy bandwidth", e))?;
            let secs = t.elapsed().as_secs_f64();
            if round > 0 {
                best = best.max(2.0 * size as f64 / secs / 1e9);
            }
        }
        Ok(best)
    }

    /// The device limits the kernels run under.
    pub fn limits(&self) -> wgpu::Limits {
        self.inner.device.limits()
    }
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.describe())
            .finish()
    }
}

/// Runs `f` inside out-of-memory, validation and internal error scopes and turns what they
/// catch (or an earlier uncaptured error) into [`GpuError::Device`] about `what`.
pub(crate) fn scoped<T>(device: &wgpu::Device, what: &str, f: impl FnOnce() -> T) -> Result<T> {
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = f();
    // Scopes pop in reverse order of their creation.
    let errors = [
        block_on(validation.pop()),
        block_on(oom.pop()),
        block_on(internal.pop()),
    ];
    match errors.into_iter().flatten().next() {
        Some(e) => Err(GpuError::device(what, e)),
        None => Ok(out),
    }
}

/// Drives a future to completion on this thread. wgpu-core's futures are ready on the first
/// poll; the loop only guards against a backend that is not.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}
