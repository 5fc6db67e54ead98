//! The device context and its buffers.

use core::marker::PhantomData;

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::{GpuError, Result};

/// A compute device of runtime `R` (wgpu, CUDA): the client every kernel launch goes through.
///
/// # Example
/// ```
/// # #[cfg(feature = "wgpu")] {
/// use polysketch_gpu::{Gpu, GpuError, Wgpu};
/// let gpu = match Gpu::<Wgpu>::new(&Default::default()) {
///     Ok(gpu) => gpu,
///     // no adapter: a typed error, never a panic
///     Err(GpuError::NoDevice { .. }) if !polysketch_gpu::testing::required() => return Ok(()),
///     Err(e) => return Err(e),
/// };
/// let x = gpu.upload(&[1.0f32, 2.0, 3.0])?;
/// assert_eq!(gpu.download(&x)?, vec![1.0, 2.0, 3.0]);
/// # }
/// # Ok::<(), polysketch_gpu::GpuError>(())
/// ```
#[derive(Clone)]
pub struct Gpu<R: Runtime> {
    pub(crate) client: ComputeClient<R>,
    /// The most elements one buffer of block states may hold (heads are processed in groups
    /// that fit).
    pub(crate) state_limit: usize,
}

impl<R: Runtime> core::fmt::Debug for Gpu<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Gpu({})", self.name())
    }
}

/// A device buffer of `len` elements of type `E` (`f32` unless said otherwise).
pub struct Buffer<R: Runtime, E = f32> {
    pub(crate) handle: Handle,
    len: usize,
    _marker: PhantomData<(R, E)>,
}

impl<R: Runtime, E> Clone for Buffer<R, E> {
    fn clone(&self) -> Self {
        Self { handle: self.handle.clone(), len: self.len, _marker: PhantomData }
    }
}

impl<R: Runtime, E> core::fmt::Debug for Buffer<R, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Buffer(len {})", self.len)
    }
}

impl<R: Runtime, E> Buffer<R, E> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// A buffer over an existing cubecl allocation — another library's tensor on the same
    /// client (burn's cubecl backends), read and written in place without a copy.
    ///
    /// # Safety
    /// `handle` must hold at least `len` contiguous elements of type `E` (row-major, no
    /// strides), allocated by the client the buffer is used with, and stay valid as long as
    /// the buffer (cubecl handles keep their allocation alive).
    pub unsafe fn from_handle(handle: Handle, len: usize) -> Self {
        Self { handle, len, _marker: PhantomData }
    }

    /// The cubecl allocation behind the buffer (to hand it to another library on the same
    /// client).
    pub fn into_handle(self) -> Handle {
        self.handle
    }

    /// The same allocation typed as `F`, if `F` is `E` (`None` otherwise).
    pub(crate) fn retyped<F: 'static>(&self) -> Option<Buffer<R, F>>
    where
        E: 'static,
    {
        (core::any::TypeId::of::<E>() == core::any::TypeId::of::<F>()).then(|| Buffer {
            handle: self.handle.clone(),
            len: self.len,
            _marker: PhantomData,
        })
    }

    /// The kernel argument viewing this buffer (shares the allocation).
    pub(crate) fn arg(&self) -> ArrayArg<R> {
        // SAFETY: `handle` was allocated for `len` elements of `E` by `Gpu::empty`/`upload`.
        unsafe { ArrayArg::from_raw_parts(self.handle.clone(), self.len) }
    }
}

impl<R: Runtime> Gpu<R> {
    /// A context on `device` (`&Default::default()`: the runtime's default device).
    ///
    /// # Errors
    /// [`GpuError::NoDevice`] when the runtime has no such device (wgpu without a Vulkan,
    /// Metal or DX12 driver; CUDA without the driver or NVRTC): the runtime is asked first, and
    /// a panic of the runtime while it creates its client is caught and returned as this error.
    pub fn new(device: &R::Device) -> Result<Self> {
        Ok(Self { client: crate::probe::client::<R>(device)?, state_limit: crate::MAX_ELEMENTS })
    }

    /// A context over an existing client — the one another library (burn's cubecl backends)
    /// already made for its device — so that both launch on the same queue and share buffers.
    pub fn from_client(client: ComputeClient<R>) -> Self {
        Self { client, state_limit: crate::MAX_ELEMENTS }
    }

    /// The client every kernel launch goes through.
    pub fn client(&self) -> &ComputeClient<R> {
        &self.client
    }

    /// The same device with block-state buffers of at most `limit` elements (default and
    /// maximum [`MAX_ELEMENTS`](crate::MAX_ELEMENTS), what 32-bit indices reach): the block
    /// products process the heads in groups whose states fit, so a long context with many
    /// heads needs no index past 2³¹ and a smaller limit bounds the memory of one group. The
    /// results do not depend on it.
    pub fn with_state_limit(mut self, limit: usize) -> Self {
        self.state_limit = limit.clamp(1, crate::MAX_ELEMENTS);
        self
    }

    /// The runtime's name, e.g. `wgpu<wgsl>` or `cuda`.
    pub fn name(&self) -> String {
        R::name(&self.client).to_string()
    }

    /// A buffer of `len` elements of `E`, contents unspecified.
    pub fn empty<E: CubeElement>(&self, len: usize) -> Buffer<R, E> {
        Buffer { handle: self.client.empty(len.max(1) * size_of::<E>()), len, _marker: PhantomData }
    }

    /// A buffer of `len` zeros.
    pub fn zeros(&self, len: usize) -> Buffer<R> {
        // filled on the device: the allocator's fresh memory is not guaranteed to be zero
        let x = self.empty::<f32>(len);
        // SAFETY: `x` holds `len` elements; the kernel checks bounds.
        unsafe { launch_1d!(self, crate::ops::kernels::fill::<R>, (len, 256); x.arg(), 0.0) };
        x
    }

    /// Copies `data` to the device.
    ///
    /// # Errors
    /// Never at present; the `Result` leaves room for devices that refuse an allocation.
    pub fn upload<E: CubeElement>(&self, data: &[E]) -> Result<Buffer<R, E>> {
        let bytes = E::as_bytes(data);
        let handle = if bytes.is_empty() {
            self.client.empty(size_of::<E>())
        } else {
            self.client.create_from_slice(bytes)
        };
        Ok(Buffer { handle, len: data.len(), _marker: PhantomData })
    }

    /// Copies a buffer back to the host (waits for the kernels that write it).
    ///
    /// # Errors
    /// [`GpuError::Device`] if the device reports an error (a failed kernel, a lost device).
    pub fn download<E: CubeElement>(&self, buffer: &Buffer<R, E>) -> Result<Vec<E>> {
        if buffer.len == 0 {
            return Ok(Vec::new());
        }
        let bytes = self
            .client
            .read_one(buffer.handle.clone())
            .map_err(|e| GpuError::Device(format!("{e:?}")))?;
        Ok(E::from_bytes(&bytes)[..buffer.len].to_vec())
    }

    /// Whether the device computes with elements of type `E` (`bf16` needs CUDA or a Vulkan
    /// device with the extension; Mesa's software driver has none).
    pub fn supports<E: CubePrimitive>(&self) -> bool {
        E::as_type_native().is_some_and(|t| self.client.properties().supports_type(t))
    }

    /// [`GpuError::Unsupported`] unless the device computes with `E`.
    pub(crate) fn require<E: CubePrimitive>(&self, op: &'static str) -> Result<()> {
        if self.supports::<E>() {
            return Ok(());
        }
        Err(GpuError::Unsupported {
            op,
            what: format!("{} elements on {}", core::any::type_name::<E>(), self.name()),
        })
    }

    /// Bytes the device allocator holds for live buffers, and bytes it has reserved in all.
    ///
    /// # Errors
    /// [`GpuError::Device`] if the device reports an error.
    pub fn memory(&self) -> Result<(u64, u64)> {
        let m = self.client.memory_usage().map_err(|e| GpuError::Device(format!("{e:?}")))?;
        Ok((m.bytes_in_use, m.bytes_reserved))
    }

    /// Waits until every launched kernel has finished (for timings).
    ///
    /// # Errors
    /// [`GpuError::Device`] if the device reports an error.
    pub fn sync(&self) -> Result<()> {
        cubecl::future::block_on(self.client.sync()).map_err(|e| GpuError::Device(format!("{e:?}")))
    }
}
