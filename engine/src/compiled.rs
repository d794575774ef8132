//! Running a model as a compiled plan on a backend: graph → fusion passes → plan → the
//! backend executes it each step, with the KV cache in pages the [`KvManager`] hands out.
//! Steps may carry several sequences (batched decode, chunked prefill).

use kiln_ir::backend::{Backend, Candidate, NO_PAGE, Step};
use kiln_ir::kv_groups::KvGroups;
use kiln_ir::kv_layout::{KvDtype, KvLayout};
use kiln_ir::{Plan, lower, passes};

use crate::Error;
use crate::memory::{self, KvRequest, MemoryPlan};
use crate::model::{Model, model_graph};
use crate::runner::{LogitsFor, Runner};
use kiln_kv::{KvManager, SeqId};

/// How a compiled runner is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    pub kv_dtype: KvDtype,
    /// Positions one sequence may hold.
    pub n_ctx: usize,
    /// Sequences that may be alive together (KV pages are sized for all of them).
    pub max_seqs: usize,
    /// Most tokens in one step (longer prompts are cut into steps of this size).
    pub max_step_tokens: usize,
    /// Most logits rows in one step.
    pub max_step_outputs: usize,
    /// Run the fusion passes (off only to prove them against the unfused graph).
    pub fuse: bool,
    /// Bytes the KV page pool may take; None sizes it for n_ctx × max_seqs positions.
    pub kv_budget_bytes: Option<usize>,
    /// Bytes the engine may allocate in all (arena, KV pages, backend and host buffers;
    /// mapped weights excluded): the KV pool takes what is left, a step shrinks when even
    /// one page does not fit, and a model that cannot fit is refused before any large
    /// allocation. See [`crate::memory`].
    pub mem_budget_bytes: Option<usize>,
}

impl CompileOptions {
    pub fn new(n_ctx: usize) -> CompileOptions {
        CompileOptions {
            kv_dtype: KvDtype::F8E4M3,
            n_ctx,
            max_seqs: 1,
            max_step_tokens: 512,
            max_step_outputs: 32,
            fuse: true,
            kv_budget_bytes: None,
            mem_budget_bytes: None,
        }
    }
}

/// One sequence's part of a step.
#[derive(Clone, Copy, Debug)]
pub struct BatchEntry<'a> {
    pub seq: SeqId,
    pub tokens: &'a [u32],
    /// Return logits for the tokens of this entry from this index on (None: no logits).
    pub logits_from: Option<usize>,
}

impl<'a> BatchEntry<'a> {
    /// An entry wanting the logits of its last token (generation).
    pub fn last(seq: SeqId, tokens: &'a [u32]) -> BatchEntry<'a> {
        BatchEntry {
            seq,
            tokens,
            logits_from: Some(tokens.len().saturating_sub(1)),
        }
    }

    fn n_outputs(&self) -> usize {
        self.logits_from
            .map_or(0, |from| self.tokens.len().saturating_sub(from))
    }
}

/// A model compiled for one backend.
pub struct Compiled<'m> {
    model: &'m Model,
    backend: Box<dyn Backend>,
    plan: Plan,
    kv: KvManager,
    options: CompileOptions,
    memory: MemoryPlan,
    /// The sequence used through the single-sequence [`Runner`] interface.
    runner_seq: Option<SeqId>,
}

impl std::fmt::Debug for Compiled<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("backend", &self.backend.name())
            .field("launches", &self.plan.launches.len())
            .finish()
    }
}

/// Compile the model's graph for `backend` (fused unless `options.fuse` is false).
pub fn compile_plan(
    model: &Model,
    backend: &dyn Backend,
    options: &CompileOptions,
) -> Result<Plan, Error> {
    let mut graph = model_graph(model)?;
    if options.fuse {
        // Passes never change the weight table, so support is asked against the original.
        let unfused = graph.clone();
        passes::fuse(&mut graph, &|op| backend.supports(op, &unfused))?;
    }
    let max_tokens = options.max_step_tokens.max(1);
    let max_outputs = options.max_step_outputs.clamp(1, max_tokens);
    let fused = graph.clone();
    Ok(lower(
        graph,
        &|op| backend.supports(op, &fused),
        max_tokens,
        max_outputs,
    )?)
}

/// The KV pages `options` ask for: room for `n_ctx` positions of each of `max_seqs`
/// sequences (window groups only what their window reaches), or what `kv_budget_bytes`
/// holds; at least one page per sequence and group. A memory budget may then give fewer
/// ([`memory::fit`]).
pub fn kv_request(
    groups: &KvGroups,
    layout: &KvLayout,
    options: &CompileOptions,
) -> Result<KvRequest, Error> {
    let max_seqs = options.max_seqs.max(1);
    let wanted_pages = match options.kv_budget_bytes {
        Some(budget) => match layout.pages_for_budget(budget) {
            0 => {
                return Err(Error::Invalid(format!(
                    "a KV budget of {budget} bytes holds no page ({} bytes each)",
                    layout.page_bytes()
                )));
            }
            pages => pages,
        },
        None => {
            let step = options.max_step_tokens.clamp(1, options.n_ctx.max(1));
            groups.pages_per_sequence(layout.kv_page_size(), options.n_ctx, step) * max_seqs
        }
    };
    Ok(KvRequest {
        wanted_pages,
        min_pages: max_seqs * groups.n_groups(),
    })
}

impl<'m> Compiled<'m> {
    pub fn new(
        model: &'m Model,
        mut backend: Box<dyn Backend>,
        options: CompileOptions,
    ) -> Result<Compiled<'m>, Error> {
        let c = &model.config;
        let groups = c.kv_groups();
        let layout = c
            .kv_layout(options.kv_dtype)
            .map_err(kiln_kv::KvError::from)?;
        let request = kv_request(&groups, &layout, &options)?;
        // Size everything before allocating anything: under a budget that does not fit,
        // halve the step (a smaller arena) until it does or nothing smaller is left.
        let mut options = options;
        let (plan, memory) = loop {
            let plan = compile_plan(model, backend.as_ref(), &options)?;
            let sized = MemoryPlan {
                weights_mapped_bytes: memory::weight_bytes(&plan),
                arena_bytes: plan.arena_bytes,
                backend_bytes: backend.load_bytes(&plan),
                host_bytes: memory::host_bytes(plan.max_outputs, c.vocab_size),
                kv_page_bytes: memory::kv_page_cost(&layout),
                kv_pages: 0,
                max_step_tokens: plan.max_tokens,
                budget_bytes: options.mem_budget_bytes,
            };
            match memory::fit(sized, request) {
                Ok(memory) => {
                    let device = backend.properties();
                    memory::check_device(&memory, &device.name, device.memory_bytes)?;
                    break (plan, memory);
                }
                Err(err) => {
                    let floor = options.max_step_outputs.min(plan.max_tokens).max(1);
                    match memory::smaller_step(plan.max_tokens, floor) {
                        Some(step) => options.max_step_tokens = step,
                        None => return Err(err.into()),
                    }
                }
            }
        };
        backend.load_plan(&plan, model, &layout, memory.kv_pages)?;
        Ok(Compiled {
            model,
            backend,
            plan,
            kv: KvManager::new(layout, memory.kv_pages)?.with_windows(groups.windows())?,
            options,
            memory,
            runner_seq: None,
        })
    }

    /// What this compiled model allocates, by purpose (and the budget it was sized for).
    pub fn memory(&self) -> &MemoryPlan {
        &self.memory
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn backend(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    pub fn kv(&mut self) -> &mut KvManager {
        &mut self.kv
    }

    /// Run one step over several sequences; returns the logits rows asked for, in entry
    /// order, (outputs, vocab). On error no sequence has grown.
    pub fn step(&mut self, batch: &[BatchEntry<'_>]) -> Result<Vec<f32>, Error> {
        let n_outputs = self.run_step(batch)?;
        let mut logits = vec![0.0f32; n_outputs * self.model.config.vocab_size]; // (outputs, vocab)
        self.backend.read_logits(&mut logits)?;
        Ok(logits)
    }

    /// [`Compiled::step`] for greedy decoding: the argmax token of each row asked for
    /// (`Backend::read_argmax`: on the device where the backend can, so only ids come
    /// back), in entry order.
    pub fn step_argmax(&mut self, batch: &[BatchEntry<'_>]) -> Result<Vec<u32>, Error> {
        let n_outputs = self.run_step(batch)?;
        let mut ids = vec![0u32; n_outputs]; // (outputs)
        self.backend
            .read_argmax(self.model.config.vocab_size, &mut ids)?;
        if ids.contains(&kiln_ir::backend::NON_FINITE_ROW) {
            return Err(Error::NonFiniteRow);
        }
        Ok(ids)
    }

    /// [`Compiled::step`] for sampling with a top-k filter: the `k` most likely tokens of
    /// each row asked for (`Backend::read_top_k`: on the device where the backend can, so
    /// only k candidates a row come back), (outputs, k) in entry order, each row ordered
    /// as [`kiln_ir::step::top_k`] orders it; a row of logits holding a NaN or +∞ comes
    /// back as [`Candidate::NON_FINITE`] (the sampler refuses it).
    pub fn step_top_k(
        &mut self,
        batch: &[BatchEntry<'_>],
        k: usize,
    ) -> Result<Vec<Candidate>, Error> {
        let vocab = self.model.config.vocab_size;
        if k == 0 || k > vocab {
            return Err(Error::Invalid(format!(
                "top-{k} of a vocabulary of {vocab}"
            )));
        }
        let n_outputs = self.run_step(batch)?;
        let mut cand = vec![Candidate::NON_FINITE; n_outputs * k]; // (outputs, k)
        self.backend.read_top_k(vocab, k, &mut cand)?;
        Ok(cand)
    }

    /// Run one step, leaving its logits on the backend; returns the rows asked for.
    fn run_step(&mut self, batch: &[BatchEntry<'_>]) -> Result<usize, Error> {
        let n_tokens: usize = batch.iter().map(|e| e.tokens.len()).sum();
        let n_outputs: usize = batch.iter().map(BatchEntry::n_outputs).sum();
        if n_tokens == 0 || n_tokens > self.plan.max_tokens || n_outputs > self.plan.max_outputs {
            return Err(Error::Invalid(format!(
                "a step of {n_tokens} tokens and {n_outputs} logits rows (the plan takes at most {} and {})",
                self.plan.max_tokens, self.plan.max_outputs
            )));
        }
        for e in batch {
            let needed = self.kv.len(e.seq)? + e.tokens.len();
            if needed > self.options.n_ctx {
                return Err(Error::ContextFull {
                    needed,
                    n_ctx: self.options.n_ctx,
                });
            }
        }
        // Reserve KV slots for every entry; undo them all if one cannot be had.
        let starts: Vec<usize> = batch
            .iter()
            .map(|e| self.kv.len(e.seq))
            .collect::<Result<_, _>>()?;
        let mut copies = Vec::new();
        for (i, e) in batch.iter().enumerate() {
            match self.kv.append(e.seq, e.tokens) {
                Ok(appended) => copies.extend(appended.copies),
                Err(err) => {
                    for (done, &start) in batch[..i].iter().zip(&starts) {
                        self.kv.truncate(done.seq, start)?;
                    }
                    return Err(err.into());
                }
            }
        }
        for copy in &copies {
            self.backend
                .copy_kv_page(copy.src.0, copy.dst.0, copy.n_tokens)?;
        }

        let mut token_ids = Vec::with_capacity(n_tokens); // (tokens)
        let mut positions = Vec::with_capacity(n_tokens); // (tokens)
        let mut token_seq = Vec::with_capacity(n_tokens); // (tokens)
        let mut output_rows = Vec::with_capacity(n_outputs); // (outputs)
        for (i, (e, &start)) in batch.iter().zip(&starts).enumerate() {
            let first_row = token_ids.len();
            token_ids.extend_from_slice(e.tokens);
            positions.extend((start..start + e.tokens.len()).map(|p| p as u32));
            token_seq.extend(std::iter::repeat_n(i as u32, e.tokens.len()));
            if let Some(from) = e.logits_from {
                output_rows.extend((first_row + from..token_ids.len()).map(|r| r as u32));
            }
        }
        // (groups × seqs, pages), group-major; released window pages are NO_PAGE.
        let mut tables: Vec<Vec<u32>> = Vec::with_capacity(self.kv.n_groups() * batch.len());
        for group in 0..self.kv.n_groups() {
            for e in batch {
                let table = self.kv.block_table(e.seq, group)?;
                tables.push(table.iter().map(|p| p.map_or(NO_PAGE, |p| p.0)).collect());
            }
        }
        let block_tables: Vec<&[u32]> = tables.iter().map(Vec::as_slice).collect();
        let step = Step {
            token_ids: &token_ids,
            positions: &positions,
            token_seq: &token_seq,
            block_tables: &block_tables,
            output_rows: &output_rows,
        };
        if let Err(err) = self.backend.execute(&step) {
            for (e, &start) in batch.iter().zip(&starts) {
                self.kv.truncate(e.seq, start)?;
            }
            return Err(err.into());
        }
        Ok(n_outputs)
    }

    /// What `step` gives (logits, or argmax ids) for every token of `tokens` appended to
    /// `seq` from index `first_out` on; steps are cut so each fits the plan.
    fn forward_seq<T>(
        &mut self,
        seq: SeqId,
        tokens: &[u32],
        first_out: usize,
        mut step: impl FnMut(&mut Self, &[BatchEntry<'_>]) -> Result<Vec<T>, Error>,
    ) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            // Tokens before first_out need no logits and go in steps of max_tokens; after
            // it, every token is an output row, so steps hold at most max_outputs tokens.
            let end = if i < first_out {
                (i + self.plan.max_tokens).min(first_out)
            } else {
                (i + self.plan.max_outputs).min(tokens.len())
            };
            let logits_from = (i >= first_out).then_some(0);
            out.extend(step(
                self,
                &[BatchEntry {
                    seq,
                    tokens: &tokens[i..end],
                    logits_from,
                }],
            )?);
            i = end;
        }
        Ok(out)
    }

    /// The runner's sequence, checked to take `tokens` (created on first use).
    fn runner_seq_for(&mut self, tokens: &[u32]) -> Result<SeqId, Error> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let vocab = self.model.config.vocab_size;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::TokenOutOfRange {
                id,
                vocab_size: vocab,
            });
        }
        let needed = self.position() + tokens.len();
        if needed > self.options.n_ctx {
            return Err(Error::ContextFull {
                needed,
                n_ctx: self.options.n_ctx,
            });
        }
        Ok(match self.runner_seq {
            Some(seq) => seq,
            None => *self.runner_seq.insert(self.kv.create_sequence()),
        })
    }
}

impl Runner for Compiled<'_> {
    fn name(&self) -> &'static str {
        self.backend.name()
    }

    fn memory(&self) -> Option<&MemoryPlan> {
        Some(&self.memory)
    }

    fn n_ctx(&self) -> usize {
        self.options.n_ctx
    }

    fn position(&self) -> usize {
        self.runner_seq
            .and_then(|s| self.kv.len(s).ok())
            .unwrap_or(0)
    }

    fn reset(&mut self) {
        if let Some(seq) = self.runner_seq.take() {
            // The sequence is known to the manager, so freeing it cannot fail.
            let _ = self.kv.free(seq);
        }
    }

    fn truncate(&mut self, len: usize) {
        if let Some(seq) = self.runner_seq
            && len < self.position()
            && self.kv.rollback(seq, len).is_err()
        {
            // Rolled back, not truncated: the tokens cut (a rejected guess, a chat turn
            // re-rendered otherwise) leave the prefix cache. The sequence is known and `len`
            // is shorter than it, so the only failure is a window group's pages for `len`
            // already given back: start over.
            self.reset();
        }
    }

    fn forward(&mut self, tokens: &[u32], logits: LogitsFor) -> Result<Vec<f32>, Error> {
        let seq = self.runner_seq_for(tokens)?;
        let first_out = match logits {
            LogitsFor::Last => tokens.len() - 1,
            LogitsFor::From(i) => i.min(tokens.len() - 1),
        };
        self.forward_seq(seq, tokens, first_out, Compiled::step)
    }

    fn forward_greedy(&mut self, tokens: &[u32]) -> Result<u32, Error> {
        let seq = self.runner_seq_for(tokens)?;
        let ids = self.forward_seq(seq, tokens, tokens.len() - 1, Compiled::step_argmax)?;
        ids.last().copied().ok_or(Error::EmptyPrompt)
    }

    fn forward_top_k(&mut self, tokens: &[u32], k: usize) -> Result<Vec<Candidate>, Error> {
        let seq = self.runner_seq_for(tokens)?;
        let k = k.min(self.model.config.vocab_size);
        let cand = self.forward_seq(seq, tokens, tokens.len() - 1, |c, batch| {
            c.step_top_k(batch, k)
        })?;
        Ok(cand[cand.len().saturating_sub(k)..].to_vec())
    }
}
