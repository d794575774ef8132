//! The cases of the kernel suites: what each op reads and computes, and how its
//! workload is built.
//!
//! Shapes are named by the model they come from: `576x1536` is a matrix taking 576
//! inputs to 1536 outputs (SmolLM2-135M's gate/up projection: 1536 rows of 576), and
//! `h9kv3x64` is 9 query heads over 3 KV heads of 64.

use kiln_ir::kv_layout::{KvDtype, KvLayout};
use kiln_ir::{AttentionParams, DType, Graph, Op, RopeParams};

use crate::graph::{Blob, GraphBuilder, Shared, load, random_matrix, shuffled_tables};
use crate::{Case, Constructor, Rng, StepData, Workload};

/// Bytes a step of a memory-bound case moves, about: long enough to hide the step's
/// fixed cost, short enough for many steps in a measurement.
const STEP_BYTES: usize = 32 << 20;
/// FLOPs a step of a compute-bound case does, about.
const STEP_FLOPS: u64 = 250_000_000;
/// Most plans (backend instances) one workload loads; past it, steps grow.
const MAX_INSTANCES: usize = 64;
/// Most ops (layers) in one plan.
const MAX_LAYERS: usize = 32;

/// A seed from the case's name: every case has its own reproducible data.
fn rng_for(id: &str) -> Rng {
    let hash = id.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    Rng::new(hash)
}

/// The KV layout of a geometry (every case's is valid).
fn kv_layout(n_layers: usize, n_kv_heads: usize, head_dim: usize, kv: KvDtype) -> KvLayout {
    KvLayout::new(n_layers, n_kv_heads, head_dim)
        .and_then(|l| l.with_dtype(kv))
        .unwrap_or_else(|e| panic!("KV layout ({n_layers}, {n_kv_heads}, {head_dim}): {e:?}"))
}

/// KV bytes of one token in one layer: K and V values, and scales for FP8.
fn token_layer_bytes(n_kv_heads: usize, head_dim: usize, kv: KvDtype) -> u64 {
    kv_layout(1, n_kv_heads, head_dim, kv).bytes_per_token() as u64
}

/// The layout plans without attention still need (one page, never touched).
fn no_kv() -> KvLayout {
    kv_layout(1, 1, 32, KvDtype::F16)
}

/// `tokens` tokens of one sequence at position 0 (ops that never look at positions).
fn plain_step(tokens: usize) -> StepData {
    StepData {
        token_ids: (0..tokens as u32).collect(),
        positions: vec![0; tokens],
        token_seq: vec![0; tokens],
        block_tables: vec![vec![0]],
        output_rows: vec![tokens as u32 - 1],
    }
}

/// Dequantizing matrix-vector product (matrix-matrix for many tokens): x (tokens, k) ·
/// Wᵀ with W (n, k) stored as `dtype`. Weights rotate through copies in memory.
#[derive(Clone, Copy, Debug)]
pub struct Matvec {
    pub dtype: DType,
    /// Inputs (columns of W).
    pub k: usize,
    /// Outputs (rows of W).
    pub n: usize,
    pub tokens: usize,
}

impl Matvec {
    fn plan_graph(&self, sets: std::ops::Range<usize>) -> Graph {
        let mut g = GraphBuilder::new(1);
        let x = g.embed("x", self.tokens, self.k);
        let mut last = x;
        for s in sets {
            let w = g.weight(&format!("w{s}"), self.dtype, self.n, self.k);
            last = g.node(Op::MatMul { weights: vec![w] }, &[x], self.n);
        }
        g.finish(last, self.n)
    }
}

impl Case for Matvec {
    fn id(&self) -> String {
        let op = if self.tokens > 8 { "matmul" } else { "matvec" };
        format!(
            "{op}_{}/{}x{}/t{}",
            self.dtype.name(),
            self.k,
            self.n,
            self.tokens
        )
    }

    /// The weight bytes (activations are small and stay in cache).
    fn bytes(&self) -> u64 {
        self.dtype
            .bytes_for((self.n * self.k) as u64)
            .expect("whole blocks")
    }

    fn flops(&self) -> u64 {
        (2 * self.n * self.k * self.tokens) as u64
    }

    fn graph(&self) -> Graph {
        self.plan_graph(0..1)
    }

    /// Copies of one random matrix, enough to fill `rotation`, spread over plans of
    /// `per_step` matmuls each (all reading the same x).
    fn build(
        &self,
        (backend, make): (&'static str, Constructor),
        rotation: usize,
    ) -> Result<Workload, String> {
        let id = self.id();
        let w_bytes = self.bytes() as usize;
        let sets = rotation.div_ceil(w_bytes).max(2);
        let cap = (STEP_BYTES / w_bytes)
            .min((STEP_FLOPS / self.flops()) as usize)
            .max(1);
        let per_step = cap.max(sets.div_ceil(MAX_INSTANCES)).min(sets);
        let n_instances = sets.div_ceil(per_step);
        let sets = n_instances * per_step;

        let mut rng = rng_for(&id);
        let w = random_matrix(self.dtype, self.n, self.k, &mut rng)?;
        let mut blob = Blob::with_capacity(sets * (w_bytes + 32) + self.tokens * self.k * 4 + 32);
        blob.push_values(
            "x",
            DType::F32,
            self.k,
            &rng.blocky(self.tokens * self.k, 1.0),
        )?;
        for s in 0..sets {
            blob.push(&format!("w{s}"), &w);
        }
        let shared = blob.share();
        let instances = (0..n_instances)
            .map(|i| {
                let graph = self.plan_graph(i * per_step..(i + 1) * per_step);
                load(make, graph, &shared, &no_kv(), 1, (self.tokens, 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Workload::new(
            format!("{backend}/{id}"),
            (self.bytes(), self.flops()),
            (sets * w_bytes) as u64,
            per_step,
            instances,
            vec![plain_step(self.tokens)],
            self.n,
        )
    }
}

/// RMSNorm of (tokens, d) activations, a chain of them in one plan (activations stay in
/// cache, as in a model: nothing rotates).
#[derive(Clone, Copy, Debug)]
pub struct RmsNorm {
    pub d: usize,
    pub tokens: usize,
}

const RMSNORM_CHAIN: usize = 32;

impl Case for RmsNorm {
    fn id(&self) -> String {
        format!("rmsnorm/d{}/t{}", self.d, self.tokens)
    }

    /// x read, y written, the weight read.
    fn bytes(&self) -> u64 {
        ((2 * self.tokens * self.d + self.d) * 4) as u64
    }

    /// x², the sum, the scaling and the weight: 4 a value.
    fn flops(&self) -> u64 {
        (4 * self.tokens * self.d) as u64
    }

    fn graph(&self) -> Graph {
        let mut g = GraphBuilder::new(1);
        let mut x = g.embed("x", self.tokens, self.d);
        for i in 0..RMSNORM_CHAIN {
            let weight = g.weight(&format!("norm{i}"), DType::F32, 1, self.d);
            x = g.node(Op::RmsNorm { weight, eps: 1e-5 }, &[x], self.d);
        }
        g.finish(x, self.d)
    }

    fn build(
        &self,
        (backend, make): (&'static str, Constructor),
        _rotation: usize,
    ) -> Result<Workload, String> {
        let id = self.id();
        let mut rng = rng_for(&id);
        let mut blob = Blob::default();
        blob.push_values(
            "x",
            DType::F32,
            self.d,
            &rng.blocky(self.tokens * self.d, 1.0),
        )?;
        for i in 0..RMSNORM_CHAIN {
            let w = rng.uniform_vec(self.d, 0.5, 1.5);
            blob.push_values(&format!("norm{i}"), DType::F32, self.d, &w)?;
        }
        let footprint = blob.len() as u64;
        let shared = blob.share();
        let backend_ = load(make, self.graph(), &shared, &no_kv(), 1, (self.tokens, 1))?;
        Workload::new(
            format!("{backend}/{id}"),
            (self.bytes(), self.flops()),
            footprint,
            RMSNORM_CHAIN,
            vec![backend_],
            vec![plain_step(self.tokens)],
            self.d,
        )
    }
}

/// RoPE of q and k and the KV page write (FP8 with scales, or F16), as a chain of layers
/// in one plan, for tokens at the end of a context of [`ROPE_CTX`], over several
/// sequences in turn.
#[derive(Clone, Copy, Debug)]
pub struct RopeKvWrite {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub kv: KvDtype,
    pub tokens: usize,
}

const ROPE_CTX: usize = 512;
const ROPE_LAYERS: usize = 16;
const ROPE_SEQS: usize = 4;

impl RopeKvWrite {
    fn attention(&self, layer: usize) -> AttentionParams {
        AttentionParams::new(layer, self.n_heads, self.n_kv_heads, self.head_dim)
    }
}

impl Case for RopeKvWrite {
    fn id(&self) -> String {
        format!(
            "rope_kv_write_{}/h{}kv{}x{}/t{}",
            self.kv.name(),
            self.n_heads,
            self.n_kv_heads,
            self.head_dim,
            self.tokens
        )
    }

    /// q read and written, k and v read, their KV slots written.
    fn bytes(&self) -> u64 {
        let (q, kv) = (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        );
        self.tokens as u64
            * ((8 * q + 8 * kv) as u64 + token_layer_bytes(self.n_kv_heads, self.head_dim, self.kv))
    }

    /// 3 a rotated value of q and k (a pair takes 4 multiplies and 2 adds); FP8 adds 2
    /// a stored value (the absolute maximum and the scaling).
    fn flops(&self) -> u64 {
        let (q, kv) = (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        );
        let store = if self.kv.has_scales() { 2 * 2 * kv } else { 0 };
        (self.tokens * (3 * (q + kv) + store)) as u64
    }

    fn graph(&self) -> Graph {
        let (q_dim, kv_dim) = (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        );
        let mut g = GraphBuilder::new(ROPE_LAYERS);
        let mut q = g.embed("q", self.tokens, q_dim);
        let k = g.embed("k", self.tokens, kv_dim);
        let v = g.embed("v", self.tokens, kv_dim);
        let rope = RopeParams {
            head_dim: self.head_dim,
            rope_dims: self.head_dim,
            theta: 10_000.0,
            freq_scale: 1.0,
            freq_factors: None,
            mode: kiln_ir::RopeMode::Normal,
        };
        for layer in 0..ROPE_LAYERS {
            let attention = self.attention(layer);
            q = g.node(Op::RopeKvWrite { rope, attention }, &[q, k, v], q_dim);
        }
        g.finish(q, q_dim)
    }

    fn build(
        &self,
        (backend, make): (&'static str, Constructor),
        _rotation: usize,
    ) -> Result<Workload, String> {
        let id = self.id();
        let (q_dim, kv_dim) = (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        );
        let mut rng = rng_for(&id);
        let mut blob = Blob::default();
        for (name, cols) in [("q", q_dim), ("k", kv_dim), ("v", kv_dim)] {
            blob.push_values(name, DType::F32, cols, &rng.blocky(self.tokens * cols, 1.0))?;
        }
        let shared = blob.share();
        let layout = kv_layout(ROPE_LAYERS, self.n_kv_heads, self.head_dim, self.kv);
        let pages = ROPE_CTX.div_ceil(layout.kv_page_size());
        let tables = shuffled_tables(&mut rng, ROPE_SEQS, pages);
        let backend_ = load(
            make,
            self.graph(),
            &shared,
            &layout,
            ROPE_SEQS * pages,
            (self.tokens, 1),
        )?;
        let steps = tables
            .into_iter()
            .map(|t| {
                StepData::sequence((0..self.tokens as u32).collect(), ROPE_CTX - self.tokens, t)
            })
            .collect();
        Workload::new(
            format!("{backend}/{id}"),
            (self.bytes(), self.flops()),
            (ROPE_SEQS * pages * layout.page_bytes()) as u64,
            ROPE_LAYERS,
            vec![backend_],
            steps,
            q_dim,
        )
    }
}

/// What an attention case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionMode {
    /// One new token at position ctx − 1 attending over the whole context.
    Decode { ctx: usize },
    /// `tokens` new tokens at positions 0.. attending causally (each over its prefix).
    Prefill { tokens: usize },
    /// Batched decode: a step of `seqs` sequences, one new token each at position
    /// ctx − 1 over its own context.
    Batch { ctx: usize, seqs: usize },
}

/// Paged attention (with the KV write of the step's own tokens, which the IR requires
/// before it), a chain of layers in one plan. Decode rotates through sequences whose KV
/// pages, filled with random keys and values, exceed the last-level cache.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub kv: KvDtype,
    pub mode: AttentionMode,
}

/// Tokens of the steps that fill the KV pages before a decode case.
const FILL_TOKENS: usize = 256;
/// KV pages the fill steps write; the others are copies of them.
const FILL_DISTINCT_PAGES: usize = 64;

impl Attention {
    /// (query, key) pairs of one op.
    fn pairs(&self) -> u64 {
        match self.mode {
            AttentionMode::Decode { ctx } => ctx as u64,
            AttentionMode::Prefill { tokens } => (tokens * (tokens + 1) / 2) as u64,
            AttentionMode::Batch { ctx, seqs } => (ctx * seqs) as u64,
        }
    }

    /// Layers of the plan: a step of about [`STEP_BYTES`] (decode) or [`STEP_FLOPS`]
    /// (prefill).
    fn layers(&self) -> usize {
        let by = match self.mode {
            AttentionMode::Decode { .. } | AttentionMode::Batch { .. } => {
                STEP_BYTES / self.bytes() as usize
            }
            AttentionMode::Prefill { .. } => (STEP_FLOPS / self.flops()) as usize,
        };
        by.clamp(1, MAX_LAYERS)
    }

    /// Rows of the q, k and v tables: the step's tokens index them.
    fn vocab(&self) -> usize {
        match self.mode {
            AttentionMode::Decode { .. } | AttentionMode::Batch { .. } => FILL_TOKENS,
            AttentionMode::Prefill { tokens } => tokens,
        }
    }

    fn plan_graph(&self, layers: usize) -> Graph {
        let (q_dim, kv_dim) = (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        );
        let vocab = self.vocab();
        let mut g = GraphBuilder::new(layers);
        let q = g.embed("q", vocab, q_dim);
        let k = g.embed("k", vocab, kv_dim);
        let v = g.embed("v", vocab, kv_dim);
        let mut out = q;
        for layer in 0..layers {
            let attention =
                AttentionParams::new(layer, self.n_heads, self.n_kv_heads, self.head_dim);
            g.effect(Op::KvWrite { attention }, &[k, v]);
            out = g.node(Op::Attention { attention }, &[q], q_dim);
        }
        g.finish(out, q_dim)
    }

    /// Random keys and values in every slot of every page. The first
    /// [`FILL_DISTINCT_PAGES`] are written by steps of one-page pseudo-sequences (each
    /// token at its slot's position, so a fill token attends over at most a page); the
    /// rest are copies of them (`copy_kv_page`), which is much faster than converting
    /// hundreds of MiB of keys and values.
    fn fill(
        &self,
        backend: &mut dyn kiln_ir::backend::Backend,
        n_pages: usize,
        page_size: usize,
        rng: &mut Rng,
    ) -> Result<(), String> {
        let distinct = n_pages.min(FILL_DISTINCT_PAGES);
        let pages: Vec<u32> = (0..distinct as u32).collect();
        for chunk in pages.chunks((FILL_TOKENS / page_size).max(1)) {
            let mut step = StepData {
                block_tables: chunk.iter().map(|&p| vec![p]).collect(),
                output_rows: vec![0],
                ..StepData::default()
            };
            for seq in 0..chunk.len() {
                for slot in 0..page_size {
                    step.token_ids.push(rng.below(FILL_TOKENS) as u32);
                    step.positions.push(slot as u32);
                    step.token_seq.push(seq as u32);
                }
            }
            step.execute(backend)?;
        }
        for page in distinct..n_pages {
            backend
                .copy_kv_page((page % distinct) as u32, page as u32, page_size)
                .map_err(|e| format!("copy_kv_page: {e}"))?;
        }
        backend.synchronize().map_err(|e| e.to_string())
    }
}

impl Case for Attention {
    fn id(&self) -> String {
        let shape = match self.mode {
            AttentionMode::Decode { ctx } => format!("ctx{ctx}"),
            AttentionMode::Prefill { tokens } => format!("prefill{tokens}"),
            AttentionMode::Batch { ctx, seqs } => format!("ctx{ctx}x{seqs}"),
        };
        format!(
            "attention_{}/h{}kv{}x{}/{shape}",
            self.kv.name(),
            self.n_heads,
            self.n_kv_heads,
            self.head_dim
        )
    }

    /// KV bytes read: every (query, key) pair reads the key's K and V (a query group
    /// shares them, so per KV head, not per query head).
    fn bytes(&self) -> u64 {
        self.pairs() * token_layer_bytes(self.n_kv_heads, self.head_dim, self.kv)
    }

    /// q·k and p·v: 4 a (query head, key, dimension); the softmax is not counted.
    fn flops(&self) -> u64 {
        4 * self.pairs() * (self.n_heads * self.head_dim) as u64
    }

    fn graph(&self) -> Graph {
        self.plan_graph(1)
    }

    fn build(
        &self,
        (backend, make): (&'static str, Constructor),
        rotation: usize,
    ) -> Result<Workload, String> {
        let id = self.id();
        let (q_dim, kv_dim) = (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        );
        let layers = self.layers();
        let layout = kv_layout(layers, self.n_kv_heads, self.head_dim, self.kv);
        let page_size = layout.kv_page_size();
        let (seqs, positions) = match self.mode {
            AttentionMode::Decode { ctx } => {
                let per_seq = ctx as u64 * layers as u64 * self.bytes() / self.pairs();
                ((rotation as u64).div_ceil(per_seq).max(2) as usize, ctx)
            }
            AttentionMode::Prefill { tokens } => (2, tokens),
            // Two steps' worth of sequences where one step's pages fit in the cache.
            AttentionMode::Batch { ctx, seqs } => {
                let per_step =
                    ctx as u64 * layers as u64 * self.bytes() / self.pairs() * seqs as u64;
                (
                    seqs * (rotation as u64).div_ceil(per_step).max(1) as usize,
                    ctx,
                )
            }
        };
        let pages = positions.div_ceil(page_size);

        let mut rng = rng_for(&id);
        let vocab = self.vocab();
        let mut blob = Blob::default();
        for (name, cols, amplitude) in [("q", q_dim, 2.0), ("k", kv_dim, 1.0), ("v", kv_dim, 1.0)] {
            blob.push_values(name, DType::F32, cols, &rng.blocky(vocab * cols, amplitude))?;
        }
        let shared: Shared = blob.share();
        let mut backend_ = load(
            make,
            self.plan_graph(layers),
            &shared,
            &layout,
            seqs * pages,
            (vocab, 1),
        )?;
        let tables = shuffled_tables(&mut rng, seqs, pages);
        let steps = match self.mode {
            AttentionMode::Decode { ctx } => {
                self.fill(backend_.as_mut(), seqs * pages, page_size, &mut rng)?;
                tables
                    .into_iter()
                    .map(|t| StepData::sequence(vec![rng.below(vocab) as u32], ctx - 1, t))
                    .collect()
            }
            AttentionMode::Prefill { tokens } => tables
                .into_iter()
                .map(|t| StepData::sequence((0..tokens as u32).collect(), 0, t))
                .collect(),
            AttentionMode::Batch {
                ctx,
                seqs: per_step,
            } => {
                self.fill(backend_.as_mut(), seqs * pages, page_size, &mut rng)?;
                tables
                    .chunks(per_step)
                    .map(|tables| StepData {
                        token_ids: (0..per_step).map(|_| rng.below(vocab) as u32).collect(),
                        positions: vec![ctx as u32 - 1; per_step],
                        token_seq: (0..per_step as u32).collect(),
                        block_tables: tables.to_vec(),
                        output_rows: vec![per_step as u32 - 1],
                    })
                    .collect()
            }
        };
        Workload::new(
            format!("{backend}/{id}"),
            (self.bytes(), self.flops()),
            (seqs * pages * layout.page_bytes()) as u64,
            layers,
            vec![backend_],
            steps,
            q_dim,
        )
    }
}
