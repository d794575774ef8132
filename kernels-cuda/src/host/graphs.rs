//! Graphs of decode steps: a step's launches captured once per shape and replayed
//! afterwards, one device call instead of a few hundred launches (the counterpart of the
//! Vulkan backend's recorded command buffers). A step's launches depend only on its
//! shape: the calls and their arguments are fixed at load, the step's data (ids,
//! positions, block tables, RoPE) lives in the step buffer the kernels read, so a graph
//! is keyed by (tokens, outputs, length class) (the length class fixes the attention
//! splits, crate::launch::length_class). The buffers' addresses are baked into a graph:
//! the step buffer growing clears the cache.
//!
//! `Paths::graphs` off turns graphs off; so do the launch timers (timers between the
//! launches) and `Paths::debug` (which prints each launch).

use kiln_gpu_host::Lru;
use kiln_ir::backend::BackendError;

use super::device::{Device, driver_error};

/// Graphs kept: decode runs at a handful of batch sizes, and each graph holds the
/// device's copy of a step's launches.
const CAPACITY: usize = 8;

/// What a graph replays: (tokens, outputs, length class).
pub(crate) type Shape = (u32, u32, u32);

/// The most recently used graphs.
pub(crate) struct Graphs<G> {
    entries: Lru<Shape, G>,
}

impl<G> Default for Graphs<G> {
    fn default() -> Graphs<G> {
        Graphs {
            entries: Lru::new(CAPACITY),
        }
    }
}

impl<G> std::fmt::Debug for Graphs<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shapes: Vec<&Shape> = self.entries.keys().collect();
        f.debug_struct("Graphs").field("shapes", &shapes).finish()
    }
}

impl<G> Graphs<G> {
    /// Replay the graph of `shape` if there is one; Ok(false) when it must be captured.
    ///
    /// # Safety
    /// The buffers the graphs' launches point into are alive and unmoved (the owner
    /// clears the graphs when one moves).
    pub unsafe fn replay<D: Device<Graph = G>>(
        &mut self,
        device: &D,
        shape: Shape,
    ) -> Result<bool, BackendError> {
        match self.entries.get(&shape) {
            // SAFETY: the caller's promise.
            Some(graph) => unsafe { device.replay(graph) }
                .map(|()| true)
                .map_err(|e| driver_error::<D>("replaying a decode graph", e)),
            None => Ok(false),
        }
    }

    /// Capture what `launch_all` puts in the work as the graph of `shape`, keep it, and
    /// replay it once (capture only records: nothing ran yet). The capture is ended
    /// whatever `launch_all` answers, so the device is never left capturing; its error
    /// comes first.
    ///
    /// # Safety
    /// As [`Graphs::replay`]'s, for the launches `launch_all` makes.
    pub unsafe fn capture<D: Device<Graph = G>>(
        &mut self,
        device: &D,
        shape: Shape,
        launch_all: impl FnOnce() -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        device
            .begin_capture()
            .map_err(|e| driver_error::<D>("beginning a graph capture", e))?;
        let launched = launch_all();
        let ended = device.end_capture();
        launched?;
        let graph = ended.map_err(|e| driver_error::<D>("ending a graph capture", e))?;
        // SAFETY: the caller's promise.
        unsafe { device.replay(&graph) }
            .map_err(|e| driver_error::<D>("launching a captured graph", e))?;
        self.entries.insert(shape, graph);
        Ok(())
    }

    /// Forget every graph (a buffer they point at moved).
    pub fn clear(&mut self) {
        self.entries.drain();
    }
}
