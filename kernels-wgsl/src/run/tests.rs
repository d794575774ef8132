//! The step flow of [`Loaded`] over a device that logs its calls: a replaying device
//! records a step shape once; one whose submissions consume the recording records the
//! next step's while the logits are read; a step buffer that grows releases every
//! recording first.

use kiln_gpu_host::Output;
use kiln_gpu_host::timers::Timestamps;
use kiln_ir::backend::{BackendError, Step, StepLimits};
use kiln_ir::graph::Rows;
use kiln_ir::kv_layout::KvLayout;

use super::{Device, Loaded};
use crate::program::{Dispatch, Grid, StepList};
use crate::weights::{WeightBuffer, WeightLayout};
use crate::{Program, Resource};

/// A device that logs its calls; its recordings are numbered.
struct Log {
    replays: bool,
    calls: Vec<String>,
    recordings: u32,
    /// What the ids region (argmax.wgsl's, at `IDS_AT`) holds.
    ids: Vec<f32>,
}

impl Device for Log {
    const NAME: &'static str = "log";
    type Recorded = u32;

    fn grow_step(&mut self, _: &Program, bytes: u64) -> Result<(), BackendError> {
        self.calls.push(format!("grow {bytes}"));
        Ok(())
    }
    fn write_step(&mut self, _: &[u8]) -> Result<(), BackendError> {
        self.calls.push("write".into());
        Ok(())
    }
    fn record(&mut self, _: &Program, list: &StepList, timed: bool) -> Result<u32, BackendError> {
        self.recordings += 1;
        let n = list.shape.tokens;
        let timed = if timed { ", timed" } else { "" };
        self.calls
            .push(format!("record {} ({n} tokens{timed})", self.recordings));
        Ok(self.recordings)
    }
    fn release(&mut self, recorded: Vec<u32>) {
        self.calls.push(format!("release {recorded:?}"));
    }
    fn submit(&mut self, recorded: u32) -> Result<Option<u32>, BackendError> {
        self.calls.push(format!("submit {recorded}"));
        Ok(self.replays.then_some(recorded))
    }
    fn read_output(&mut self, output: &Output, out: &mut [u8]) -> Result<(), BackendError> {
        if output.offset == IDS_AT {
            let words: Vec<u8> = self.ids.iter().flat_map(|w| w.to_le_bytes()).collect();
            out.copy_from_slice(&words[..out.len()]);
            self.calls.push("read ids".into());
        } else {
            out.fill(0x3f);
            self.calls.push("read".into());
        }
        Ok(())
    }
    fn copy_kv(&mut self, _: u64, _: u64, _: &[(u64, u64)]) -> Result<(), BackendError> {
        Ok(())
    }
    fn timestamps(&mut self, queries: u32) -> Result<Option<Timestamps>, BackendError> {
        self.calls.push(format!("timestamps {queries}"));
        // Launch i took i + 1 ticks.
        let ticks = (0..queries / 2).flat_map(|i| [10, 11 + u64::from(i)]);
        Ok(Some(Timestamps {
            ticks: ticks.collect(),
            period_ns: 1.0,
            valid_bits: 64,
        }))
    }
    fn synchronize(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

const VOCAB: usize = 5;
/// Where the program's greedy ids lie in the arena.
const IDS_AT: u64 = 2048;
const PAGE: usize = 16;
const PAGES: usize = 64;

/// A program of one launch of one dispatch over the step's tokens, with `VOCAB` logits
/// per output row.
fn program() -> Program {
    let dispatch = Dispatch {
        pipeline: 0,
        resources: vec![Resource::Arena, Resource::Step],
        params_offset: 0,
        params_size: 16,
        weights_buffer: 0,
        weights_base: 0,
        weights_offset: 0,
        weights_window: 16,
        grid: Grid::PerToken { x: 1 },
        barrier: false,
    };
    let weights = WeightLayout {
        offsets: vec![],
        matrix: vec![],
        buffers: vec![WeightBuffer {
            start: 0,
            bytes: 16,
        }],
        total: 16,
    };
    Program {
        pipelines: vec![],
        launches: vec![vec![dispatch]],
        params: vec![0; 16],
        weights,
        weights_windows: vec![16],
        arena_bytes: 4096,
        kv_bytes: 1024,
        kv_page_bytes: 16,
        limits: StepLimits {
            max_tokens: 1024,
            max_outputs: 4,
            vocab: VOCAB,
            kv_page_size: PAGE,
            kv_page_count: PAGES,
            group_windows: vec![None],
        },
        rope: vec![],
        kv_groups: 1,
        output: Output {
            offset: 0,
            rows: Rows::Outputs,
            cols: VOCAB,
            max_rows: 4,
        },
        argmax: Some(Output {
            offset: IDS_AT,
            rows: Rows::Outputs,
            cols: 1,
            max_rows: 4,
        }),
    }
}

fn loaded(replays: bool) -> Loaded<Log> {
    let device = Log {
        replays,
        calls: Vec::new(),
        recordings: 0,
        ids: Vec::new(),
    };
    let kv = KvLayout::new(1, 1, 4).unwrap();
    Loaded::new(program(), device, &kv, false)
}

/// A step of `n` tokens of one sequence from position 0, its last token's logits wanted
/// and read.
fn run(l: &mut Loaded<Log>, n: usize) {
    execute(l, n);
    let mut logits = [f32::NAN; VOCAB];
    l.read_logits(&mut logits).unwrap();
    let poison = f32::from_le_bytes([0x3f; 4]);
    assert!(logits.iter().all(|&v| v == poison), "{logits:?}");
}

/// [`run`]'s step, its output not read.
fn execute(l: &mut Loaded<Log>, n: usize) {
    let ids: Vec<u32> = (0..n as u32).map(|i| i % VOCAB as u32).collect();
    let positions: Vec<u32> = (0..n as u32).collect();
    let seq = vec![0; n];
    let table: Vec<u32> = (0..n.div_ceil(PAGE) as u32).collect();
    let tables: [&[u32]; 1] = [&table];
    let step = Step {
        token_ids: &ids,
        positions: &positions,
        token_seq: &seq,
        block_tables: &tables,
        output_rows: &[n as u32 - 1],
    };
    l.execute(&step).unwrap();
}

#[test]
fn a_replaying_device_records_each_step_shape_once() {
    let mut l = loaded(true);
    run(&mut l, 1);
    run(&mut l, 1);
    run(&mut l, 3);
    run(&mut l, 1);
    let calls = ["write", "record 1 (1 tokens)", "submit 1", "read", "write"];
    assert_eq!(l.device.calls[..5], calls);
    assert_eq!(
        l.device.calls[5..],
        [
            "submit 1",
            "read",
            "write",
            "record 2 (3 tokens)",
            "submit 2",
            "read",
            "write",
            "submit 1",
            "read"
        ]
    );
}

#[test]
fn a_consumed_recording_is_made_again_while_the_logits_are_read() {
    let mut l = loaded(false);
    run(&mut l, 1);
    run(&mut l, 1);
    assert_eq!(
        l.device.calls,
        [
            "write",
            "record 1 (1 tokens)",
            "submit 1",
            // The next step's commands, before the wait for this one's logits.
            "record 2 (1 tokens)",
            "read",
            "write",
            "submit 2",
            "record 3 (1 tokens)",
            "read"
        ]
    );
}

#[test]
fn a_growing_step_buffer_releases_every_recording_first() {
    for replays in [true, false] {
        let mut l = loaded(replays);
        run(&mut l, 2);
        run(&mut l, 600);
        let calls = &l.device.calls;
        let grow = calls.iter().position(|c| c.starts_with("grow")).unwrap();
        // What the small step's shape kept: its recording, or the next one's, made
        // ahead.
        let kept = if replays { 1 } else { 2 };
        assert_eq!(calls[grow - 1], format!("release [{kept}]"), "{calls:?}");
        assert_eq!(calls[grow], "grow 8192");
        // The large step records its own, with the new buffer.
        let own = format!("record {} (600 tokens)", kept + 1);
        assert_eq!(calls[grow + 2], own, "{calls:?}");
    }
}

/// `read_argmax` reads the ids region (one word a row, not the logits), records the next
/// step ahead as `read_logits` does, turns argmax.wgsl's -1 into `NON_FINITE_ROW`, and
/// checks what it is asked for.
#[test]
fn the_device_argmax_is_read_as_ids() {
    let mut l = loaded(false);
    run(&mut l, 1);
    l.device.ids = vec![3.0];
    let mut ids = [u32::MAX - 1];
    l.read_argmax(VOCAB, &mut ids)
        .expect("a device argmax")
        .unwrap();
    assert_eq!(ids, [3]);
    let calls = &l.device.calls;
    assert_eq!(calls[calls.len() - 1], "read ids");
    l.device.ids = vec![-1.0];
    l.read_argmax(VOCAB, &mut ids)
        .expect("a device argmax")
        .unwrap();
    assert_eq!(ids, [kiln_ir::backend::NON_FINITE_ROW]);
    assert!(
        l.read_argmax(VOCAB + 1, &mut ids)
            .is_some_and(|r| r.is_err()),
        "a vocabulary other than the output's"
    );
    assert!(
        l.read_argmax(VOCAB, &mut [0, 0])
            .is_some_and(|r| r.is_err()),
        "more rows than the step's"
    );
    // A consumed recording is made again before the ids are waited for.
    let mut l = loaded(false);
    l.device.ids = vec![0.0];
    execute(&mut l, 1);
    l.read_argmax(VOCAB, &mut ids)
        .expect("a device argmax")
        .unwrap();
    assert_eq!(
        l.device.calls,
        [
            "write",
            "record 1 (1 tokens)",
            "submit 1",
            "record 2 (1 tokens)",
            "read ids"
        ]
    );
}

/// Steps carry timestamps only once `launch_times` asked for them: the first call turns
/// them on and answers Unsupported, the recordings kept are released before the next
/// step (they lack the queries), which records its own, timed; its times are read.
#[test]
fn the_first_launch_times_turns_the_timestamps_on() {
    for replays in [true, false] {
        let mut l = loaded(replays);
        run(&mut l, 1);
        assert!(matches!(
            l.launch_times("log"),
            Err(BackendError::Unsupported { .. })
        ));
        let before = l.device.calls.len();
        run(&mut l, 1);
        let calls = &l.device.calls[before..];
        let kept = if replays { 1 } else { 2 };
        let timed = format!("record {} (1 tokens, timed)", kept + 1);
        assert_eq!(
            calls[..3],
            [format!("release [{kept}]"), "write".into(), timed]
        );
        let times = l.launch_times("log").unwrap();
        assert_eq!(times.len(), 1);
        assert!((times[0].seconds - 1e-9).abs() < 1e-15, "{times:?}");
        assert_eq!(l.device.calls.last().unwrap(), "timestamps 2");
    }
}
