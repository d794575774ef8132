//! Speculative decoding inside continuous batching: greedy answers equal each request run
//! alone whether it guesses by prompt lookup, by the server's draft model or not at all,
//! with speculating and plain sequences in the same steps, under page pressure, and every
//! page (the draft model's too) given back at the end.

use super::*;
use kiln_engine::compiled::Compiled;

/// Prompts whose continuations repeat what came before (prompt lookup keeps guesses), and
/// others (it mostly has none).
fn copy_prompts(model: &Model) -> Vec<Vec<u32>> {
    let tok = &model.tokenizer;
    let mut prompts = vec![
        tok.encode(
            "a, b, c, d, e, f, g, h, a, b, c, d, e, f, g, h, a, b, c, d,",
            true,
            true,
        ),
        tok.encode("1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3,", true, true),
        tok.encode(
            "def add(a, b):\n    return a + b\n\ndef add(a, b):\n    return",
            true,
            true,
        ),
    ];
    prompts.extend(super::prompts(model));
    prompts
}

/// Requests for `prompts`, every other one asking for prompt lookup.
fn submit(
    sched: &mut Scheduler<'_>,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    lookup: impl Fn(usize) -> Option<usize>,
) -> Vec<UnboundedReceiver<Event>> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (mut req, rx) = request(p, max_tokens);
            req.lookup = lookup(i);
            sched.submit(req);
            rx
        })
        .collect()
}

/// Steps until idle; returns what each request received and whether a step carried
/// speculating and plain decoding sequences together.
fn run_mixed(
    sched: &mut Scheduler<'_>,
    rxs: &mut [UnboundedReceiver<Event>],
) -> (Vec<Received>, bool) {
    let mut out: Vec<Received> = rxs.iter().map(|_| Received::default()).collect();
    let mut mixed = false;
    for _ in 0..10_000 {
        if sched.is_idle() {
            break;
        }
        let o = sched.step().unwrap();
        mixed |= o.speculating > 0 && o.sequences > o.speculating;
        for (rx, r) in rxs.iter_mut().zip(&mut out) {
            received(rx, r);
        }
    }
    assert!(sched.is_idle(), "the scheduler did not finish");
    (out, mixed)
}

#[test]
fn lookup_and_plain_requests_share_steps_and_answer_as_alone() {
    let Some(model) = model() else { return };
    let prompts = copy_prompts(model);
    let mut sched = spec_scheduler(model, 6, 64, None, 4);
    let mut rxs = submit(&mut sched, &prompts, 24, |i| (i % 2 == 0).then_some(2));
    let (got, mixed) = run_mixed(&mut sched, &mut rxs);
    assert_same_as_alone(model, &prompts, &got, 24);
    assert!(
        mixed,
        "speculating and plain sequences were never in one step"
    );
    let metrics = sched.metrics();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let (drafted, accepted) = (load(&metrics.spec_drafted), load(&metrics.spec_accepted));
    eprintln!("lookup in the scheduler: {accepted} of {drafted} guesses kept");
    assert!(
        accepted > 0 && accepted < drafted,
        "{accepted} of {drafted}"
    );
    assert_every_page_back(&mut sched);
}

#[test]
fn a_draft_model_guesses_for_requests_without_lookup() {
    let Some(model) = model() else { return };
    let prompts = copy_prompts(model);
    // The model drafting for itself: every guess is kept.
    let draft = Compiled::new(
        model,
        Box::new(CpuBackend::new()),
        CompileOptions {
            max_seqs: 6,
            max_step_tokens: 64,
            max_step_outputs: 6,
            ..CompileOptions::new(N_CTX)
        },
    )
    .unwrap();
    let mut sched = spec_scheduler(model, 6, 64, None, 3).with_draft(draft);
    // Every third request opts out (lookup 0), every third asks for lookup instead.
    let mut rxs = submit(&mut sched, &prompts, 20, |i| match i % 3 {
        0 => Some(0),
        1 => Some(3),
        _ => None,
    });
    let (got, mixed) = run_mixed(&mut sched, &mut rxs);
    assert_same_as_alone(model, &prompts, &got, 20);
    assert!(mixed);
    let metrics = sched.metrics();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert!(load(&metrics.spec_draft_steps) > 0, "the draft model ran");
    let (drafted, accepted) = (load(&metrics.spec_drafted), load(&metrics.spec_accepted));
    eprintln!("draft and lookup in the scheduler: {accepted} of {drafted} guesses kept");
    assert_eq!(sched.kv_stats().pages_in_use, 0);
    assert_eq!(sched.draft_kv_stats().map(|s| s.pages_in_use), Some(0));
    assert_eq!(sched.draft_kv_stats().map(|s| s.sequences), Some(0));
}

#[test]
fn speculation_under_page_pressure_still_answers_as_alone() {
    let Some(model) = model() else { return };
    let prompts = copy_prompts(model);
    // 12 pages: guesses are cut to the pages left, sequences preempted and recomputed.
    let mut sched = spec_scheduler(model, 4, 64, Some(12), 4);
    let mut rxs = submit(&mut sched, &prompts, 40, |_| Some(1));
    let (got, _) = run_mixed(&mut sched, &mut rxs);
    assert_same_as_alone(model, &prompts, &got, 40);
    assert_eq!(sched.kv_stats().pages_in_use, 0);
}

#[test]
fn sampled_speculation_runs_to_the_end() {
    let Some(model) = model() else { return };
    let prompts = copy_prompts(model);
    let mut sched = spec_scheduler(model, 4, 64, None, 4);
    let mut rxs: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (mut req, rx) = request(p, 16);
            req.lookup = Some(2);
            req.sampler = SamplerConfig {
                seed: 3,
                ..SamplerConfig::default()
            };
            sched.submit(req);
            rx
        })
        .collect();
    let (got, _) = run_mixed(&mut sched, &mut rxs);
    for r in got {
        assert_eq!(r.error, None);
        assert!(r.usage.unwrap().completion_tokens <= 16);
    }
    assert_eq!(sched.kv_stats().pages_in_use, 0);
}
