//! A step's dispatch list, made once per step shape (tokens, output rows: the grids depend
//! on nothing else): every dispatch with work, in order, with what a backend binds and
//! records for it, and where each launch's timestamps go. wgpu encodes it every step
//! (it cannot replay a command buffer); Vulkan records it once and replays it.

use kiln_ir::backend::StepShape;

use super::{Program, Resource};

/// One dispatch of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// The dispatch's index in the program, launch after launch (what a backend that
    /// binds per dispatch keeps a bind group for).
    pub dispatch: usize,
    /// Index into [`Program::pipelines`].
    pub pipeline: usize,
    /// The weights buffer it binds, and where its params block and weights window start
    /// (in the params buffer and in that weights buffer: dynamic offsets, for a backend
    /// that binds per weights buffer).
    pub weights_buffer: usize,
    pub params_offset: u64,
    pub weights_offset: u64,
    pub workgroups: [u32; 3],
    /// A barrier goes before it ([`super::Dispatch::barrier`]).
    pub barrier: bool,
}

impl Run {
    /// Its dynamic offsets in binding order: the params block's and the weights
    /// window's. u32s: a WGSL backend's buffers are at most 4 GiB (its capabilities).
    pub fn dynamic_offsets(&self) -> [u32; 2] {
        [self.params_offset as u32, self.weights_offset as u32]
    }
}

/// What a step of one shape runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepList {
    pub shape: StepShape,
    pub runs: Vec<Run>,
    /// Where each launch ends in `runs`.
    launch_ends: Vec<usize>,
}

/// A launch of a step: its dispatches (independent of each other: several matrices of
/// one input, or chunks of one; except those with [`Run::barrier`], which follow what
/// came before them), and the timestamp queries written at its start and end.
#[derive(Clone, Copy, Debug)]
pub struct LaunchRuns<'a> {
    pub queries: [u32; 2],
    pub runs: &'a [Run],
}

impl StepList {
    /// Every launch in order (one without work in this step has no runs).
    pub fn launches(&self) -> impl Iterator<Item = LaunchRuns<'_>> {
        let starts = std::iter::once(0).chain(self.launch_ends.iter().copied());
        self.launch_ends
            .iter()
            .zip(starts)
            .enumerate()
            .map(|(i, (&end, start))| LaunchRuns {
                queries: [2 * i as u32, 2 * i as u32 + 1],
                runs: &self.runs[start..end],
            })
    }
}

impl Program {
    /// The dispatch list of a step of `shape`: the dispatches that have work (a dispatch
    /// over no rows is left out), with their workgroups. With `debug`, each is printed,
    /// as `<debug>: launch <i> <kernel> workgroups (x, y, z)`.
    pub fn step_list(&self, shape: StepShape, debug: Option<&str>) -> StepList {
        if let Some(backend) = debug {
            let (t, n) = (shape.tokens, shape.outputs);
            eprintln!("{backend}: the step of {t} tokens, {n} outputs");
        }
        let mut runs = Vec::new();
        let mut launch_ends = Vec::with_capacity(self.launches.len());
        let mut first = 0;
        for (i, dispatches) in self.launches.iter().enumerate() {
            for (j, d) in dispatches.iter().enumerate() {
                let workgroups = d.grid.workgroups(shape.tokens as u32, shape.outputs as u32);
                if workgroups.contains(&0) {
                    continue;
                }
                if let Some(backend) = debug {
                    let [x, y, z] = workgroups;
                    let name = &self.pipelines[d.pipeline].name;
                    eprintln!("{backend}: launch {i} {name} workgroups ({x}, {y}, {z})");
                }
                runs.push(Run {
                    dispatch: first + j,
                    pipeline: d.pipeline,
                    weights_buffer: d.weights_buffer,
                    params_offset: d.params_offset,
                    weights_offset: d.weights_offset,
                    workgroups,
                    barrier: d.barrier,
                });
            }
            first += dispatches.len();
            launch_ends.push(runs.len());
        }
        StepList {
            shape,
            runs,
            launch_ends,
        }
    }

    /// Timestamp queries a step writes: two per launch ([`LaunchRuns::queries`]).
    pub fn timestamp_queries(&self) -> u32 {
        2 * self.launches.len() as u32
    }

    /// The largest params block of a dispatch (a backend binding the params at dynamic
    /// offsets binds this many bytes).
    pub fn max_params_block(&self) -> u64 {
        let blocks = self.launches.iter().flatten().map(|d| d.params_size);
        blocks.max().unwrap_or(16)
    }
}

impl super::Dispatch {
    /// Where each resource it binds lies: (resource, offset in its buffer, bytes; None:
    /// the whole buffer), for a backend that binds per dispatch.
    pub fn bindings(&self) -> impl Iterator<Item = (Resource, u64, Option<u64>)> + '_ {
        self.resources.iter().map(|&r| match r {
            Resource::Params => (r, self.params_offset, Some(self.params_size)),
            Resource::Weights => (r, self.weights_offset, Some(self.weights_window)),
            Resource::Arena | Resource::Kv | Resource::Step => (r, 0, None),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{Dispatch, Grid};
    use kiln_ir::graph::Rows;

    #[test]
    fn launches_slice_the_runs_and_name_their_queries() {
        let run = |dispatch| Run {
            dispatch,
            pipeline: 0,
            weights_buffer: 0,
            params_offset: 0,
            weights_offset: 0,
            workgroups: [1, 1, 1],
            barrier: false,
        };
        let list = StepList {
            shape: StepShape {
                tokens: 3,
                outputs: 1,
            },
            runs: vec![run(0), run(1), run(3)],
            // Launch 1 has no work in this step.
            launch_ends: vec![2, 2, 3],
        };
        let launches: Vec<_> = list.launches().collect();
        assert_eq!(launches.len(), 3);
        assert_eq!(launches[0].queries, [0, 1]);
        assert_eq!(launches[0].runs, &list.runs[..2]);
        assert!(launches[1].runs.is_empty());
        assert_eq!(launches[2].queries, [4, 5]);
        assert_eq!(launches[2].runs[0].dispatch, 3);
    }

    #[test]
    fn a_dispatch_binds_its_windows_and_whole_buffers() {
        let d = Dispatch {
            pipeline: 0,
            resources: vec![Resource::Params, Resource::Arena, Resource::Weights],
            params_offset: 512,
            params_size: 48,
            weights_buffer: 1,
            weights_base: 1 << 30,
            weights_offset: 4096,
            weights_window: 1 << 20,
            grid: Grid::PerRow { rows: Rows::Tokens },
            barrier: false,
        };
        let b: Vec<_> = d.bindings().collect();
        assert_eq!(
            b,
            [
                (Resource::Params, 512, Some(48)),
                (Resource::Arena, 0, None),
                (Resource::Weights, 4096, Some(1 << 20)),
            ]
        );
    }
}
