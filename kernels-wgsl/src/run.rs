//! A [`Program`] loaded on a device, run the same way by every WGSL backend: a step is
//! checked and packed, its buffer written (grown when a step needs more, which releases
//! what was recorded with the old one), its shape's dispatch list made once and kept with
//! what the device recorded for it (an LRU of [`PREPARED`]), then submitted (a recording
//! the submission consumed is made again for the next step while the device runs this
//! one, as its logits are read); reading the logits, copying KV pages and reading
//! timestamps are checked and planned here too. Timestamps are written only once asked
//! for: the first `launch_times` turns them on (as the CUDA backend's timers), so that
//! steps nobody times carry no queries.
//! What a device API does (buffers, pipelines, binding, recording, queries) is its
//! [`Device`] implementation: wgpu's and Vulkan's are all that is left in those crates.

use kiln_gpu_host::kv::leading_slots;
use kiln_gpu_host::output::f32s_from_le;
use kiln_gpu_host::timers::{Timestamps, no_timestamps, not_timed_yet};
use kiln_gpu_host::{Lru, Output};
use kiln_ir::backend::{BackendError, LaunchTime, NON_FINITE_ROW, Step, StepShape};
use kiln_ir::kv_layout::KvLayout;

use crate::program::StepList;
use crate::{KernelError, Program};

/// Step shapes whose dispatch lists (and recordings) are kept, the least recently used
/// dropped first.
pub const PREPARED: usize = 8;

/// Bytes of the step buffer at load (grown to the next power of two when a step needs
/// more).
pub const STEP_BYTES: u64 = 4096;

/// What a device API does with a loaded [`Program`]: the calls of a WGSL backend.
pub trait Device {
    /// The backend's name, in errors and debug prints.
    const NAME: &'static str;
    /// A step shape's dispatch list recorded in the API's commands (a command buffer):
    /// replayed every step where the API can (Vulkan), else submitted once and recorded
    /// again for the next step while the device runs the last one (wgpu).
    type Recorded;

    /// Wait until the last step is done with the step buffer, before it is written or
    /// replaced (a device whose writes are queued in order waits for nothing).
    fn wait_step(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    /// Replace the step buffer with one of `bytes` (what was recorded with the old one
    /// has been released) and bind it where `program` binds it.
    fn grow_step(&mut self, program: &Program, bytes: u64) -> Result<(), BackendError>;
    /// Write a step's buffer (at most its size).
    fn write_step(&mut self, data: &[u8]) -> Result<(), BackendError>;
    /// Record a step shape's dispatch list, with the timestamp queries around each launch
    /// where `timed`.
    fn record(
        &mut self,
        program: &Program,
        list: &StepList,
        timed: bool,
    ) -> Result<Self::Recorded, BackendError>;
    /// Give back recordings (none of them is pending); dropping them is enough unless
    /// the device says otherwise.
    fn release(&mut self, _recorded: Vec<Self::Recorded>) {}
    /// Run a step from its recording; give the recording back where it can run again
    /// (None: the submission consumed it, and the next step records its own).
    fn submit(&mut self, recorded: Self::Recorded) -> Result<Option<Self::Recorded>, BackendError>;
    /// The last step's output: `out.len()` bytes from `output.offset` in the arena.
    fn read_output(&mut self, output: &Output, out: &mut [u8]) -> Result<(), BackendError>;
    /// Copy `regions` (offset in a page, bytes) of the KV page at byte `src` of the KV
    /// buffer to the page at `dst` (two distinct pages).
    fn copy_kv(&mut self, src: u64, dst: u64, regions: &[(u64, u64)]) -> Result<(), BackendError>;
    /// The last step's timestamps (`queries` of them, two per launch; it was timed), None
    /// on a device without timestamp queries.
    fn timestamps(&mut self, queries: u32) -> Result<Option<Timestamps>, BackendError>;
    /// Wait for everything submitted.
    fn synchronize(&mut self) -> Result<(), BackendError>;
}

/// A program on a device, and what its steps keep.
pub struct Loaded<D: Device> {
    pub program: Program,
    pub device: D,
    kv: KvLayout,
    /// Step shape → its dispatch list and recording (None once a submission consumed
    /// it, until the next one is recorded).
    prepared: Lru<StepShape, (StepList, Option<D::Recorded>)>,
    last: Option<StepShape>,
    step_bytes: u64,
    /// Steps are recorded with timestamps (`launch_times` was asked for), and the last
    /// one ran so; `retime`: the recordings kept predate `timed`.
    pub timed: bool,
    last_timed: bool,
    retime: bool,
    debug: bool,
}

impl<D: Device> std::fmt::Debug for Loaded<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("backend", &D::NAME)
            .field("launches", &self.program.launches.len())
            .field("pipelines", &self.program.pipelines.len())
            .field("arena_bytes", &self.program.arena_bytes)
            .field("prepared", &self.prepared.len())
            .finish()
    }
}

fn for_backend<D: Device>(e: KernelError) -> BackendError {
    e.for_backend(D::NAME)
}

impl<D: Device> Loaded<D> {
    /// `program` on `device`, whose step buffer holds [`STEP_BYTES`]; `debug` prints each
    /// step shape's dispatches when it is first run.
    pub fn new(program: Program, device: D, kv: &KvLayout, debug: bool) -> Loaded<D> {
        Loaded {
            program,
            device,
            kv: *kv,
            prepared: Lru::new(PREPARED),
            last: None,
            step_bytes: STEP_BYTES,
            timed: false,
            last_timed: false,
            retime: false,
            debug,
        }
    }

    pub fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        self.program.limits.check(step, D::NAME)?;
        // Packed while the previous step may still run.
        let data = self.program.pack_step(step).map_err(for_backend::<D>)?;
        self.device.wait_step()?;
        let grow = data.len() as u64 > self.step_bytes;
        if grow || std::mem::take(&mut self.retime) {
            // What was recorded binds the old step buffer, or lacks the timestamps.
            let recorded = self.prepared.drain().into_iter().filter_map(|(_, r)| r);
            self.device.release(recorded.collect());
        }
        if grow {
            self.step_bytes = (data.len() as u64).next_power_of_two();
            self.device.grow_step(&self.program, self.step_bytes)?;
        }
        self.device.write_step(&data)?;
        let shape = step.shape();
        if self.prepared.get(&shape).is_none() {
            let list = (self.program).step_list(shape, self.debug.then_some(D::NAME));
            if let Some((_, Some(old))) = self.prepared.insert(shape, (list, None)) {
                self.device.release(vec![old]);
            }
        }
        let Some((list, recorded)) = self.prepared.get(&shape) else {
            return Err(BackendError::Driver {
                backend: D::NAME,
                message: "a step's dispatch list went missing".into(),
            });
        };
        let commands = match recorded.take() {
            Some(commands) => commands,
            None => self.device.record(&self.program, list, self.timed)?,
        };
        *recorded = self.device.submit(commands)?;
        self.last = Some(shape);
        self.last_timed = self.timed;
        Ok(())
    }

    pub fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError> {
        let output = &self.program.output;
        output.check_logits(self.last, out.len(), D::NAME)?;
        self.record_ahead()?;
        let mut bytes = vec![0u8; out.len() * 4];
        self.device.read_output(&self.program.output, &mut bytes)?;
        f32s_from_le(&bytes, out);
        Ok(())
    }

    /// The greedy token of each output row of the last step, as argmax.wgsl left it after
    /// the step (one word a row read back, not the logits); None where the program has no
    /// device argmax (a vocabulary of 2^24 and more: the caller reads the logits).
    pub fn read_argmax(
        &mut self,
        vocab: usize,
        out: &mut [u32],
    ) -> Option<Result<(), BackendError>> {
        let ids = self.program.argmax?;
        Some(self.read_ids(&ids, vocab, out))
    }

    fn read_ids(
        &mut self,
        ids: &Output,
        vocab: usize,
        out: &mut [u32],
    ) -> Result<(), BackendError> {
        self.program
            .output
            .check_argmax(self.last, out.len(), vocab, D::NAME)?;
        self.record_ahead()?;
        let mut bytes = vec![0u8; out.len() * 4];
        self.device.read_output(ids, &mut bytes)?;
        let mut words = vec![0.0f32; out.len()];
        f32s_from_le(&bytes, &mut words);
        for (id, &w) in out.iter_mut().zip(&words) {
            // An f32 count below 2^24, or -1: the row held a NaN or +inf.
            *id = if w >= 0.0 { w as u32 } else { NON_FINITE_ROW };
        }
        Ok(())
    }

    /// (rows, columns) of the last step's output (what `read_logits` takes).
    pub fn last_output_shape(&self) -> Result<(usize, usize), BackendError> {
        let output = &self.program.output;
        let last = self.last.ok_or_else(|| BackendError::BadStep {
            backend: D::NAME,
            reason: "no step has run".into(),
        })?;
        Ok((output.rows_in(last), output.cols))
    }

    /// Decode steps repeat their shape: where the last recording was consumed, the next
    /// one is recorded while this step runs (as its output is read), off the next step's
    /// path.
    fn record_ahead(&mut self) -> Result<(), BackendError> {
        if let Some((list, recorded @ None)) = self.last.and_then(|s| self.prepared.get(&s)) {
            *recorded = Some(self.device.record(&self.program, list, self.timed)?);
        }
        Ok(())
    }

    /// Copy the first `n_tokens` token slots of page `src` (every layer's K, V and
    /// scales) into page `dst`.
    pub fn copy_kv_page(
        &mut self,
        src: u32,
        dst: u32,
        n_tokens: usize,
    ) -> Result<(), BackendError> {
        self.program.limits.check_page_copy(src, dst, D::NAME)?;
        let regions = leading_slots(&self.kv, n_tokens);
        if src == dst || regions.is_empty() {
            return Ok(());
        }
        let page = self.kv.page_bytes() as u64;
        let (src, dst) = (u64::from(src) * page, u64::from(dst) * page);
        self.device.copy_kv(src, dst, &regions)
    }

    /// The time of every launch of the last step. Until a timed step has run (the first
    /// call turns the timestamps on) it answers Unsupported; on a device without
    /// timestamp queries, from then on.
    pub fn launch_times(&mut self, device_name: &str) -> Result<Vec<LaunchTime>, BackendError> {
        if !self.timed {
            (self.timed, self.retime) = (true, true);
        }
        if !self.last_timed {
            return Err(not_timed_yet(D::NAME));
        }
        match self.device.timestamps(self.program.timestamp_queries())? {
            Some(t) => Ok(t.launch_times()),
            None => Err(no_timestamps(D::NAME, device_name)),
        }
    }

    pub fn synchronize(&mut self) -> Result<(), BackendError> {
        self.device.synchronize()
    }
}

#[cfg(test)]
mod tests;
