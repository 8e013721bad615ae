//! Errors of the wgpu path. Every variant names what it is about (adapter, tensor, call).

/// Errors of [`crate::gpu`].
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter on any of the backends this build enables.
    #[error(
        "no GPU adapter found through wgpu ({backends}); on Linux install a Vulkan driver, e.g. \
         Debian's mesa-vulkan-drivers for the lavapipe software device"
    )]
    NoAdapter {
        /// The backends that were asked, e.g. `Vulkan, Metal, DX12`.
        backends: String,
    },
    /// The adapter refused to open a device with the limits it advertised.
    #[error("GPU adapter `{adapter}`: cannot open a device: {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },
    /// Inputs whose lengths or shapes disagree with the matrix (or with each other).
    #[error("{tensor}: {reason}")]
    Shape { tensor: String, reason: String },
    /// Packed bytes or scales that tern's codecs never write.
    #[error("{tensor}: {reason}")]
    Format { tensor: String, reason: String },
    /// A matrix or batch larger than this device's buffer or dispatch limits.
    #[error("{tensor}: {reason}")]
    Limit { tensor: String, reason: String },
    /// Something the GPU path does not serve (yet); the reason says what to use instead.
    #[error("{what}: {reason}")]
    Unsupported { what: String, reason: String },
    /// An error reported by wgpu or the driver (validation, out of memory, device lost, mapping).
    #[error("GPU device, {what}: {reason}")]
    Device { what: String, reason: String },
}

/// Result with [`GpuError`].
pub type Result<T, E = GpuError> = std::result::Result<T, E>;

impl GpuError {
    pub(crate) fn shape(tensor: &str, reason: impl Into<String>) -> Self {
        GpuError::Shape {
            tensor: tensor.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn format(tensor: &str, reason: impl ToString) -> Self {
        GpuError::Format {
            tensor: tensor.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn limit(tensor: &str, reason: impl Into<String>) -> Self {
        GpuError::Limit {
            tensor: tensor.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn device(what: impl Into<String>, reason: impl ToString) -> Self {
        GpuError::Device {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
