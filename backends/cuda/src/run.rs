//! Running a step of a loaded plan: one loop over the lowered calls, each call's launches
//! for the step's shape (kiln_kernels_cuda::lower::geometry) launched with its argument
//! struct; CUDA graphs of decode steps; per-launch timers.

use cudarc::driver::sys::CUevent_flags;
use kiln_ir::backend::{BackendError, LaunchTime, Step};
use kiln_kernels_cuda::launch::{DECODE_MAX_TOKENS, length_class};
use kiln_kernels_cuda::lower::geometry::{Planned, StepGeometry};

use crate::device::{Gpu, NAME, driver};
use crate::loaded::Loaded;
use crate::memory::run;

impl Loaded {
    pub fn execute(&mut self, gpu: &Gpu, s: &Step<'_>) -> Result<(), BackendError> {
        // The driver's current context is per thread; a server may step from any thread.
        gpu.ctx
            .bind_to_thread()
            .map_err(|e| driver("binding the CUDA context", e))?;
        self.upload_step(gpu, s)?;
        let shape = s.shape();
        self.last = Some(shape);
        self.last_timed = self.timers.is_some();
        let max_context = s.positions.iter().max().map_or(0, |&p| p.saturating_add(1));
        let g = StepGeometry {
            n_tokens: shape.tokens as u32,
            n_outputs: shape.outputs as u32,
            class: length_class(max_context),
            sm_count: self.sm_count,
            tensor_cores: self.tensor_cores,
            decode_attention: self.decode_attention,
        };
        let graphed = self.timers.is_none() && g.n_tokens <= DECODE_MAX_TOKENS;
        match &mut self.graphs {
            Some(graphs) if graphed => {
                let key = (g.n_tokens, g.n_outputs, g.class);
                if graphs
                    .replay(key)
                    .map_err(|e| driver("replaying a decode graph", e))?
                {
                    return Ok(());
                }
                // Capture needs the graphs and `self` at once: take them out meanwhile.
                let mut graphs = std::mem::take(graphs);
                let captured =
                    graphs.capture(&gpu.stream, key, || self.launch_all(gpu, &g), driver);
                self.graphs = Some(graphs);
                if let Err(e) = captured {
                    // Whatever failed inside the capture launched nothing: say so, turn
                    // graphs off, and run this step (and the next ones) directly.
                    eprintln!("kiln: CUDA graphs off: {e}");
                    self.graphs = None;
                    self.launch_all(gpu, &g)?;
                }
                Ok(())
            }
            _ => self.launch_all(gpu, &g),
        }
    }

    /// Launch every call of the plan for a step of geometry `g` on the stream (recorded
    /// instead when it is capturing), with the timers around each launch of the plan.
    fn launch_all(&self, gpu: &Gpu, g: &StepGeometry) -> Result<(), BackendError> {
        for (i, calls) in self.lowered.launches.iter().enumerate() {
            if let Some(timers) = &self.timers {
                timers[i]
                    .0
                    .record(&gpu.stream)
                    .map_err(|e| driver("recording a timer", e))?;
            }
            for call in calls {
                let v = &self.lowered.variants[call.variant];
                for p in call.launches(v, g) {
                    let symbol = || v.symbol(p.launch.entry);
                    let f = self.functions[call.variant][p.launch.entry.index()]
                        .as_ref()
                        .ok_or_else(|| BackendError::Unsupported {
                            backend: NAME,
                            what: format!("{} (not in its module)", symbol()),
                        })?;
                    self.trace(i, &symbol(), &p);
                    run(gpu, f, &p.launch, p.args.as_bytes())
                        .map_err(|e| driver(&format!("launching {} (launch {i})", symbol()), e))?;
                }
            }
            if let Some(timers) = &self.timers {
                timers[i]
                    .1
                    .record(&gpu.stream)
                    .map_err(|e| driver("recording a timer", e))?;
            }
        }
        Ok(())
    }

    /// `debug`: print a launch.
    fn trace(&self, i: usize, symbol: &str, p: &Planned) {
        if self.debug {
            let l = &p.launch;
            eprintln!(
                "cuda: launch {i} {symbol} grid {:?} block {:?} shared {}",
                l.grid, l.block, l.shared_bytes
            );
        }
    }

    /// Turn the per-launch timers on: events around every launch of the plan from the
    /// next step on (they cost a little on every step, and timed steps launch directly:
    /// the graphs are dropped).
    pub(crate) fn start_timers(&mut self, gpu: &Gpu) -> Result<(), BackendError> {
        if self.timers.is_some() {
            return Ok(());
        }
        let mut timers = Vec::with_capacity(self.lowered.launches.len());
        for _ in &self.lowered.launches {
            let event = || {
                gpu.ctx
                    .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(|e| driver("creating a timer", e))
            };
            timers.push((event()?, event()?));
        }
        self.timers = Some(timers);
        if let Some(g) = &mut self.graphs {
            g.clear();
        }
        Ok(())
    }

    /// Whether the timers are on.
    pub(crate) fn timed(&self) -> bool {
        self.timers.is_some()
    }

    /// Per-launch times of the last step. Until a timed step has run (the first call
    /// turns the timers on) it answers Unsupported.
    pub fn launch_times(&mut self, gpu: &Gpu) -> Result<Vec<LaunchTime>, BackendError> {
        let Some(timers) = &self.timers else {
            self.start_timers(gpu)?;
            return Err(BackendError::Unsupported {
                backend: NAME,
                what: "launch times before a timed step (timers are on from the next step)".into(),
            });
        };
        if !self.last_timed {
            return Err(BackendError::Unsupported {
                backend: NAME,
                what: "launch times before a timed step (timers are on from the next step)".into(),
            });
        }
        gpu.stream
            .synchronize()
            .map_err(|e| driver("waiting for the timers", e))?;
        timers
            .iter()
            .enumerate()
            .map(|(launch, (start, end))| {
                let ms = start
                    .elapsed_ms(end)
                    .map_err(|e| driver("reading a timer", e))?;
                Ok(LaunchTime {
                    launch,
                    seconds: f64::from(ms) * 1e-3,
                })
            })
            .collect()
    }
}
