//! The wgpu device: adapter choice (a hardware GPU first, then anything, lavapipe
//! included), the features kiln asks for (subgroups, timestamps, shader-f16 where it is
//! wanted), errors caught instead of wgpu's default panic,
//! and the blocking buffer helpers (read back, wait).

use std::sync::{Arc, Mutex};

use kiln_gpu_host::device::{DeviceKind, choose};
use kiln_gpu_host::{check_range, no_device, out_of_memory};
use kiln_ir::backend::BackendError;

pub(crate) const NAME: &str = "wgpu";

fn driver(message: impl Into<String>) -> BackendError {
    kiln_gpu_host::driver(NAME, message)
}

/// An opened device and what it can do.
#[derive(Debug)]
pub(crate) struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// The first validation or out-of-memory error wgpu reported since the last check.
    errors: Arc<Mutex<Option<String>>>,
}

fn kind(t: wgpu::DeviceType) -> DeviceKind {
    match t {
        wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu,
        wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu,
        wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu,
        wgpu::DeviceType::Other => DeviceKind::Other,
        wgpu::DeviceType::Cpu => DeviceKind::Cpu,
    }
}

impl Gpu {
    /// The best adapter; CPU implementations (lavapipe) only when `allow_cpu`; f16
    /// arithmetic in shaders (SHADER_F16) asked for where the adapter has it and `f16`.
    pub fn open(allow_cpu: bool, f16: bool) -> Result<Gpu, BackendError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let candidates = adapters
            .into_iter()
            .map(|a| (kind(a.get_info().device_type), a.get_info().name, a))
            .collect();
        let none = || {
            "no WebGPU adapter (no Vulkan, Metal or DX12 driver; on Linux \
             `apt-get install mesa-vulkan-drivers` gives lavapipe)"
                .to_string()
        };
        let allow = "set KILN_WGPU_ADAPTER=any (WgslOptions::allow_cpu)";
        let adapter = choose(candidates, allow_cpu, NAME, none, allow)?;
        let info = adapter.get_info();
        // The kernels unpack f16 (weights, the F16 KV cache) with unpack2x16float.
        let downlevel = adapter.get_downlevel_capabilities().flags;
        if !downlevel.contains(wgpu::DownlevelFlags::SHADER_F16_IN_F32) {
            let reason = format!("{} cannot convert f16 to f32 in shaders", info.name);
            return Err(no_device(NAME, reason));
        }
        let offered = adapter.features();
        let mut wanted = wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        if f16 {
            wanted |= wgpu::Features::SHADER_F16;
        }
        let features = offered & wanted;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| no_device(NAME, format!("{}: {e}", info.name)))?;
        let errors = Arc::new(Mutex::new(None));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            features,
            errors,
        })
    }

    /// The error wgpu reported since the last check, as a BackendError.
    pub fn check(&self, doing: &str) -> Result<(), BackendError> {
        let error = self.errors.lock().ok().and_then(|mut slot| slot.take());
        match error {
            Some(e) => Err(driver(format!("{doing}: {e}"))),
            None => Ok(()),
        }
    }

    /// Wait for everything submitted, and say what went wrong while `doing` it.
    pub fn wait(&self, doing: &str) -> Result<(), BackendError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| driver(format!("waiting for the device: {e}")))?;
        self.check(doing)
    }

    pub fn buffer(
        &self,
        label: &str,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer, BackendError> {
        let size = bytes.next_multiple_of(4).max(4);
        if size > self.limits.max_buffer_size {
            return Err(out_of_memory(NAME, bytes));
        }
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        self.check(&format!("allocating {label} ({bytes} bytes)"))?;
        Ok(buffer)
    }

    /// Copy `out.len()` bytes (a multiple of 4) at `offset` (a multiple of 8) of `src`, a
    /// MAP_READ buffer, to the host: map, wait, copy, unmap.
    pub fn read(
        &self,
        src: &wgpu::Buffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        let len = out.len() as u64;
        check_range(NAME, "readback buffer", offset, len, src.size())?;
        if out.is_empty() {
            return Ok(());
        }
        let slice = src.slice(offset..offset + len);
        let (sender, mapped) = std::sync::mpsc::channel();
        // The receiver lives until after the wait below.
        slice.map_async(wgpu::MapMode::Read, move |r| drop(sender.send(r)));
        self.wait("reading back")?;
        match mapped.try_recv() {
            Ok(Ok(())) => {
                let copied = match slice.get_mapped_range() {
                    Ok(view) => Ok(out.copy_from_slice(&view)),
                    Err(e) => Err(driver(format!("reading the mapped readback buffer: {e}"))),
                };
                src.unmap();
                copied
            }
            Ok(Err(e)) => Err(driver(format!("mapping the readback buffer: {e}"))),
            Err(_) => Err(driver("the readback buffer was never mapped")),
        }
    }
}
