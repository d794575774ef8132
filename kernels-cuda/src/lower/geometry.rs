//! The launches of a call for one step: grid, block and shared memory from the step's
//! shape; for packed weights, quantize + matvec (up to 32 rows, the tile from
//! `matvec_launch`; every step without tensor cores) or quantize + the int8 tensor-core
//! kernel (crate::mmq); for float weights the matrix-vector kernel (tiles of 8 rows);
//! and attention's paths (split-K decode + combine, tensor-core prefill, one block per
//! (head, token)). Everything but the shape comes from the call's own arguments.

use kiln_ir::kv_layout::KvDtype;

use super::{Args, Call};
use crate::args::{KvArgs, MatmulArgs};
use crate::launch::{
    AttentionShape, Launch, MV_ROWS, TILE_T, WARP, WG, attention_combine_launch,
    attention_decode_launch, attention_prefill_launch, attention_splits, split,
};
use crate::matvec::{self, Epilogue, MatvecArgs, QuantizeArgs};
use crate::mmq;
use crate::variant::{Entry, Kernel, Variant};

/// What a step's launches depend on besides the calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepGeometry {
    pub n_tokens: u32,
    pub n_outputs: u32,
    /// The length class of the step's longest context (launch.rs: length_class).
    pub class: u32,
    /// Multiprocessors of the device (the attention splits fill them).
    pub sm_count: u32,
    /// The device runs mma.sync m16n8k16 (sm_80+) and the backend uses it.
    pub tensor_cores: bool,
    /// The prefill attention and the packed types' prefill matmul take the warpgroup-MMA
    /// kernels (compute capability 9.0, the modules compiled for sm_90a).
    pub wgmma: bool,
    /// Short steps take the split-K decode attention (off: one block per (head, token)).
    pub decode_attention: bool,
}

impl StepGeometry {
    /// Rows the step header word `sel` counts (0: tokens, 1: outputs).
    fn rows(&self, sel: u32) -> u32 {
        if sel == 1 {
            self.n_outputs
        } else {
            self.n_tokens
        }
    }
}

/// One launch of a call: what to launch and the arguments it takes (the call's, with
/// per-step fields such as the attention splits set).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Planned {
    pub launch: Launch,
    pub args: Args,
}

/// Blocks of WG threads.
fn wg(grid: [u32; 3]) -> Launch {
    Launch {
        entry: Entry::Main,
        grid,
        block: [WG, 1, 1],
        shared_bytes: 0,
    }
}

/// A thread per element of (rows, cols), blocks of WG threads laid out x then y.
fn elementwise(rows: u32, cols: u32) -> Launch {
    let [x, y] = split(rows.saturating_mul(cols).div_ceil(WG));
    wg([x, y, 1])
}

impl Call {
    /// The launches of this call (of variant `v`) in a step of geometry `g`, in order;
    /// launches over nothing are left out.
    pub fn launches(&self, v: &Variant, g: &StepGeometry) -> impl Iterator<Item = Planned> {
        let planned: [Option<Planned>; 2] = match self.args {
            Args::Matmul(a) => [Some(matmul(&a, g)), None],
            Args::Quantize(a) => [quantize(&a, g), None],
            Args::Matvec(a) => [packed(v, &a, g), None],
            Args::Kv(a) if v.kernel == Kernel::Attention => attention(v, &a, g),
            Args::Kv(a) => {
                // kv_write: K heads then V heads; rope_kv_write: q heads first.
                let heads = if v.kernel == Kernel::RopeKvWrite {
                    a.n_heads + 2 * a.n_kv_heads
                } else {
                    2 * a.n_kv_heads
                };
                [Some(plain(wg([heads, g.n_tokens, 1]), self.args)), None]
            }
            Args::Embed(a) => {
                let x = a.d.div_ceil(8).div_ceil(WG);
                [Some(plain(wg([x, g.n_tokens, 1]), self.args)), None]
            }
            Args::RmsNorm(a) => {
                let [x, y] = split(g.rows(a.rows_sel) * a.heads);
                [Some(plain(wg([x, y, 1]), self.args)), None]
            }
            Args::Binary(a) => [
                Some(plain(elementwise(g.rows(a.rows_sel), a.cols), self.args)),
                None,
            ],
            Args::SelectRows(a) => [
                Some(plain(elementwise(g.n_outputs, a.cols), self.args)),
                None,
            ],
            Args::Rope(a) => [
                Some(plain(elementwise(g.n_tokens, a.width), self.args)),
                None,
            ],
        };
        planned
            .into_iter()
            .flatten()
            .filter(|p| p.launch.grid.iter().all(|&n| n > 0))
    }
}

fn plain(launch: Launch, args: Args) -> Planned {
    Planned { launch, args }
}

/// A matmul-family launch of F32/F16/BF16 weights: the matrix-vector tiles of 8 rows at
/// every step length (f16 tensor-core operands would round what these hold to f32).
fn matmul(a: &MatmulArgs, g: &StepGeometry) -> Planned {
    let rows = g.rows(a.rows_sel);
    let launch = Launch {
        entry: Entry::Main,
        grid: [a.n.div_ceil(MV_ROWS), 1, rows.div_ceil(TILE_T)],
        block: [MV_ROWS * WARP, 1, 1],
        shared_bytes: 0,
    };
    plain(launch, Args::Matmul(*a))
}

/// Whether a step of `rows` rows takes the int8 tensor-core matmul of packed weights
/// rather than the matvec.
fn packed_takes_mmq(rows: u32, g: &StepGeometry) -> bool {
    g.tensor_cores && rows > matvec::MAX_TOKENS
}

/// The q8_1 quantization of a packed matmul's input (the matvec or the int8 tensor-core
/// matmul reads it at every step length): a block per row of the step.
fn quantize(a: &QuantizeArgs, g: &StepGeometry) -> Option<Planned> {
    let rows = g.rows(a.rows_sel);
    let (_, block) = matvec::quantize_launch(rows);
    let entry = if a.norm.0 != 0 {
        Entry::RmsNormQuantize
    } else {
        Entry::Quantize
    };
    let launch = Launch {
        entry,
        grid: [rows, 1, 1],
        block,
        shared_bytes: 0,
    };
    Some(plain(launch, Args::Quantize(*a)))
}

/// The epilogue a matvec's arguments ask for (lower/ops.rs sets w2q for the GLUs, gelu
/// for GeGLU, res for Add).
pub fn epilogue(a: &MatvecArgs) -> Epilogue {
    if a.w2q.0 != 0 && a.gelu != 0 {
        Epilogue::GeGlu
    } else if a.w2q.0 != 0 {
        Epilogue::SwiGlu
    } else if a.res.0 != 0 {
        Epilogue::Add
    } else {
        Epilogue::Store
    }
}

/// A packed weight's launch: the dp4a matvec (crate::matvec; token tiles of 32, or 16 for
/// the GLUs, over longer steps without tensor cores), or the int8 tensor-core matmul
/// (crate::mmq) for the steps the matvec leaves to the tensor cores. `None` where the
/// variant is not the one the step takes.
fn packed(v: &Variant, a: &MatvecArgs, g: &StepGeometry) -> Option<Planned> {
    let rows = g.rows(a.rows_sel);
    let e = epilogue(a);
    let mut shared_bytes = 0;
    let (entry, grid, block) = if v.kernel == Kernel::Mmq {
        if !packed_takes_mmq(rows, g) {
            return None;
        }
        if g.wgmma {
            // sm_90a: the warpgroup-MMA matmul (f16 tiles, no per-unit fold).
            let l = mmq::wgmma_launch(v.weight?, a.n, a.k, rows, e).ok()?;
            shared_bytes = mmq::wgmma_shared_bytes(e);
            (Entry::mmq_wgmma(e), l.grid, l.block)
        } else {
            let l = mmq::launch(v.weight?, a.n, a.k, rows, e, g.sm_count).ok()?;
            (Entry::mmq(l.tile, e)?, l.grid, l.block)
        }
    } else {
        if packed_takes_mmq(rows, g) || rows == 0 {
            return None;
        }
        let l = matvec::matvec_launch(v.weight?, a.n, a.k, rows, e).ok()?;
        (Entry::matvec(l.tile, e)?, l.grid, l.block)
    };
    let launch = Launch {
        entry,
        grid,
        block,
        shared_bytes,
    };
    Some(plain(launch, Args::Matvec(*a)))
}

/// Bytes of one KV value of the variant.
pub fn value_bytes(v: &Variant) -> u32 {
    match v.kv {
        Some(KvDtype::F8E4M3) => 1,
        _ => 2,
    }
}

/// Attention: the split-K decode kernel (and the combine when it splits) for short
/// steps, the tensor-core prefill for long FP8 steps, else one block per (head, token).
fn attention(v: &Variant, a: &KvArgs, g: &StepGeometry) -> [Option<Planned>; 2] {
    let main = Some(plain(wg([a.n_heads, g.n_tokens, 1]), Args::Kv(*a)));
    let shape = match AttentionShape::of(a, value_bytes(v)) {
        Some(s) if g.decode_attention => s,
        _ => return [main, None],
    };
    let splits = attention_splits(&shape, g.n_tokens, g.class, g.sm_count);
    if let Some(l) = attention_decode_launch(&shape, g.n_tokens, splits) {
        let args = Args::Kv(KvArgs { splits, ..*a });
        let combine = attention_combine_launch(&shape, g.n_tokens, splits).map(|l| plain(l, args));
        return [Some(plain(l, args)), combine];
    }
    if v.has_prefill()
        && let Some(l) = attention_prefill_launch(&shape, g.n_tokens, g.tensor_cores, g.wgmma)
    {
        return [Some(plain(l, Args::Kv(*a))), None];
    }
    [main, None]
}
