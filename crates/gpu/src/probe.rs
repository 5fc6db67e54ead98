//! Whether a device exists, asked before cubecl creates a client: cubecl panics (in a thread of
//! its own) when a runtime has no device, and our constructors return a typed error instead.

use std::panic::{AssertUnwindSafe, catch_unwind};

use cubecl::Runtime;
use cubecl::prelude::ComputeClient;

use crate::{GpuError, Result};

/// The environment variable that turns a missing device into a failure of the GPU tests (CI
/// sets it): set to anything but empty or `0`.
pub const REQUIRE_GPU_ENV: &str = "POLYSKETCH_REQUIRE_GPU";

/// A short name of the runtime `R` for messages: `wgpu`, `cuda`, or its type name.
pub(crate) fn runtime_label<R: Runtime>() -> &'static str {
    #[cfg(feature = "wgpu")]
    if core::any::TypeId::of::<R>() == core::any::TypeId::of::<cubecl::wgpu::WgpuRuntime>() {
        return "wgpu";
    }
    #[cfg(feature = "cuda")]
    if core::any::TypeId::of::<R>() == core::any::TypeId::of::<cubecl::cuda::CudaRuntime>() {
        return "cuda";
    }
    core::any::type_name::<R>()
}

/// The client of `device`, or [`GpuError::NoDevice`]: the runtime is asked first where we know
/// how (wgpu: is there an adapter for this device?), and a panic of the runtime while it
/// creates the client (any runtime) is caught and returned as the same error.
pub(crate) fn client<R: Runtime>(device: &R::Device) -> Result<ComputeClient<R>> {
    let no_device = |reason: String| GpuError::NoDevice { runtime: runtime_label::<R>(), reason };
    ask::<R>(device).map_err(no_device)?;
    catch_unwind(AssertUnwindSafe(|| R::client(device))).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "the runtime panicked while creating its client".into());
        no_device(message)
    })
}

/// `Err(why)` when the runtime says it has no such device.
fn ask<R: Runtime>(device: &R::Device) -> core::result::Result<(), String> {
    #[cfg(feature = "wgpu")]
    if let Some(device) = (device as &dyn core::any::Any).downcast_ref() {
        return wgpu_adapter(device);
    }
    #[cfg(not(feature = "wgpu"))]
    let _ = device;
    Ok(())
}

/// Whether wgpu finds the adapter cubecl would pick for `device` (the default device: any
/// adapter of the platform's backend; a numbered device: enough adapters of its type). The
/// answer for the default device is asked once per process.
#[cfg(feature = "wgpu")]
fn wgpu_adapter(device: &cubecl::wgpu::WgpuDevice) -> core::result::Result<(), String> {
    use cubecl::wgpu::{AutoGraphicsApi, GraphicsApi, WgpuDevice};
    use std::sync::OnceLock;
    use wgpu::DeviceType;

    static DEFAULT: OnceLock<core::result::Result<(), String>> = OnceLock::new();
    let backend = AutoGraphicsApi::backend();
    #[allow(deprecated)]
    let (kind, index) = match device {
        WgpuDevice::Existing(_) => return Ok(()),
        WgpuDevice::DefaultDevice | WgpuDevice::BestAvailable => {
            return DEFAULT.get_or_init(|| default_adapter(backend)).clone();
        }
        WgpuDevice::DiscreteGpu(i) => (DeviceType::DiscreteGpu, *i),
        WgpuDevice::IntegratedGpu(i) => (DeviceType::IntegratedGpu, *i),
        WgpuDevice::VirtualGpu(i) => (DeviceType::VirtualGpu, *i),
        WgpuDevice::Cpu => (DeviceType::Cpu, 0),
    };
    let adapters = cubecl::future::block_on(instance(backend).enumerate_adapters(backend.into()));
    let types: Vec<DeviceType> = adapters.iter().map(|a| a.get_info().device_type).collect();
    // cubecl takes the `index`-th adapter of the type, else the `index`-th of type Other
    let of = |t: DeviceType| types.iter().filter(|&&d| d == t).count();
    if of(kind) > index || of(DeviceType::Other) > index {
        Ok(())
    } else {
        Err(format!("no {kind:?} adapter number {index} on {backend:?} (adapters: {types:?})"))
    }
}

/// A wgpu instance on `backend` alone, as cubecl makes it.
#[cfg(feature = "wgpu")]
fn instance(backend: wgpu::Backend) -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

/// Whether wgpu gives the adapter cubecl requests for the default device.
#[cfg(feature = "wgpu")]
fn default_adapter(backend: wgpu::Backend) -> core::result::Result<(), String> {
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        force_fallback_adapter: false,
        compatible_surface: None,
    };
    cubecl::future::block_on(instance(backend).request_adapter(&options)).map(|_| ()).map_err(|e| {
        // wgpu goes on to list every backend it did not try: keep the cause
        let e = e.to_string();
        let cause = e.split(';').next().unwrap_or(&e);
        format!(
            "no {backend:?} adapter ({cause}); a software driver is Mesa's lavapipe \
                 (Debian: mesa-vulkan-drivers libvulkan1)"
        )
    })
}

/// The default device of runtime `R` for a test or an example, or `None` after one line on
/// standard error saying that `test` was skipped and why. The line is written past the test
/// harness's capture, so `cargo test` shows it.
///
/// # Panics
/// When [`REQUIRE_GPU_ENV`] (`POLYSKETCH_REQUIRE_GPU`) is set to anything but empty or `0` and
/// there is no device: CI sets it, so that a machine that lost its driver fails instead of
/// passing on skips.
///
/// # Example
/// ```
/// # #[cfg(feature = "wgpu")] {
/// use polysketch_gpu::{Wgpu, testing};
/// if let Some(gpu) = testing::device_or_skip::<Wgpu>("doc example") {
///     let x = gpu.upload(&[1.0f32, 2.0])?;
///     assert_eq!(gpu.download(&x)?, vec![1.0, 2.0]);
/// }
/// # }
/// # Ok::<(), polysketch_gpu::GpuError>(())
/// ```
pub fn device_or_skip<R: Runtime>(test: &str) -> Option<crate::Gpu<R>> {
    match crate::Gpu::<R>::new(&Default::default()) {
        Ok(gpu) => Some(gpu),
        Err(e) if required() => {
            panic!("{test}: {REQUIRE_GPU_ENV} is set and there is no device: {e}")
        }
        Err(e) => {
            use std::io::Write as _;
            // straight to the handle (print!/eprint! would be captured by the test harness), in
            // one write so that parallel tests do not cut the line
            let line = format!("skipped {test}: {e} (set {REQUIRE_GPU_ENV}=1 to fail instead)\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            None
        }
    }
}

/// Whether [`REQUIRE_GPU_ENV`] asks for a device.
pub fn required() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}
