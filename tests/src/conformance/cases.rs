//! The case table, then the builders that turn a case into a graph, weights, steps and
//! expected outputs.
//!
//! Case names are `<family>_<variant>`, both identifiers: `conformance_suite!` lists them
//! and makes the test `<backend>::<family>::<variant>` of each.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use kiln_ir::kv_layout::{KvDtype, KvLayout};
use kiln_ir::quant::{dequantize_row, quantize_row};
use kiln_ir::{AttentionParams, DType, Graph, Op, RopeParams, Rows, ValueId, ValueType, WeightId};

use super::reference::{self as oracle, f64s, gather};
use super::{Built, Probe, Rng, StepData};

// ---- limits on the error, from measurements on the CPU backend ----

/// f32 arithmetic against the f64 oracle: rounding only (measured ≤ 2e-14).
const F32_LIMIT: f64 = 1e-11;
/// Matmuls whose activations are quantized to Q8_0 (Q4_0, Q8_0 weights) or Q8_1 (Q4_1
/// weights) blocks, against f32 activations (measured 1.3e-5 to 2.2e-5).
const Q8_ACTS_LIMIT: f64 = 5e-5;
/// Attention over an F16 KV cache, against f32 K and V (measured ≤ 1.5e-7).
const KV_F16_LIMIT: f64 = 1e-6;
/// Attention over an FP8 E4M3 KV cache with per-(token, head) scales, against f32 K and V:
/// 3 mantissa bits leave about 6e-4 on V alone (measured 6e-4 to 1.1e-3).
const KV_FP8_LIMIT: f64 = 2e-3;

/// RMSNorm epsilon of every case.
const EPS: f32 = 1e-5;

/// The weight types of the matmul family.
pub const WEIGHT_DTYPES: [DType; 6] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
];

/// Every case of the suite. Shapes avoid multiples of tiles and pages: 1, 3, 7 and 33
/// tokens; widths of an odd number of 32-value blocks (96, 160, 608 = 576 + 32); matmul
/// row counts that are not multiples of 32; contexts of 1, 17, 40 and 43 over pages of 16
/// and 5.
pub fn cases() -> Vec<Case> {
    let mut cases = vec![
        rmsnorm(1, 96),
        rmsnorm(33, 608),
        add(7, 160),
        swiglu(33, 96),
        rope(7, 3, 64, RopeSpec::full(64, 10_000.0)),
        rope(
            3,
            2,
            128,
            RopeSpec {
                factors: true,
                ..RopeSpec::full(128, 500_000.0)
            },
        ),
        rope(
            33,
            2,
            64,
            RopeSpec {
                freq_scale: 0.5,
                ..RopeSpec::full(32, 10_000.0)
            },
        ),
        rope(
            1,
            1,
            128,
            RopeSpec {
                factors: true,
                ..RopeSpec::full(64, 1e6)
            },
        ),
    ];
    for dtype in WEIGHT_DTYPES {
        cases.extend([
            matmul("matmul", vec![dtype], 1, 608, vec![67]),
            matmul("matmul", vec![dtype], 33, 160, vec![131]),
            matmul("matmul3", vec![dtype; 3], 7, 96, vec![96, 32, 32]),
            matmul(
                "rmsnorm_matmul3",
                vec![dtype; 3],
                33,
                160,
                vec![160, 32, 32],
            ),
            matmul_swiglu(false, dtype, 7, 96, 131),
            matmul_swiglu(true, dtype, 3, 608, 96),
            matmul_add(dtype, 33, 160, 96),
        ]);
    }
    // Q4_0 and Q8_0 share Q8_0 activations, Q4_1 takes Q8_1 ones, BF16 f32 ones.
    cases.push(matmul(
        "matmul3",
        vec![DType::Q4_1, DType::Q8_0, DType::Q4_0],
        7,
        96,
        vec![96, 32, 64],
    ));
    cases.push(matmul(
        "matmul3",
        vec![DType::Q4_0, DType::BF16, DType::Q8_0],
        7,
        96,
        vec![96, 32, 64],
    ));

    let attention = |head_dim, n_heads, n_kv_heads, kv, page_size, seqs: &[(usize, usize)]| {
        attention_case(AttentionSpec {
            head_dim,
            n_heads,
            n_kv_heads,
            kv,
            page_size,
            seqs: seqs.to_vec(),
            rope: None,
            check_q: false,
        })
    };
    use KvDtype::{F8E4M3 as FP8, F16};
    cases.push(attention(64, 2, 2, FP8, 16, &[(1, 1), (17, 1), (40, 8)]));
    cases.push(attention(128, 2, 2, F16, 5, &[(17, 3), (1, 1), (40, 1)]));
    for kv in [FP8, F16] {
        for page_size in [16, 5] {
            cases.push(attention(
                128,
                3,
                1,
                kv,
                page_size,
                &[(43, 1), (17, 17), (1, 1)],
            ));
            cases.push(attention(
                64,
                8,
                2,
                kv,
                page_size,
                &[(17, 2), (1, 1), (40, 33)],
            ));
        }
    }
    let roped = |head_dim, n_heads, kv, page_size, rope, seqs: &[(usize, usize)]| {
        [false, true].map(|check_q| {
            attention_case(AttentionSpec {
                head_dim,
                n_heads,
                n_kv_heads: 1,
                kv,
                page_size,
                seqs: seqs.to_vec(),
                rope: Some(rope),
                check_q,
            })
        })
    };
    cases.extend(roped(
        64,
        3,
        FP8,
        16,
        RopeSpec::full(64, 10_000.0),
        &[(17, 1), (40, 7)],
    ));
    let partial = RopeSpec {
        freq_scale: 0.25,
        factors: true,
        ..RopeSpec::full(96, 500_000.0)
    };
    cases.extend(roped(128, 4, F16, 5, partial, &[(1, 1), (43, 2), (17, 17)]));
    cases
}

fn matmul_limit(dtype: DType) -> f64 {
    if dtype.is_quantized() {
        Q8_ACTS_LIMIT
    } else {
        F32_LIMIT
    }
}

fn kv_limit(kv: KvDtype) -> f64 {
    match kv {
        KvDtype::F16 => KV_F16_LIMIT,
        KvDtype::F8E4M3 => KV_FP8_LIMIT,
    }
}

// ---- the case type ----

/// How a case's error is normalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Σ(out − ref)² / Σ ref².
    Nmse,
    /// Σ(out − ref)² / Σ power, where an output's power is Σᵢ (wᵢ·xᵢ)² over the products
    /// a matmul sums: ref² on average, but never near zero when a draw of a few outputs
    /// happens to cancel. For random shapes down to one output element.
    TermPower,
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Nmse => "NMSE",
            Metric::TermPower => "NMSE/term power",
        })
    }
}

/// One case: a name, the shapes in words, the limit on its error, and the function that
/// builds its graph, random data and expected outputs.
pub struct Case {
    pub name: String,
    pub shape: String,
    pub limit: f64,
    pub metric: Metric,
    builder: Box<dyn Fn(&mut Rng) -> Built + Send + Sync>,
}

impl Case {
    fn new(
        name: String,
        shape: String,
        limit: f64,
        builder: impl Fn(&mut Rng) -> Built + Send + Sync + 'static,
    ) -> Case {
        Case {
            name,
            shape,
            limit,
            metric: Metric::Nmse,
            builder: Box::new(builder),
        }
    }

    /// The case made concrete, with data seeded by its name.
    pub fn build(&self) -> Built {
        (self.builder)(&mut Rng::from_name(&self.name))
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Case({}: {}, limit {:e})",
            self.name, self.shape, self.limit
        )
    }
}

// ---- the op builders ----

fn rmsnorm(tokens: usize, d: usize) -> Case {
    Case::new(
        format!("rmsnorm_t{tokens}_d{d}"),
        format!("x ({tokens}, {d})"),
        F32_LIMIT,
        move |rng| {
            let mut b = Builder::new();
            let (x, xt) = b.input("x", 2 * tokens, d, 1.0, rng);
            let (weight, w) = b.norm("norm", d, rng);
            let y = b.node(Op::RmsNorm { weight, eps: EPS }, &[x], d);
            rowwise(b, rng, tokens, 0, &[(y, d)], move |ids, _| {
                vec![plain(oracle::rmsnorm(&gather(&xt, d, ids), &w, EPS))]
            })
        },
    )
}

/// Add or SwiGlu: two inputs from two tables.
fn binary(name: &str, op: Op, tokens: usize, d: usize, f: fn(&[f64], &[f64]) -> Vec<f64>) -> Case {
    let shape = format!("a, b ({tokens}, {d})");
    Case::new(
        format!("{name}_t{tokens}_d{d}"),
        shape,
        F32_LIMIT,
        move |rng| {
            let mut b = Builder::new();
            let (x, xt) = b.input("a", 2 * tokens, d, 1.0, rng);
            let (y, yt) = b.input("b", 2 * tokens, d, 1.0, rng);
            let z = b.node(op.clone(), &[x, y], d);
            rowwise(b, rng, tokens, 0, &[(z, d)], move |ids, _| {
                vec![plain(f(&gather(&xt, d, ids), &gather(&yt, d, ids)))]
            })
        },
    )
}

fn add(tokens: usize, d: usize) -> Case {
    binary("add", Op::Add, tokens, d, oracle::add)
}

fn swiglu(tokens: usize, d: usize) -> Case {
    binary("swiglu", Op::SwiGlu, tokens, d, oracle::swiglu)
}

/// RoPE geometry of a case (head_dim comes from the case).
#[derive(Clone, Copy, Debug)]
pub struct RopeSpec {
    pub rope_dims: usize,
    pub theta: f32,
    pub freq_scale: f32,
    /// With a `rope_freqs` vector of random divisors in [1, 4).
    pub factors: bool,
}

impl RopeSpec {
    pub fn full(rope_dims: usize, theta: f32) -> RopeSpec {
        RopeSpec {
            rope_dims,
            theta,
            freq_scale: 1.0,
            factors: false,
        }
    }
}

fn rope(tokens: usize, n_heads: usize, head_dim: usize, spec: RopeSpec) -> Case {
    let partial = if spec.rope_dims < head_dim {
        "_partial"
    } else {
        ""
    };
    let factors = if spec.factors { "_factors" } else { "" };
    let name = format!("rope_h{head_dim}{partial}{factors}_t{tokens}");
    let shape = format!("x ({tokens}, {n_heads}×{head_dim}), {spec:?}, positions < 3000");
    Case::new(name, shape, F32_LIMIT, move |rng| {
        let mut b = Builder::new();
        let width = n_heads * head_dim;
        let (x, xt) = b.input("x", 2 * tokens, width, 1.0, rng);
        let (rope, oracle_rope) = b.rope(head_dim, spec, rng);
        let y = b.node(Op::Rope { rope }, &[x], width);
        rowwise(
            b,
            rng,
            tokens,
            3000,
            &[(y, width)],
            move |ids, positions| {
                vec![plain(oracle::rope(
                    &gather(&xt, width, ids),
                    positions,
                    &oracle_rope,
                ))]
            },
        )
    })
}

/// MatMul with one weight per dtype of `dtypes` (rows `ns`), or RmsNorm + MatMul fused
/// when `family` starts with "rmsnorm".
fn matmul(family: &str, dtypes: Vec<DType>, tokens: usize, k: usize, ns: Vec<usize>) -> Case {
    let label = if dtypes.iter().all(|&d| d == dtypes[0]) {
        dtypes[0].name()
    } else {
        "mixed"
    };
    let norm = family.starts_with("rmsnorm");
    let limit = dtypes.iter().map(|&d| matmul_limit(d)).fold(0.0, f64::max);
    let shape = format!(
        "x ({tokens}, {k}), W {:?} rows {ns:?}",
        dtypes.iter().map(|d| d.name()).collect::<Vec<_>>()
    );
    Case::new(
        format!("{family}_t{tokens}_{label}"),
        shape,
        limit,
        move |rng| {
            let mut b = Builder::new();
            let (x, xt) = b.input("x", 2 * tokens, k, 1.0, rng);
            let norm_w = norm.then(|| b.norm("norm", k, rng));
            let (ids, ws): (Vec<WeightId>, Vec<Vec<f64>>) = dtypes
                .iter()
                .zip(&ns)
                .enumerate()
                .map(|(i, (&dt, &n))| b.matrix(&format!("w{i}"), dt, n, k, rng))
                .unzip();
            let op = match &norm_w {
                Some((norm, _)) => Op::RmsNormMatMul {
                    norm: *norm,
                    eps: EPS,
                    weights: ids,
                },
                None => Op::MatMul { weights: ids },
            };
            let types: Vec<ValueType> = ns
                .iter()
                .map(|&cols| ValueType::F32 {
                    rows: Rows::Tokens,
                    cols,
                })
                .collect();
            let outs = b.graph.push(op, &[x], &types, None);
            let probes: Vec<(ValueId, usize)> = outs.into_iter().zip(ns.iter().copied()).collect();
            rowwise(b, rng, tokens, 0, &probes, move |ids, _| {
                let mut x = gather(&xt, k, ids);
                if let Some((_, w)) = &norm_w {
                    x = oracle::rmsnorm(&x, w, EPS);
                }
                ws.iter()
                    .map(|w| (oracle::matmul(&x, w, k), oracle::matmul_power(&x, w, k)))
                    .collect()
            })
        },
    )
}

/// A single-weight matmul of random shape, measured against term power (proptest).
pub fn matmul_term_case(dtype: DType, tokens: usize, rows: usize, cols: usize) -> Case {
    let mut case = matmul("prop_matmul", vec![dtype], tokens, cols, vec![rows]);
    case.name = format!("{}_n{rows}_k{cols}", case.name);
    case.metric = Metric::TermPower;
    case
}

/// MatMulSwiGlu, or RmsNormMatMulSwiGlu with `norm`.
fn matmul_swiglu(norm: bool, dtype: DType, tokens: usize, k: usize, n: usize) -> Case {
    let family = if norm {
        "rmsnorm_matmul_swiglu"
    } else {
        "matmul_swiglu"
    };
    let shape = format!("x ({tokens}, {k}), gate and up ({n}, {k})");
    Case::new(
        format!("{family}_t{tokens}_{}", dtype.name()),
        shape,
        matmul_limit(dtype),
        move |rng| {
            let mut b = Builder::new();
            let (x, xt) = b.input("x", 2 * tokens, k, 1.0, rng);
            let norm_w = norm.then(|| b.norm("norm", k, rng));
            let (gate, g) = b.matrix("gate", dtype, n, k, rng);
            let (up, u) = b.matrix("up", dtype, n, k, rng);
            let op = match &norm_w {
                Some((norm, _)) => Op::RmsNormMatMulSwiGlu {
                    norm: *norm,
                    eps: EPS,
                    gate,
                    up,
                },
                None => Op::MatMulSwiGlu { gate, up },
            };
            let y = b.node(op, &[x], n);
            rowwise(b, rng, tokens, 0, &[(y, n)], move |ids, _| {
                let mut x = gather(&xt, k, ids);
                if let Some((_, w)) = &norm_w {
                    x = oracle::rmsnorm(&x, w, EPS);
                }
                vec![plain(oracle::swiglu(
                    &oracle::matmul(&x, &g, k),
                    &oracle::matmul(&x, &u, k),
                ))]
            })
        },
    )
}

fn matmul_add(dtype: DType, tokens: usize, k: usize, n: usize) -> Case {
    let shape = format!("x ({tokens}, {k}), W ({n}, {k}), residual ({tokens}, {n})");
    Case::new(
        format!("matmul_add_t{tokens}_{}", dtype.name()),
        shape,
        matmul_limit(dtype),
        move |rng| {
            let mut b = Builder::new();
            let (x, xt) = b.input("x", 2 * tokens, k, 1.0, rng);
            let (r, rt) = b.input("residual", 2 * tokens, n, 1.0, rng);
            let (weight, w) = b.matrix("w", dtype, n, k, rng);
            let y = b.node(Op::MatMulAdd { weight }, &[x, r], n);
            rowwise(b, rng, tokens, 0, &[(y, n)], move |ids, _| {
                let x = gather(&xt, k, ids);
                vec![plain(oracle::add(
                    &oracle::matmul(&x, &w, k),
                    &gather(&rt, n, ids),
                ))]
            })
        },
    )
}

/// An attention case: q, k, v from three tables; KvWrite (or RopeKvWrite) then Attention.
#[derive(Clone, Debug)]
pub struct AttentionSpec {
    pub head_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub kv: KvDtype,
    pub page_size: usize,
    /// Per sequence: (context length, how many of its last tokens the final step brings);
    /// the others come in the step before, so the final step reads KV an earlier one wrote.
    pub seqs: Vec<(usize, usize)>,
    /// RopeKvWrite with this RoPE instead of KvWrite.
    pub rope: Option<RopeSpec>,
    /// Check RopeKvWrite's rotated q rather than the attention output.
    pub check_q: bool,
}

pub fn attention_case(spec: AttentionSpec) -> Case {
    let family = match (spec.rope.is_some(), spec.check_q) {
        (false, _) => "attention",
        (true, false) => "rope_kv_write_attention",
        (true, true) => "rope_kv_write_q",
    };
    let group = spec.n_heads / spec.n_kv_heads;
    let name = format!(
        "{family}_h{}_gqa{group}_{}_p{}",
        spec.head_dim, spec.kv, spec.page_size
    );
    let limit = if spec.check_q {
        F32_LIMIT
    } else {
        kv_limit(spec.kv)
    };
    let shape = format!(
        "{} heads over {} KV heads of {}, {} KV, pages of {}, (context, last step) {:?}{}",
        spec.n_heads,
        spec.n_kv_heads,
        spec.head_dim,
        spec.kv,
        spec.page_size,
        spec.seqs,
        spec.rope.map_or(String::new(), |r| format!(", {r:?}"))
    );
    Case::new(name, shape, limit, move |rng| attention_built(rng, &spec))
}

fn attention_built(rng: &mut Rng, s: &AttentionSpec) -> Built {
    let (hd, q_dim, kv_dim) = (
        s.head_dim,
        s.n_heads * s.head_dim,
        s.n_kv_heads * s.head_dim,
    );
    let lens: Vec<usize> = s.seqs.iter().map(|&(len, _)| len).collect();
    let starts: Vec<usize> = lens
        .iter()
        .scan(0, |acc, &l| Some(std::mem::replace(acc, *acc + l)))
        .collect();
    let total: usize = lens.iter().sum();
    let mut b = Builder::new();
    // q is scaled up so that softmax is peaked rather than nearly uniform.
    let (q, qt) = b.input("q", 2 * total, q_dim, 2.0, rng);
    let (k, kt) = b.input("k", 2 * total, kv_dim, 1.0, rng);
    let (v, vt) = b.input("v", 2 * total, kv_dim, 1.0, rng);
    let attention = AttentionParams {
        layer: 0,
        n_heads: s.n_heads,
        n_kv_heads: s.n_kv_heads,
        head_dim: hd,
    };
    let rope = s.rope.map(|spec| b.rope(hd, spec, rng));
    let q_in = match &rope {
        Some((rope, _)) => b.node(
            Op::RopeKvWrite {
                rope: *rope,
                attention,
            },
            &[q, k, v],
            q_dim,
        ),
        None => {
            b.graph.push(Op::KvWrite { attention }, &[k, v], &[], None);
            q
        }
    };
    let out = b.node(Op::Attention { attention }, &[q_in], q_dim);
    let probe = if s.check_q { q_in } else { out };
    let layout = KvLayout::new(1, s.n_kv_heads, hd)
        .and_then(|l| l.with_kv_page_size(s.page_size))
        .and_then(|l| l.with_dtype(s.kv))
        .expect("a valid KV layout");
    let paging = Paging::new(rng, &lens, s.page_size);

    // Two runs over the same pages: ids total..2·total poison the KV cache and the arena,
    // then ids 0..total. Each run is two steps: every sequence's context but its last
    // tokens, then those.
    let mut steps = Vec::new();
    for base in [total, 0] {
        // Per sequence: (len, q_dim) the oracle's output for every position.
        let rows: Vec<Vec<f64>> = (0..lens.len())
            .map(|i| {
                let ids: Vec<usize> = (base + starts[i]..base + starts[i] + lens[i]).collect();
                let positions: Vec<u32> = (0..lens[i] as u32).collect();
                let (mut qs, mut ks) = (gather(&qt, q_dim, &ids), gather(&kt, kv_dim, &ids));
                if let Some((_, r)) = &rope {
                    qs = oracle::rope(&qs, &positions, r);
                    ks = oracle::rope(&ks, &positions, r);
                }
                if s.check_q {
                    qs
                } else {
                    oracle::attention(
                        &qs,
                        &ks,
                        &gather(&vt, kv_dim, &ids),
                        s.n_heads,
                        s.n_kv_heads,
                        hd,
                    )
                }
            })
            .collect();
        for last_step in [false, true] {
            let mut step = Planned::new(1);
            for (i, &(len, last)) in s.seqs.iter().enumerate() {
                let range = if last_step {
                    len - last..len
                } else {
                    0..len - last
                };
                for p in range {
                    step.token_ids.push((base + starts[i] + p) as u32);
                    step.positions.push(p as u32);
                    step.token_seq.push(i as u32);
                    step.expected[0].extend_from_slice(&rows[i][p * q_dim..(p + 1) * q_dim]);
                }
            }
            if !step.token_ids.is_empty() {
                steps.push(step);
            }
        }
    }
    finish(b, rng, &[(probe, q_dim)], layout, paging, steps)
}

// ---- building blocks ----

/// A graph under construction with its weights, stored as a model file would hold them.
struct Builder {
    graph: Graph,
    ids: ValueId,
    blob: Vec<u8>,
    weights: Vec<(String, Range<usize>)>,
}

impl Builder {
    fn new() -> Builder {
        let mut graph = Graph::new(1);
        let ids = graph.new_value(ValueType::TokenIds);
        graph.input = Some(ids);
        Builder {
            graph,
            ids,
            blob: Vec::new(),
            weights: Vec::new(),
        }
    }

    /// Store `values` (rows, cols) as `dtype`; returns the weight and its values as
    /// stored (dequantized), widened for the oracle.
    fn weight(
        &mut self,
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> (WeightId, Vec<f64>) {
        let row_bytes = dtype.bytes_for(cols as u64).expect("whole blocks") as usize;
        let start = self.blob.len().next_multiple_of(32); // GGUF aligns tensor data
        self.blob.resize(start + rows * row_bytes, 0);
        let mut stored = vec![0.0f32; rows * cols]; // (rows, cols)
        for r in 0..rows {
            let bytes = &mut self.blob[start + r * row_bytes..][..row_bytes];
            quantize_row(dtype, &values[r * cols..][..cols], bytes).expect("row geometry");
            dequantize_row(dtype, bytes, &mut stored[r * cols..][..cols]).expect("row geometry");
        }
        self.weights
            .push((name.to_string(), start..self.blob.len()));
        (
            self.graph.add_weight(name, dtype, rows, cols),
            f64s(&stored),
        )
    }

    /// Activations: an F32 table of `vocab` random rows of `cols`, embedded by the step's
    /// token ids. Returns the value and the table (vocab, cols).
    fn input(
        &mut self,
        name: &str,
        vocab: usize,
        cols: usize,
        amplitude: f32,
        rng: &mut Rng,
    ) -> (ValueId, Vec<f32>) {
        let table = rng.blocky(vocab * cols, amplitude);
        let (id, _) = self.weight(name, DType::F32, vocab, cols, &table);
        (self.node(Op::Embed { table: id }, &[self.ids], cols), table)
    }

    /// A random (rows, cols) matrix stored as `dtype`.
    fn matrix(
        &mut self,
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        rng: &mut Rng,
    ) -> (WeightId, Vec<f64>) {
        let values = rng.blocky(rows * cols, 1.0);
        self.weight(name, dtype, rows, cols, &values)
    }

    /// A random RMSNorm weight in [0.5, 1.5).
    fn norm(&mut self, name: &str, d: usize, rng: &mut Rng) -> (WeightId, Vec<f64>) {
        let values = rng.uniform_vec(d, 0.5, 1.5);
        self.weight(name, DType::F32, 1, d, &values)
    }

    /// The op's RoPE parameters and the oracle's, with random frequency factors if asked.
    fn rope(
        &mut self,
        head_dim: usize,
        spec: RopeSpec,
        rng: &mut Rng,
    ) -> (RopeParams, oracle::Rope) {
        let factors = spec.factors.then(|| {
            let values = rng.uniform_vec(spec.rope_dims / 2, 1.0, 4.0);
            self.weight("rope_freqs", DType::F32, 1, spec.rope_dims / 2, &values)
        });
        let params = RopeParams {
            head_dim,
            rope_dims: spec.rope_dims,
            theta: spec.theta,
            freq_scale: spec.freq_scale,
            freq_factors: factors.as_ref().map(|(id, _)| *id),
        };
        let reference = oracle::Rope {
            head_dim,
            rope_dims: spec.rope_dims,
            theta: f64::from(spec.theta),
            freq_scale: f64::from(spec.freq_scale),
            freq_factors: factors.map(|(_, f)| f),
        };
        (params, reference)
    }

    /// A node with one (tokens, cols) output.
    fn node(&mut self, op: Op, inputs: &[ValueId], cols: usize) -> ValueId {
        self.graph.push(
            op,
            inputs,
            &[ValueType::F32 {
                rows: Rows::Tokens,
                cols,
            }],
            None,
        )[0]
    }
}

/// KV pages for sequences of `lens` positions, handed out in a shuffled order from a pool
/// with a few spare pages.
struct Paging {
    tables: Vec<Vec<u32>>,
    pool: usize,
}

impl Paging {
    fn new(rng: &mut Rng, lens: &[usize], page_size: usize) -> Paging {
        let needed: Vec<usize> = lens.iter().map(|l| l.div_ceil(page_size)).collect();
        let pool = needed.iter().sum::<usize>() + 3;
        let mut pages: Vec<u32> = (0..pool as u32).collect();
        rng.shuffle(&mut pages);
        let mut rest = pages.as_slice();
        let tables = needed
            .iter()
            .map(|&n| {
                let (table, tail) = rest.split_at(n);
                rest = tail;
                table.to_vec()
            })
            .collect();
        Paging { tables, pool }
    }
}

/// A step before its output rows are chosen: per probe, (tokens, cols) expected values
/// and powers.
struct Planned {
    token_ids: Vec<u32>,
    positions: Vec<u32>,
    token_seq: Vec<u32>,
    expected: Vec<Vec<f64>>,
    power: Option<Vec<Vec<f64>>>,
}

impl Planned {
    fn new(n_probes: usize) -> Planned {
        Planned {
            token_ids: Vec::new(),
            positions: Vec::new(),
            token_seq: Vec::new(),
            expected: vec![Vec::new(); n_probes],
            power: None,
        }
    }
}

/// Expected values whose power is their square.
fn plain(values: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
    let power = values.iter().map(|v| v * v).collect();
    (values, power)
}

/// The steps of an op that works row by row: the first (ids tokens..2·tokens) poisons
/// the arena, the second (ids 0..tokens) must overwrite it; both are checked. The tokens
/// are split over two sequences at random start positions up to `max_start` (for RoPE).
/// `reference(ids, positions)` gives each probe's (tokens, cols) values and powers.
fn rowwise(
    b: Builder,
    rng: &mut Rng,
    tokens: usize,
    max_start: usize,
    probes: &[(ValueId, usize)],
    reference: impl Fn(&[usize], &[u32]) -> Vec<(Vec<f64>, Vec<f64>)>,
) -> Built {
    let lens: Vec<usize> = [tokens.div_ceil(2), tokens / 2]
        .into_iter()
        .filter(|&l| l > 0)
        .collect();
    let padded: Vec<usize> = lens.iter().map(|l| l + max_start).collect();
    let paging = Paging::new(rng, &padded, 16);
    let layout = KvLayout::new(1, 1, 32)
        .and_then(|l| l.with_dtype(KvDtype::F16))
        .expect("a valid KV layout");
    let steps = [tokens, 0]
        .into_iter()
        .map(|base| {
            let mut step = Planned::new(probes.len());
            for (seq, &len) in lens.iter().enumerate() {
                let start = rng.below(max_start + 1);
                step.positions
                    .extend((start..start + len).map(|p| p as u32));
                step.token_seq.extend(std::iter::repeat_n(seq as u32, len));
            }
            let ids: Vec<usize> = (base..base + tokens).collect();
            step.token_ids = ids.iter().map(|&i| i as u32).collect();
            let (expected, power) = reference(&ids, &step.positions).into_iter().unzip();
            step.expected = expected;
            step.power = Some(power);
            step
        })
        .collect();
    finish(b, rng, probes, layout, paging, steps)
}

/// Route each probe through SelectRows to the graph's output and choose every step's
/// output rows: a shuffled subset in the first step, every row after.
fn finish(
    mut b: Builder,
    rng: &mut Rng,
    probes: &[(ValueId, usize)],
    kv_layout: KvLayout,
    paging: Paging,
    planned: Vec<Planned>,
) -> Built {
    let mut out = Vec::new();
    for &(value, cols) in probes {
        let selected = b.graph.push(
            Op::SelectRows,
            &[value],
            &[ValueType::F32 {
                rows: Rows::Outputs,
                cols,
            }],
            None,
        )[0];
        out.push(Probe {
            value: selected,
            cols,
            expected: Vec::new(),
            power: Vec::new(),
        });
    }
    let mut steps = Vec::new();
    for (i, p) in planned.into_iter().enumerate() {
        let n = p.token_ids.len();
        let mut rows: Vec<u32> = (0..n as u32).collect();
        if i == 0 {
            rng.shuffle(&mut rows);
            rows.truncate(n.div_ceil(2));
        }
        let power = p
            .power
            .unwrap_or_else(|| p.expected.iter().map(|e| plain(e.clone()).1).collect());
        for (probe, (expected, power)) in out.iter_mut().zip(p.expected.iter().zip(&power)) {
            let pick = |all: &[f64]| {
                rows.iter()
                    .flat_map(|&r| &all[r as usize * probe.cols..][..probe.cols])
                    .copied()
                    .collect()
            };
            probe.expected.push(pick(expected));
            probe.power.push(pick(power));
        }
        steps.push(StepData {
            token_ids: p.token_ids,
            positions: p.positions,
            token_seq: p.token_seq,
            block_tables: paging.tables.clone(),
            output_rows: rows,
        });
    }
    let max_tokens = steps
        .iter()
        .map(|s| s.token_ids.len())
        .max()
        .expect("a case has steps");
    Built {
        graph: b.graph,
        blob: Arc::new(b.blob),
        weights: b.weights,
        kv_layout,
        kv_pages: paging.pool,
        max_tokens,
        max_outputs: max_tokens,
        steps,
        probes: out,
    }
}
