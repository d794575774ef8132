//! Running a step of a loaded plan: one loop over the lowered calls, each call's launches
//! for the step's shape (crate::lower::geometry) launched with its argument struct;
//! graphs of decode steps; per-launch timers.

use kiln_gpu_host::timers::not_timed_yet;
use kiln_ir::backend::{BackendError, LaunchTime, Step};

use super::device::{Device, driver_error};
use super::loaded::Loaded;
use crate::launch::{DECODE_MAX_TOKENS, length_class};
use crate::lower::geometry::{Planned, StepGeometry};

impl<D: Device> Loaded<D> {
    pub fn execute(&mut self, device: &D, s: &Step<'_>) -> Result<(), BackendError> {
        // The driver's current context is per thread; a server may step from any thread.
        device
            .bind()
            .map_err(|e| driver_error::<D>("binding the CUDA context", e))?;
        self.upload_step(device, s)?;
        let shape = s.shape();
        self.last = Some(shape);
        self.last_timed = self.timers.is_some();
        let max_context = s.positions.iter().max().map_or(0, |&p| p.saturating_add(1));
        let g = StepGeometry {
            n_tokens: shape.tokens as u32,
            n_outputs: shape.outputs as u32,
            class: length_class(max_context),
            sm_count: self.sm_count,
            tensor_cores: self.paths.tensor_cores,
            wgmma: self.paths.wgmma,
            decode_attention: self.paths.decode_attention,
        };
        let graphed = self.timers.is_none() && g.n_tokens <= DECODE_MAX_TOKENS;
        match &mut self.graphs {
            Some(graphs) if graphed => {
                let key = (g.n_tokens, g.n_outputs, g.class);
                // SAFETY: the graphs live in self beside the buffers their launches point
                // into, and are cleared when the step buffer moves (upload_step).
                if unsafe { graphs.replay(device, key) }? {
                    return Ok(());
                }
                // Capture needs the graphs and `self` at once: take them out meanwhile.
                let mut graphs = std::mem::take(graphs);
                // SAFETY: as for the replay; the graph goes back into self.
                let captured =
                    unsafe { graphs.capture(device, key, || self.launch_all(device, &g)) };
                self.graphs = Some(graphs);
                if let Err(e) = captured {
                    // Whatever failed inside the capture launched nothing: say so, turn
                    // graphs off, and run this step (and the next ones) directly.
                    eprintln!("kiln: CUDA graphs off: {e}");
                    self.graphs = None;
                    self.launch_all(device, &g)?;
                }
                Ok(())
            }
            _ => self.launch_all(device, &g),
        }
    }

    /// Launch every call of the plan for a step of geometry `g` (recorded instead while
    /// a graph is captured), with the timers around each launch of the plan.
    fn launch_all(&self, device: &D, g: &StepGeometry) -> Result<(), BackendError> {
        let record = |t| {
            device
                .record(t)
                .map_err(|e| driver_error::<D>("recording a timer", e))
        };
        for (i, calls) in self.lowered.launches.iter().enumerate() {
            if let Some(timers) = &self.timers {
                record(&timers[i].0)?;
            }
            for call in calls {
                let v = &self.lowered.variants[call.variant];
                for p in call.launches(v, g) {
                    let symbol = || v.symbol(p.launch.entry);
                    let f = self.functions[call.variant][p.launch.entry.index()]
                        .as_ref()
                        .ok_or_else(|| BackendError::Unsupported {
                            backend: D::NAME,
                            what: format!("{} (not in its module)", symbol()),
                        })?;
                    self.trace(i, symbol, &p);
                    // SAFETY: `f` is the entry of the call's variant that the geometry
                    // planned, with the argument struct the lowering pairs with it; the
                    // lowering built every address in it from this plan's buffers (alive
                    // in self, and every index the kernels form stays inside them), and
                    // the step buffer's address is the current one (set_step).
                    unsafe { device.launch(f, &p.launch, p.args.as_bytes()) }.map_err(|e| {
                        driver_error::<D>(&format!("launching {} (launch {i})", symbol()), e)
                    })?;
                }
            }
            if let Some(timers) = &self.timers {
                record(&timers[i].1)?;
            }
        }
        Ok(())
    }

    /// `debug`: print a launch (the symbol is named only then: a `String` a launch).
    fn trace(&self, i: usize, symbol: impl Fn() -> String, p: &Planned) {
        if self.paths.debug {
            let (l, symbol) = (&p.launch, symbol());
            eprintln!(
                "{}: launch {i} {symbol} grid {:?} block {:?} shared {}",
                D::NAME,
                l.grid,
                l.block,
                l.shared_bytes
            );
        }
    }

    /// Turn the per-launch timers on: timers around every launch of the plan from the
    /// next step on (they cost a little on every step, and timed steps launch directly:
    /// the graphs are dropped).
    pub(crate) fn start_timers(&mut self, device: &D) -> Result<(), BackendError> {
        if self.timers.is_some() {
            return Ok(());
        }
        let mut timers = Vec::with_capacity(self.lowered.launches.len());
        let timer = || {
            device
                .timer()
                .map_err(|e| driver_error::<D>("creating a timer", e))
        };
        for _ in &self.lowered.launches {
            timers.push((timer()?, timer()?));
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
    pub fn launch_times(&mut self, device: &D) -> Result<Vec<LaunchTime>, BackendError> {
        let Some(timers) = &self.timers else {
            self.start_timers(device)?;
            return Err(not_timed_yet(D::NAME));
        };
        if !self.last_timed {
            return Err(not_timed_yet(D::NAME));
        }
        device
            .synchronize()
            .map_err(|e| driver_error::<D>("waiting for the timers", e))?;
        timers
            .iter()
            .enumerate()
            .map(|(launch, (start, end))| {
                let seconds = device
                    .elapsed(start, end)
                    .map_err(|e| driver_error::<D>("reading a timer", e))?;
                Ok(LaunchTime { launch, seconds })
            })
            .collect()
    }
}
