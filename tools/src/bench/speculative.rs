//! Speculative decoding against plain decoding, side by side in one run: the same prompt
//! generated greedily both ways, repetitions interleaved so that both see the same load,
//! with the keep rate, tokens per verification step and the speed-up of decode tok/s.
//! The prompts are copy-heavy tasks, where prompt lookup has something to copy.

use kiln_engine::Error;
use kiln_engine::driver::{GenerateRequest, generate};
use kiln_engine::runner::Runner;
use kiln_engine::sampler::SamplerConfig;
use kiln_engine::speculative::{self, Drafter, SpecConfig, SpecStats};
use kiln_tokenizer::{ChatMessage, Tokenizer};

use super::Stat;

/// A task whose answer copies much of its prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyTask {
    pub name: &'static str,
    /// The user message (sent through the model's chat template).
    pub message: &'static str,
}

/// The built-in copy-heavy tasks.
pub const COPY_TASKS: [CopyTask; 2] = [
    CopyTask {
        name: "rename",
        message: "Rewrite this 40-line Python function, renaming the variable `total` to `running_sum`. Change nothing else.\n\n```python\ndef summarize(orders, currency=\"EUR\", rates=None):\n    \"\"\"Totals, count, average and largest amount of the orders that went through.\"\"\"\n    rates = rates or {}\n    total = 0\n    count = 0\n    largest = None\n    skipped = []\n    for order in orders:\n        if order.cancelled:\n            skipped.append(order.id)\n            continue\n        amount = order.quantity * order.price\n        if order.discount:\n            amount = amount * (1 - order.discount)\n        if order.currency != currency:\n            rate = rates.get(order.currency)\n            if rate is None:\n                skipped.append(order.id)\n                continue\n            amount = amount * rate\n        total = total + amount\n        count = count + 1\n        if largest is None or amount > largest:\n            largest = amount\n    if count == 0:\n        return {\"total\": 0, \"count\": 0, \"average\": 0, \"largest\": 0, \"skipped\": skipped}\n    average = total / count\n    return {\n        \"total\": round(total, 2),\n        \"count\": count,\n        \"average\": round(average, 2),\n        \"largest\": round(largest, 2),\n        \"skipped\": skipped,\n        \"currency\": currency,\n    }\n```",
    },
    CopyTask {
        name: "add-column",
        message: "Repeat this table, adding a column `in_stock` with the value `yes` on every row.\n\n| id | fruit | colour | price |\n|----|-------|--------|-------|\n| 1 | apple | red | 0.40 |\n| 2 | banana | yellow | 0.25 |\n| 3 | cherry | red | 0.10 |\n| 4 | grape | purple | 0.05 |\n| 5 | lemon | yellow | 0.30 |\n| 6 | lime | green | 0.35 |",
    },
];

/// One task measured both ways.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecResult {
    pub task: &'static str,
    pub method: &'static str,
    pub k_max: usize,
    pub prompt_tokens: usize,
    /// Tokens generated (each way).
    pub tokens: usize,
    /// Decode tok/s of plain decoding and of speculative decoding.
    pub plain: Stat,
    pub speculative: Stat,
    /// Over every timed speculative repetition.
    pub stats: SpecStats,
    /// Whether every speculative output equalled the plain one, token for token.
    pub identical: bool,
}

impl SpecResult {
    pub fn speedup(&self) -> f64 {
        self.speculative.mean / self.plain.mean
    }

    /// Tokens per second of the verification steps alone (drafting not counted): what
    /// speculation would give with free guesses, and its own overhead against plain.
    pub fn verify_tok_s(&self) -> f64 {
        self.stats.tokens as f64 / self.stats.verify_seconds.max(1e-9)
    }
}

/// `task` generated greedily for `n_gen` tokens (end of generation ignored) on `runner`,
/// plainly and with `drafter`, `reps` times each, alternating (one untimed warm-up of
/// each first). `runner`'s plan must take `config.step_outputs()` logits rows.
pub fn compare(
    runner: &mut dyn Runner,
    tokenizer: &Tokenizer,
    drafter: &mut dyn Drafter,
    config: &SpecConfig,
    task: &CopyTask,
    n_gen: usize,
    reps: usize,
) -> Result<SpecResult, Error> {
    let text = tokenizer.apply_chat_template(&[ChatMessage::new("user", task.message)], true)?;
    let req = GenerateRequest {
        prompt_ids: tokenizer.encode(&text, true, true),
        max_tokens: n_gen,
        sampler: SamplerConfig::greedy(),
        ignore_eos: true,
        logprobs: 0,
    };
    let (mut plain, mut spec) = (Vec::new(), Vec::new());
    let mut stats = SpecStats::default();
    let mut identical = true;
    for rep in 0..=reps {
        let want = generate(runner, tokenizer, &req, |_| true)?;
        let (got, s) = speculative::generate(runner, drafter, config, tokenizer, &req, |_| true)?;
        identical &= got.tokens == want.tokens;
        if rep > 0 {
            plain.push(want.decode_tok_s);
            spec.push(got.decode_tok_s);
            stats.add(&s);
        }
    }
    Ok(SpecResult {
        task: task.name,
        method: drafter.kind(),
        k_max: config.k_max,
        prompt_tokens: req.prompt_ids.len(),
        tokens: n_gen,
        plain: Stat::of(&plain),
        speculative: Stat::of(&spec),
        stats,
        identical,
    })
}
