//! One builder per op family: each makes the small graph around the op, its random
//! weights and inputs, and the oracle's expected outputs for every step.

use kiln_ir::backend::NO_PAGE;
use kiln_ir::kv_layout::{KvDtype, KvLayout};
use kiln_ir::{AttentionParams, DType, Op, RopeMode, Rows, ValueId, ValueType, WeightId};

use super::build::{Builder, Paging, Planned, finish, plain, rowwise};
use super::cases::{Case, EPS, F32_LIMIT, GELU_F16_LIMIT, Metric, kv_limit, matmul_limit};
use super::reference::{self as oracle, gather};
use super::{Built, Rng};

pub(super) fn rmsnorm(tokens: usize, d: usize) -> Case {
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

/// Add, SwiGlu or GeGlu: two inputs from two tables.
pub(super) fn binary(
    name: &str,
    op: Op,
    tokens: usize,
    d: usize,
    f: fn(&[f64], &[f64]) -> Vec<f64>,
) -> Case {
    let shape = format!("a, b ({tokens}, {d})");
    let limit = if op == Op::GeGlu {
        GELU_F16_LIMIT
    } else {
        F32_LIMIT
    };
    Case::new(format!("{name}_t{tokens}_d{d}"), shape, limit, move |rng| {
        let mut b = Builder::new();
        let (x, xt) = b.input("a", 2 * tokens, d, 1.0, rng);
        let (y, yt) = b.input("b", 2 * tokens, d, 1.0, rng);
        let z = b.node(op.clone(), &[x, y], d);
        rowwise(b, rng, tokens, 0, &[(z, d)], move |ids, _| {
            vec![plain(f(&gather(&xt, d, ids), &gather(&yt, d, ids)))]
        })
    })
}

pub(super) fn add(tokens: usize, d: usize) -> Case {
    binary("add", Op::Add, tokens, d, oracle::add)
}

pub(super) fn swiglu(tokens: usize, d: usize) -> Case {
    binary("swiglu", Op::SwiGlu, tokens, d, oracle::swiglu)
}

pub(super) fn geglu(tokens: usize, d: usize) -> Case {
    binary("geglu", Op::GeGlu, tokens, d, oracle::geglu)
}

/// RoPE geometry of a case (head_dim comes from the case).
#[derive(Clone, Copy, Debug)]
pub struct RopeSpec {
    pub rope_dims: usize,
    pub theta: f32,
    pub freq_scale: f32,
    /// With a `rope_freqs` vector of random divisors in [1, 4).
    pub factors: bool,
    pub mode: RopeMode,
}

impl RopeSpec {
    /// Rotate the first `rope_dims` of each head, base `theta`, no scaling or factors.
    pub fn new(rope_dims: usize, theta: f32) -> RopeSpec {
        RopeSpec {
            rope_dims,
            theta,
            freq_scale: 1.0,
            factors: false,
            mode: RopeMode::Normal,
        }
    }

    /// NeoX pairs (x[i], x[i + rope_dims/2]), as Gemma rotates.
    pub fn neox(self) -> RopeSpec {
        RopeSpec {
            mode: RopeMode::Neox,
            ..self
        }
    }

    pub fn with_freq_scale(self, freq_scale: f32) -> RopeSpec {
        RopeSpec { freq_scale, ..self }
    }

    pub fn with_factors(self) -> RopeSpec {
        RopeSpec {
            factors: true,
            ..self
        }
    }
}

pub(super) fn rope(tokens: usize, n_heads: usize, head_dim: usize, spec: RopeSpec) -> Case {
    let partial = if spec.rope_dims < head_dim {
        "_partial"
    } else {
        ""
    };
    let factors = if spec.factors { "_factors" } else { "" };
    let neox = if spec.mode == RopeMode::Neox {
        "_neox"
    } else {
        ""
    };
    let name = format!("rope_h{head_dim}{neox}{partial}{factors}_t{tokens}");
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
pub(super) fn matmul(
    family: &str,
    dtypes: Vec<DType>,
    tokens: usize,
    k: usize,
    ns: Vec<usize>,
) -> Case {
    matmul_inputs(family, dtypes, tokens, k, ns, false)
}

/// A plain matmul whose inputs span a real model's range, past f16's
/// ([`Builder::input_outliers`]).
pub(super) fn matmul_outliers(dtype: DType, tokens: usize, k: usize, n: usize) -> Case {
    let mut case = matmul_inputs("matmul_outliers", vec![dtype], tokens, k, vec![n], true);
    case.shape = format!("{}, inputs of 1e-2 to 1e2, outliers to 2e5", case.shape);
    case
}

fn matmul_inputs(
    family: &str,
    dtypes: Vec<DType>,
    tokens: usize,
    k: usize,
    ns: Vec<usize>,
    outliers: bool,
) -> Case {
    // "q4_0" when every weight is Q4_0, "q4_1_q8_0_q4_0" for a mix.
    let mut label: Vec<&str> = dtypes.iter().map(|d| d.name()).collect();
    label.dedup();
    let label = if label.len() == 1 {
        label[0].to_string()
    } else {
        label.join("_")
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
            let (x, xt) = if outliers {
                b.input_outliers("x", 2 * tokens, k, rng)
            } else {
                b.input("x", 2 * tokens, k, 1.0, rng)
            };
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

/// The gated unit of a gate/up matmul case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    /// silu(gate) · up.
    Swi,
    /// gelu_tanh(gate) · up.
    Ge,
}

/// MatMulSwiGlu or MatMulGeGlu, or RmsNormMatMul{Swi,Ge}Glu with `norm`.
pub(super) fn matmul_glu(
    glu: Glu,
    norm: bool,
    dtype: DType,
    tokens: usize,
    k: usize,
    n: usize,
) -> Case {
    let unit = match glu {
        Glu::Swi => "swiglu",
        Glu::Ge => "geglu",
    };
    let family = if norm {
        format!("rmsnorm_matmul_{unit}")
    } else {
        format!("matmul_{unit}")
    };
    let shape = format!("x ({tokens}, {k}), gate and up ({n}, {k})");
    let limit = match glu {
        Glu::Swi => matmul_limit(dtype),
        Glu::Ge => matmul_limit(dtype).max(GELU_F16_LIMIT),
    };
    Case::new(
        format!("{family}_t{tokens}_{}", dtype.name()),
        shape,
        limit,
        move |rng| {
            let mut b = Builder::new();
            let (x, xt) = b.input("x", 2 * tokens, k, 1.0, rng);
            let norm_w = norm.then(|| b.norm("norm", k, rng));
            let (gate, g) = b.matrix("gate", dtype, n, k, rng);
            let (up, u) = b.matrix("up", dtype, n, k, rng);
            let op = match (&norm_w, glu) {
                (Some((norm, _)), Glu::Swi) => Op::RmsNormMatMulSwiGlu {
                    norm: *norm,
                    eps: EPS,
                    gate,
                    up,
                },
                (Some((norm, _)), Glu::Ge) => Op::RmsNormMatMulGeGlu {
                    norm: *norm,
                    eps: EPS,
                    gate,
                    up,
                },
                (None, Glu::Swi) => Op::MatMulSwiGlu { gate, up },
                (None, Glu::Ge) => Op::MatMulGeGlu { gate, up },
            };
            let y = b.node(op, &[x], n);
            rowwise(b, rng, tokens, 0, &[(y, n)], move |ids, _| {
                let mut x = gather(&xt, k, ids);
                if let Some((_, w)) = &norm_w {
                    x = oracle::rmsnorm(&x, w, EPS);
                }
                let (gate, up) = (oracle::matmul(&x, &g, k), oracle::matmul(&x, &u, k));
                vec![plain(match glu {
                    Glu::Swi => oracle::swiglu(&gate, &up),
                    Glu::Ge => oracle::geglu(&gate, &up),
                })]
            })
        },
    )
}

pub(super) fn matmul_add(dtype: DType, tokens: usize, k: usize, n: usize) -> Case {
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
    /// Gemma's attention: a sliding window, a score scale other than 1/√head_dim, QK-norm
    /// (QkNormRopeKvWrite; with `rope`), K/V in slot 1 of KV group 1 of two.
    pub gemma: Option<GemmaAttention>,
}

/// What Gemma's layers add to attention.
#[derive(Clone, Copy, Debug, Default)]
pub struct GemmaAttention {
    pub window: Option<usize>,
    pub scale: Option<f32>,
    pub qk_norm: bool,
    /// Slot 1 of group 1 of a layout of two groups of two layers; the step's tables hold
    /// NO_PAGE where no query of the step reads.
    pub grouped: bool,
}

impl AttentionSpec {
    /// A plain attention case (no RoPE, no Gemma).
    pub fn plain(
        head_dim: usize,
        n_heads: usize,
        n_kv_heads: usize,
        kv: KvDtype,
        page_size: usize,
        seqs: &[(usize, usize)],
    ) -> AttentionSpec {
        AttentionSpec {
            head_dim,
            n_heads,
            n_kv_heads,
            kv,
            page_size,
            seqs: seqs.to_vec(),
            rope: None,
            check_q: false,
            gemma: None,
        }
    }
}

pub fn attention_case(spec: AttentionSpec) -> Case {
    let g = spec.gemma.unwrap_or_default();
    let family = match (spec.rope.is_some(), spec.check_q, g.qk_norm) {
        (false, _, _) => "attention",
        (true, false, false) => "rope_kv_write_attention",
        (true, true, false) => "rope_kv_write_q",
        (true, false, true) => "qk_norm_rope_kv_write_attention",
        (true, true, true) => "qk_norm_rope_kv_write_q",
    };
    let group = spec.n_heads / spec.n_kv_heads;
    let mut variant = String::new();
    if let Some(w) = g.window {
        variant += &format!("_w{w}");
    }
    if g.scale.is_some() {
        variant += "_scaled";
    }
    if g.grouped {
        variant += "_group1";
    }
    if spec.rope.is_some_and(|r| r.mode == RopeMode::Neox) {
        variant += "_neox";
    }
    let name = format!(
        "{family}_h{}_gqa{group}_{}_p{}{variant}",
        spec.head_dim, spec.kv, spec.page_size
    );
    let limit = if spec.check_q {
        F32_LIMIT
    } else {
        kv_limit(spec.kv)
    };
    let shape = format!(
        "{} heads over {} KV heads of {}, {} KV, pages of {}, (context, last step) {:?}{}{}",
        spec.n_heads,
        spec.n_kv_heads,
        spec.head_dim,
        spec.kv,
        spec.page_size,
        spec.seqs,
        spec.rope.map_or(String::new(), |r| format!(", {r:?}")),
        spec.gemma.map_or(String::new(), |g| format!(", {g:?}"))
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
    // q of twice k's amplitude: scores of standard deviation about 1, a softmax neither
    // flat nor one-hot.
    let (q, qt) = b.input("q", 2 * total, q_dim, 2.0, rng);
    let (k, kt) = b.input("k", 2 * total, kv_dim, 1.0, rng);
    let (v, vt) = b.input("v", 2 * total, kv_dim, 1.0, rng);
    let g = s.gemma.unwrap_or_default();
    let (kv_group, kv_slot, n_groups) = if g.grouped { (1, 1, 2) } else { (0, 0, 1) };
    let how = oracle::Attend {
        scale: g.scale.map_or(oracle::Attend::causal(hd).scale, f64::from),
        window: g.window,
    };
    let attention = AttentionParams {
        scale: g.scale.unwrap_or(AttentionParams::default_scale(hd)),
        window: g.window,
        kv_group,
        kv_slot,
        ..AttentionParams::new(0, s.n_heads, s.n_kv_heads, hd)
    };
    let rope = s.rope.map(|spec| b.rope(hd, spec, rng));
    let norms = (g.qk_norm && rope.is_some())
        .then(|| (b.norm("q_norm", hd, rng), b.norm("k_norm", hd, rng)));
    let q_in = match (&rope, &norms) {
        (Some((rope, _)), Some(((q_norm, _), (k_norm, _)))) => b.node(
            Op::QkNormRopeKvWrite {
                q_norm: *q_norm,
                k_norm: *k_norm,
                eps: EPS,
                rope: *rope,
                attention,
            },
            &[q, k, v],
            q_dim,
        ),
        (Some((rope, _)), None) => b.node(
            Op::RopeKvWrite {
                rope: *rope,
                attention,
            },
            &[q, k, v],
            q_dim,
        ),
        (None, _) => {
            b.graph.push(Op::KvWrite { attention }, &[k, v], &[], None);
            q
        }
    };
    let out = b.node(Op::Attention { attention }, &[q_in], q_dim);
    let probe = if s.check_q { q_in } else { out };
    let layout = KvLayout::new(n_groups, s.n_kv_heads, hd)
        .and_then(|l| l.with_kv_page_size(s.page_size))
        .and_then(|l| l.with_dtype(s.kv))
        .and_then(|l| l.with_groups(n_groups))
        .expect("a valid KV layout");
    // A table per (group, sequence), group-major.
    let lens_per_group: Vec<usize> = (0..n_groups).flat_map(|_| lens.clone()).collect();
    let paging = Paging::new(rng, &lens_per_group, s.page_size);

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
                if let Some(((_, qn), (_, kn))) = &norms {
                    // QK-norm: rows of one head each.
                    qs = oracle::rmsnorm(&qs, qn, EPS);
                    ks = oracle::rmsnorm(&ks, kn, EPS);
                }
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
                        (s.n_heads, s.n_kv_heads, hd),
                        how,
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
    let mut built = finish(b, rng, &[(probe, q_dim)], layout, paging, steps);
    if let Some(window) = g.window {
        release_behind_window(&mut built, kv_group, window, s.page_size);
    }
    built
}

/// What a KV manager hands a window layer: in each step, the pages of a sequence that no
/// query of the step reads (before the first position its first token's window reaches)
/// are NO_PAGE in the layer's group, so a kernel that reads them fails the step check or
/// the comparison.
fn release_behind_window(built: &mut Built, group: usize, window: usize, page_size: usize) {
    for step in &mut built.steps {
        let n_seqs = step.block_tables.len() / built.kv_layout.n_groups();
        for seq in 0..n_seqs {
            let first_pos = step
                .positions
                .iter()
                .zip(&step.token_seq)
                .filter(|&(_, &s)| s as usize == seq)
                .map(|(&p, _)| p as usize)
                .min();
            let Some(first_pos) = first_pos else { continue };
            let keep = (first_pos + 1).saturating_sub(window) / page_size;
            for entry in &mut step.block_tables[group * n_seqs + seq][..keep] {
                *entry = NO_PAGE;
            }
        }
    }
}
