//! One decode step of a random-weight SmolLM2-135M (Q4_1, the reference quant), one token
//! at context 64, through `Compiled::step`: every launch of the model. `ctx64` rotates
//! through copies of the model that together exceed the last-level cache; `ctx64_hot`
//! runs one copy, which stays in a cache as large as the model (what `kiln run` sees on
//! such a machine). Throughput: weight and KV bytes read.

use std::cell::OnceCell;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_bench::decode::{self, Decoder};
use kiln_engine::model::Model;
use kiln_ir::DType;
use kiln_tools::synth::Shape;

const CTX: usize = 64;
const SEED: u64 = 1;

fn decode_step(c: &mut Criterion) {
    if !decode::reference_model().exists() {
        println!(
            "skipping decode_step: {} is absent (scripts/fetch-model.sh)",
            decode::reference_model().display()
        );
        return;
    }
    let shape = Shape::named("smollm2-135m").expect("a named shape");
    let quant = DType::Q4_1;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kiln-bench");
    let model_id = format!("{}_{}", shape.name, quant.name());
    let path = OnceCell::new();
    let path = || {
        path.get_or_init(|| {
            decode::synth_model(shape, quant, SEED, &dir)
                .unwrap_or_else(|e| panic!("synthesize {model_id}: {e}"))
        })
    };
    for (backend, make) in kiln_bench::backends() {
        let mut group = c.benchmark_group(backend);
        for hot in [false, true] {
            let id = format!(
                "decode_step/{model_id}/ctx{CTX}{}",
                if hot { "_hot" } else { "" }
            );
            let models: OnceCell<Vec<Model>> = OnceCell::new();
            let models = || {
                models.get_or_init(|| {
                    let file = std::fs::metadata(path()).map(|m| m.len()).unwrap_or(1);
                    let copies = if hot {
                        1
                    } else {
                        (kiln_bench::rotation_bytes() as u64).div_ceil(file).max(2) as usize
                    };
                    decode::load_copies(path(), copies).unwrap_or_else(|e| panic!("{id}: {e}"))
                })
            };
            let mut decoder: Option<Decoder<'_>> = None;
            let bytes = decode::step_bytes(&shape, quant, CTX);
            let flops = decode::step_flops(&shape, quant, CTX);
            group.throughput(Throughput::Bytes(bytes));
            group.bench_function(&id, |b| {
                let d = decoder.get_or_insert_with(|| {
                    Decoder::new(models(), make, CTX).unwrap_or_else(|e| panic!("{id}: {e}"))
                });
                b.iter_custom(|iters| d.time(iters).unwrap_or_else(|e| panic!("{id}: {e}")));
            });
            if let Some(d) = decoder {
                let copies = models().len();
                kiln_bench::report(
                    &format!("{backend}/{id}"),
                    bytes,
                    flops,
                    d.timed,
                    d.timed_steps,
                    &format!(
                        "{copies} cop{} of the model",
                        if copies == 1 { "y" } else { "ies" }
                    ),
                );
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = kiln_bench::config();
    targets = decode_step
}
criterion_main!(benches);
