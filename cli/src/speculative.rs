//! The speculative-decoding flags `kiln run` and `kiln bench` share (`--lookup`,
//! `--draft`, `--draft-n`, `--draft-backend`), the drafter they build and the JSON of what
//! speculation did.

use std::path::PathBuf;

use kiln_engine::Error;
use kiln_engine::model::Model;
use kiln_engine::speculative::{
    DraftModel, Drafter, PromptLookup, SpecConfig, SpecStats, check_vocabulary,
};
use serde_json::json;

use crate::args::DeviceArgs;
use crate::common::{BackendArg, backend_help, load_model, parse_backend, runner};

#[derive(clap::Args, Debug, Clone)]
pub struct SpecArgs {
    /// Speculative decoding by prompt lookup: guess the tokens that followed the last N
    /// tokens where they occur earlier in the prompt or output (no second model)
    #[arg(long, value_name = "N")]
    pub lookup: Option<usize>,
    /// Speculative decoding with a draft model: any GGUF with the same vocabulary
    #[arg(long, value_name = "MODEL", conflicts_with = "lookup")]
    pub draft: Option<PathBuf>,
    /// Guesses verified per step at most (fewer while they keep failing) [default: 16 with
    /// --lookup, 4 with --draft]
    #[arg(long, value_name = "K")]
    pub draft_n: Option<usize>,
    /// Always ask for --draft-n guesses, rather than as many as pay (fewer while they
    /// fail, none while they cost more than they save)
    #[arg(long)]
    pub draft_fixed: bool,
    /// Backend of the draft model [default: the target's]
    #[arg(long, value_parser = parse_backend, help = backend_help())]
    pub draft_backend: Option<BackendArg>,
}

impl SpecArgs {
    /// The configuration, or None without `--lookup` and `--draft`.
    pub fn config(&self) -> Result<Option<SpecConfig>, Error> {
        let default_k = match (&self.lookup, &self.draft) {
            (Some(_), _) => SpecConfig::LOOKUP_K_MAX,
            (None, Some(_)) => SpecConfig::DRAFT_K_MAX,
            (None, None)
                if self.draft_n.is_some() || self.draft_backend.is_some() || self.draft_fixed =>
            {
                return Err(Error::Invalid(
                    "--draft-n, --draft-fixed and --draft-backend need --lookup N or --draft MODEL"
                        .into(),
                ));
            }
            (None, None) => return Ok(None),
        };
        let k_max = self.draft_n.unwrap_or(default_k);
        if !(1..=64).contains(&k_max) {
            return Err(Error::Invalid(format!(
                "--draft-n {k_max}: between 1 and 64 guesses per step"
            )));
        }
        Ok(Some(SpecConfig {
            adaptive: !self.draft_fixed,
            ..SpecConfig::new(k_max)
        }))
    }

    /// The draft model, loaded and checked against `target`'s vocabulary.
    pub fn load_draft(&self, target: &Model) -> Result<Option<Model>, Error> {
        let Some(path) = &self.draft else {
            return Ok(None);
        };
        let draft = load_model(path)?;
        check_vocabulary(target, &draft)?;
        Ok(Some(draft))
    }

    /// The drafter: prompt lookup, or `draft` on its backend (the target's `device` unless
    /// `--draft-backend` says otherwise; no budgets) with room for `n_ctx` positions.
    pub fn drafter<'m>(
        &self,
        draft: Option<&'m Model>,
        device: &DeviceArgs,
        n_ctx: usize,
    ) -> Result<Option<Box<dyn Drafter + 'm>>, Error> {
        if let Some(n) = self.lookup {
            return Ok(Some(Box::new(PromptLookup::new(n)?)));
        }
        let Some(model) = draft else {
            return Ok(None);
        };
        let device = DeviceArgs {
            backend: self.draft_backend.or(device.backend),
            kv: device.kv,
            kv_budget: None,
            mem_budget: None,
        };
        let n_ctx = n_ctx.min(model.config.context_length);
        let runner = runner(model, &device, n_ctx, 1)?;
        Ok(Some(Box::new(DraftModel::new(runner))))
    }

    /// What reports call the method: `lookup`, or `draft`.
    pub fn method(&self) -> &'static str {
        if self.lookup.is_some() {
            "lookup"
        } else {
            "draft"
        }
    }
}

/// What speculation did, as `--json` reports it.
pub fn stats_json(args: &SpecArgs, config: &SpecConfig, stats: &SpecStats) -> serde_json::Value {
    json!({
        "method": args.method(),
        "lookup_ngram": args.lookup,
        "draft_model": args.draft.as_ref().map(|p| p.display().to_string()),
        "k_max": config.k_max,
        "adaptive": config.adaptive,
        "steps": stats.steps,
        "verify_steps": stats.verify_steps,
        "drafted": stats.drafted,
        "accepted": stats.accepted,
        "acceptance_rate": stats.acceptance_rate(),
        "tokens_per_step": stats.tokens_per_step(),
        "draft_seconds": stats.draft_seconds,
        "verify_seconds": stats.verify_seconds,
    })
}

/// One line for stderr.
pub fn stats_line(args: &SpecArgs, stats: &SpecStats) -> String {
    format!(
        "speculative ({}): {} of {} guesses kept ({:.1}%), {:.2} tokens per step over {} steps",
        args.method(),
        stats.accepted,
        stats.drafted,
        100.0 * stats.acceptance_rate(),
        stats.tokens_per_step(),
        stats.steps
    )
}
