//! The reference forward pass on the real model against llama.cpp's recorded outputs
//! (tests/data/reference/smollm2): greedy continuations, the top-10 distribution at the
//! last prompt position, and perplexity.

use kiln_engine::driver::{GenerateRequest, generate};
use kiln_engine::model::Model;
use kiln_engine::perplexity::perplexity;
use kiln_engine::reference::Reference;
use kiln_engine::runner::{LogitsFor, Runner};
use kiln_engine::sampler::{SamplerConfig, top_logprobs};
use kiln_tests::cpu::common_prefix;
use kiln_tests::{ids, reference_json, reference_model, reference_path};

#[test]
fn greedy_continuations_match_llama_cpp() {
    let path = reference_model();
    let model = Model::load(path).unwrap();
    let greedy = reference_json("greedy.json");
    let mut runner = Reference::new(&model, 512);
    for prompt in greedy["prompts"].as_array().unwrap() {
        let name = prompt["name"].as_str().unwrap();
        let prompt_ids = model
            .tokenizer
            .encode(prompt["prompt"].as_str().unwrap(), true, true);
        assert_eq!(prompt_ids, ids(&prompt["prompt_ids"]), "{name}: prompt ids");

        let request = GenerateRequest {
            prompt_ids,
            max_tokens: 48,
            sampler: SamplerConfig::greedy(),
            ignore_eos: true,
            logprobs: 0,
        };
        let ours = generate(&mut runner, &model.tokenizer, &request, |_| true)
            .unwrap()
            .tokens;
        assert_eq!(ours.len(), 48);
        let must = prompt["common_prefix_len_all_configs"].as_u64().unwrap() as usize;
        let mut best = 0;
        for (config, out) in prompt["configs"].as_object().unwrap() {
            let theirs = ids(&out["ids_48_pure_argmax"]);
            let prefix = common_prefix(&ours, &theirs);
            eprintln!(
                "{name}: common prefix with llama.cpp {config}: {prefix} of 48 (required {must})"
            );
            best = best.max(prefix);
        }
        assert!(
            best >= must,
            "{name}: only {best} tokens agree with llama.cpp, {must} required; ours {ours:?}"
        );
    }
}

#[test]
fn top10_at_the_last_prompt_position_matches_llama_cpp() {
    let path = reference_model();
    let model = Model::load(path).unwrap();
    let reference = reference_json("logits_top10.json");
    let mut runner = Reference::new(&model, 512);
    for prompt in reference["prompts"].as_array().unwrap() {
        let name = prompt["name"].as_str().unwrap();
        let prompt_ids = ids(&prompt["prompt_ids"]);
        runner.reset();
        let logits = runner.forward(&prompt_ids, LogitsFor::Last).unwrap();
        let ours = top_logprobs(&logits, 10);
        let theirs: Vec<(u32, f64)> = prompt["configs"]["fa_off_kv_f32"]["top10"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["id"].as_u64().unwrap() as u32,
                    t["logprob"].as_f64().unwrap(),
                )
            })
            .collect();
        let mut our_ids: Vec<u32> = ours.iter().map(|t| t.0).collect();
        let mut their_ids: Vec<u32> = theirs.iter().map(|t| t.0).collect();
        our_ids.sort_unstable();
        their_ids.sort_unstable();
        assert_eq!(our_ids, their_ids, "{name}: top-10 sets differ");
        let mut worst = 0.0f64;
        for (id, lp) in &theirs {
            let our_lp = ours.iter().find(|t| t.0 == *id).unwrap().1;
            worst = worst.max((f64::from(our_lp) - lp).abs());
        }
        eprintln!("{name}: top-10 equal as a set, max |logprob difference| {worst:.3}");
        assert!(worst < 1.5, "{name}: log-probabilities differ by {worst}");
    }
}

#[test]
fn perplexity_at_context_128_is_within_one_percent_of_llama_cpp() {
    let path = reference_model();
    let model = Model::load(path).unwrap();
    let reference = reference_json("perplexity.json");
    let run = &reference["runs"]["c128_default"];
    let text = std::fs::read_to_string(reference_path("gpl-3.txt")).unwrap();
    let mut runner = Reference::new(&model, 128);
    let ours = perplexity(&mut runner, &model.tokenizer, &text, 128, |_, _, _| {}).unwrap();
    let theirs = run["ppl"].as_f64().unwrap();
    assert_eq!(ours.chunks as u64, run["n_chunks"].as_u64().unwrap());
    assert_eq!(ours.tokens as u64, run["tokens_used"].as_u64().unwrap());
    assert_eq!(ours.scored as u64, run["tokens_scored"].as_u64().unwrap());
    let rel = (ours.ppl - theirs).abs() / theirs;
    eprintln!(
        "perplexity c=128: kiln ref {:.4}, llama.cpp {theirs:.4} ({:.2}% apart)",
        ours.ppl,
        rel * 100.0
    );
    assert!(rel < 0.01, "perplexity {} vs llama.cpp {theirs}", ours.ppl);
}
