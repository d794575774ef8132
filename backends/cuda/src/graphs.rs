//! CUDA graphs of decode steps: a step's launches captured once per shape and replayed
//! afterwards, one driver call instead of a few hundred launches (the counterpart of the
//! Vulkan backend's recorded command buffers). A step's launches depend only on its
//! shape: the Program's dispatches and params are fixed at load, the step's data (ids,
//! positions, block tables, RoPE) lives in the step buffer the kernels read, so a graph
//! is keyed by (tokens, outputs, length class) (the length class fixes the attention
//! splits, kiln_kernels_cuda::launch::length_class). The buffers' addresses are baked
//! into a graph: the step buffer growing clears the cache.
//!
//! `CudaOptions::graphs` (`KILN_CUDA_GRAPHS=0` in the CLI) turns graphs off; so do the
//! launch timers (events between the launches) and `debug` (which prints each launch).

use std::sync::Arc;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaStream, DriverError};
use kiln_gpu_host::Lru;

/// Graphs kept: decode runs at a handful of batch sizes, and each graph holds the
/// device's copy of a step's launches.
const CAPACITY: usize = 8;

/// What a graph replays: (tokens, outputs, length class).
pub(crate) type Shape = (u32, u32, u32);

/// A captured step.
struct Graph(CudaGraph);

// SAFETY: a CUgraph / CUgraphExec may be used from any thread as long as the calls are
// serialised (CUDA's graph thread-safety rules); every use goes through `&mut Graphs`,
// which the borrow checker serialises, and the stream and context it refers to are
// themselves Send.
unsafe impl Send for Graph {}

/// The most recently used graphs.
pub(crate) struct Graphs {
    entries: Lru<Shape, Graph>,
}

impl Default for Graphs {
    fn default() -> Graphs {
        Graphs {
            entries: Lru::new(CAPACITY),
        }
    }
}

impl std::fmt::Debug for Graphs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shapes: Vec<&Shape> = self.entries.keys().collect();
        f.debug_struct("Graphs").field("shapes", &shapes).finish()
    }
}

impl Graphs {
    /// Replay the graph of `shape` if there is one; Ok(false) when it must be captured.
    pub fn replay(&mut self, shape: Shape) -> Result<bool, DriverError> {
        match self.entries.get(&shape) {
            Some(graph) => graph.0.launch().map(|()| true),
            None => Ok(false),
        }
    }

    /// Capture what `launch_all` puts on `stream` as the graph of `shape`, keep it, and
    /// replay it once (capture only records: nothing ran yet). The capture is ended
    /// whatever `launch_all` answers, so the stream is never left capturing; its error
    /// comes first.
    pub fn capture<E>(
        &mut self,
        stream: &Arc<CudaStream>,
        shape: Shape,
        launch_all: impl FnOnce() -> Result<(), E>,
        driver_err: impl Fn(&str, DriverError) -> E,
    ) -> Result<(), E> {
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| driver_err("beginning a graph capture", e))?;
        let launched = launch_all();
        let ended = stream.end_capture(CUgraphInstantiate_flags(0));
        launched?;
        let graph = ended
            .map_err(|e| driver_err("ending a graph capture", e))?
            .ok_or_else(|| {
                driver_err(
                    "ending a graph capture",
                    DriverError(
                        cudarc::driver::sys::CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED,
                    ),
                )
            })?;
        graph
            .launch()
            .map_err(|e| driver_err("launching a captured graph", e))?;
        self.entries.insert(shape, Graph(graph));
        Ok(())
    }

    /// Forget every graph (a buffer they point at moved).
    pub fn clear(&mut self) {
        self.entries.drain();
    }
}

#[cfg(test)]
mod tests {
    /// The backend may move to another thread (a server's engine thread).
    #[test]
    fn graphs_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<super::Graphs>();
    }
}
