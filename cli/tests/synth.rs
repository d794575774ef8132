//! `kiln synth`: random-weight models that kiln (and llama.cpp) load like real ones.
//!
//! The tokenizer comes from the reference model, so most tests skip (saying why) when
//! models/SmolLM2-135M-Instruct.Q4_1.gguf is absent. They use small custom shapes; the
//! vocabulary is the tokenizer's (49,152), so the embedding is the largest tensor.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_engine::gguf::{Gguf, Value};
use kiln_engine::model::Model;
use kiln_ir::DType;
use kiln_ir::quant::dequantize_row;
use kiln_tools::synth::{
    self, QUANTS, SHAPES, Shape, SynthConfig, SynthError, SynthTensor, parse_quant,
};

const VOCAB: usize = 49152;

fn tokenizer_model() -> Option<PathBuf> {
    // Required like every test's reference model (a missing one fails with how to fetch it).
    Some(kiln_tests::reference_model())
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-synth-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 2 layers, width 64, 4 heads (head size 16), 2 KV heads, FFN 128.
fn small_shape(tied: bool) -> Shape {
    Shape {
        tied_embeddings: tied,
        ..Shape::custom(2, 64, 4, 2, 128, VOCAB, 256).unwrap()
    }
}

fn synth_file(
    dir: &Path,
    tokenizer: &Path,
    shape: Shape,
    quant: DType,
    seed: u64,
) -> (PathBuf, synth::SynthSummary) {
    let path = dir.join(format!(
        "{}-{}-{}-{seed}.gguf",
        shape.name,
        if shape.tied_embeddings {
            "tied"
        } else {
            "untied"
        },
        quant.name()
    ));
    let config = SynthConfig {
        shape,
        quant,
        seed,
        tokenizer_from: tokenizer.to_path_buf(),
    };
    let mut last = 0;
    let summary = synth::synthesize(&config, &path, |p| {
        assert!(p.bytes_done >= last && p.bytes_done <= p.bytes_total);
        last = p.bytes_done;
    })
    .unwrap();
    assert_eq!(last, summary.bytes, "progress ends at the file size");
    (path, summary)
}

fn expected_names(n_layers: usize, tied: bool) -> Vec<String> {
    let mut names = vec!["token_embd.weight".to_string()];
    for i in 0..n_layers {
        for t in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            names.push(format!("blk.{i}.{t}.weight"));
        }
    }
    names.push("output_norm.weight".into());
    if !tied {
        names.push("output.weight".into());
    }
    names
}

fn row_f32(gguf: &Gguf, name: &str, row: usize) -> Vec<f32> {
    let t = gguf.tensor(name).unwrap();
    let cols = t.dims[0] as usize;
    let row_bytes = t.dtype.bytes_for(cols as u64).unwrap() as usize;
    let bytes = &gguf.tensor_data(t)[row * row_bytes..(row + 1) * row_bytes];
    let mut out = vec![0.0f32; cols];
    dequantize_row(t.dtype, bytes, &mut out).unwrap();
    out
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

#[test]
fn small_custom_model_has_llama_cpp_keys_and_tensors_and_loads() {
    let Some(tok) = tokenizer_model() else { return };
    let reference = Gguf::open(&tok).unwrap();
    let dir = scratch("layout");
    for tied in [false, true] {
        let shape = small_shape(tied);
        let (path, summary) = synth_file(&dir, &tok, shape, DType::Q4_1, 7);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), summary.bytes);
        assert!(!dir.join(format!("{}.part", path.display())).exists());

        let g = Gguf::open(&path).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.alignment, 32);
        let u = |k: &str| g.get_u64(k).unwrap_or_else(|e| panic!("{k}: {e}"));
        let f = |k: &str| g.get_f64(k).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
        assert!(g.get_str("general.name").unwrap().contains("custom"));
        assert_eq!(u("general.alignment"), 32);
        assert_eq!(u("general.file_type"), 3, "LLAMA_FTYPE_MOSTLY_Q4_1");
        assert_eq!(u("general.quantization_version"), 2);
        assert_eq!(u("llama.context_length"), 256);
        assert_eq!(u("llama.embedding_length"), 64);
        assert_eq!(u("llama.block_count"), 2);
        assert_eq!(u("llama.feed_forward_length"), 128);
        assert_eq!(u("llama.attention.head_count"), 4);
        assert_eq!(u("llama.attention.head_count_kv"), 2);
        assert_eq!(u("llama.rope.dimension_count"), 16);
        assert_eq!(u("llama.vocab_size"), VOCAB as u64);
        assert_eq!(f("llama.attention.layer_norm_rms_epsilon"), 1e-5f32 as f64);
        assert_eq!(f("llama.rope.freq_base"), 10_000.0);

        // Every tokenizer key of the reference, unchanged, and no others.
        let tok_keys = |g: &Gguf| -> Vec<(String, Value)> {
            g.metadata()
                .iter()
                .filter(|(k, _)| k.starts_with("tokenizer."))
                .cloned()
                .collect()
        };
        let ours = tok_keys(&g);
        assert!(ours.len() >= 5, "{} tokenizer keys", ours.len());
        assert!(
            ours == tok_keys(&reference),
            "tokenizer keys differ from the reference's"
        );

        let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, expected_names(2, tied));
        for t in g.tensors() {
            let expected_dims: Vec<u64> = match t.name.as_str() {
                n if n.ends_with("_norm.weight") => vec![64],
                "token_embd.weight" | "output.weight" => vec![64, VOCAB as u64],
                n if n.ends_with("attn_q.weight") || n.ends_with("attn_output.weight") => {
                    vec![64, 64]
                }
                n if n.ends_with("attn_k.weight") || n.ends_with("attn_v.weight") => {
                    vec![64, 32]
                }
                n if n.ends_with("ffn_gate.weight") || n.ends_with("ffn_up.weight") => {
                    vec![64, 128]
                }
                n if n.ends_with("ffn_down.weight") => vec![128, 64],
                n => panic!("unexpected tensor {n}"),
            };
            assert_eq!(t.dims, expected_dims, "{}", t.name);
            let expected_type = if t.dims.len() == 1 {
                DType::F32
            } else if t.name == "token_embd.weight" && tied {
                DType::Q8_0
            } else {
                DType::Q4_1
            };
            assert_eq!(t.dtype, expected_type, "{}", t.name);
            assert_eq!(t.offset % 32, 0, "{}", t.name);
        }
        let params: u64 = g.tensors().iter().map(|t| t.n_elements()).sum();
        assert_eq!(summary.params, params);
        assert_eq!(summary.tensors, g.tensors().len());

        let model = Model::load(&path).unwrap();
        let c = &model.config;
        assert_eq!(
            (
                c.n_layers,
                c.n_embd,
                c.n_heads,
                c.n_kv_heads,
                c.head_dim,
                c.n_ff
            ),
            (2, 64, 4, 2, 16, 128)
        );
        assert_eq!(c.vocab_size, VOCAB);
        assert_eq!(model.weights.output == model.weights.token_embd, tied);
        assert_eq!(
            model.tokenizer.encode("Hello world", true, true),
            Model::load(&tok)
                .unwrap()
                .tokenizer
                .encode("Hello world", true, true)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_quant_loads_with_realistic_values() {
    let Some(tok) = tokenizer_model() else { return };
    let dir = scratch("quants");
    for quant in QUANTS {
        let (path, _) = synth_file(&dir, &tok, small_shape(false), quant, 3);
        let model = Model::load(&path).unwrap_or_else(|e| panic!("{quant}: {e}"));
        let g = &model.gguf;
        assert_eq!(
            g.get_u64("general.file_type").unwrap(),
            synth::file_type(quant).unwrap() as u64
        );
        for t in g.tensors() {
            // Rows of 64 or 128 values are no whole K-quant super-block: the fallback.
            let expected = if t.dims.len() == 1 {
                DType::F32
            } else {
                synth::row_dtype(quant, t.dims[0] as usize)
            };
            assert_eq!(t.dtype, expected, "{quant}: {}", t.name);
        }
        for (name, rows) in [
            ("token_embd.weight", VOCAB),
            ("blk.0.attn_q.weight", 64),
            ("blk.1.attn_k.weight", 32),
            ("blk.1.ffn_down.weight", 64),
            ("output.weight", VOCAB),
        ] {
            let cols = g.tensor(name).unwrap().dims[0] as f64;
            let want = 1.0 / cols.sqrt();
            // Rows of a whole tensor, first and last included.
            let mut values = Vec::new();
            for r in [0, 1, rows / 2, rows - 1] {
                values.extend(row_f32(g, name, r));
            }
            let (mean, std) = mean_std(&values);
            assert!(
                std > want / 2.0 && std < want * 2.0,
                "{quant} {name}: std {std}, intended {want}"
            );
            assert!(mean.abs() < want / 2.0, "{quant} {name}: mean {mean}");
            assert_ne!(row_f32(g, name, 0), row_f32(g, name, 1), "{quant} {name}");
        }
        assert_ne!(
            row_f32(g, "blk.0.ffn_gate.weight", 0),
            row_f32(g, "blk.0.ffn_up.weight", 0),
            "tensors have their own streams"
        );
        for name in [
            "blk.0.attn_norm.weight",
            "blk.1.ffn_norm.weight",
            "output_norm.weight",
        ] {
            let (mean, std) = mean_std(&row_f32(g, name, 0));
            assert!((mean - 1.0).abs() < 0.03, "{name}: mean {mean}");
            let want = f64::from(synth::NORM_STD);
            assert!(std > want / 2.0 && std < want * 2.0, "{name}: std {std}");
        }
        assert_ne!(
            row_f32(g, "blk.0.attn_norm.weight", 0),
            row_f32(g, "blk.0.ffn_norm.weight", 0)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn same_seed_same_bytes_other_seed_differs() {
    let Some(tok) = tokenizer_model() else { return };
    let dir = scratch("seeds");
    let shape = small_shape(true);
    let (a, _) = synth_file(&dir, &tok, shape, DType::Q4_0, 11);
    let a_bytes = std::fs::read(&a).unwrap();
    std::fs::rename(&a, dir.join("first.gguf")).unwrap();
    let (again, _) = synth_file(&dir, &tok, shape, DType::Q4_0, 11);
    assert!(
        a_bytes == std::fs::read(&again).unwrap(),
        "same seed, same bytes"
    );
    let (b, _) = synth_file(&dir, &tok, shape, DType::Q4_0, 12);
    let (ga, gb) = (Gguf::open(&again).unwrap(), Gguf::open(&b).unwrap());
    for t in ga.tensors() {
        let other = gb.tensor(&t.name).unwrap();
        assert_eq!((&t.dims, t.dtype), (&other.dims, other.dtype));
        assert!(
            ga.tensor_data(t) != gb.tensor_data(other),
            "{}: another seed gives other values",
            t.name
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn smollm2_shape_matches_the_reference_file() {
    let Some(tok) = tokenizer_model() else { return };
    let reference = Gguf::open(&tok).unwrap();
    let shape = Shape::named("smollm2-135m").unwrap();
    let ours = synth::tensors(&shape, DType::Q4_1);
    assert_eq!(ours.len(), reference.tensors().len());
    for t in &ours {
        let r = reference
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{} is not in the reference", t.name));
        assert_eq!((&t.dims, t.dtype), (&r.dims, r.dtype), "{}", t.name);
        assert_eq!(t.n_bytes(), r.n_bytes, "{}", t.name);
    }
    for (key, value) in synth::model_metadata(&shape, DType::Q4_1, 0) {
        if key.starts_with("llama.") || key == "general.file_type" || key == "general.architecture"
        {
            let theirs = reference.get(&key).unwrap_or_else(|| panic!("{key}"));
            assert_eq!(&value, theirs, "{key}");
        }
    }
}

#[test]
fn shape_table_sizes() {
    let bytes = |name: &str, quant: DType| -> (u64, u64) {
        let ts = synth::tensors(&Shape::named(name).unwrap(), quant);
        (
            ts.iter().map(SynthTensor::n_bytes).sum(),
            ts.iter().map(SynthTensor::n_elements).sum(),
        )
    };
    // BRIEF.md: a Llama-3-8B-shaped Q4_0 model with vocab 49,152 is 4.16 GB.
    let (b8, p8) = bytes("llama3-8b", DType::Q4_0);
    assert!((4.10e9..4.20e9).contains(&(b8 as f64)), "{b8} bytes");
    assert_eq!(
        p8,
        32 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 4096 * 14336 + 2 * 4096)
            + 2 * 49152 * 4096
            + 4096
    );
    let (_, p1) = bytes("llama3-1b", DType::Q4_0);
    assert!((1.1e9..1.25e9).contains(&(p1 as f64)), "{p1} parameters");
    let (_, p135) = bytes("smollm2-135m", DType::Q4_1);
    assert_eq!(p135, 134_515_008, "the reference's parameter count");
    for s in SHAPES {
        let ts = synth::tensors(s, DType::Q8_0);
        assert_eq!(
            ts.iter().any(|t| t.name == "output.weight"),
            !s.tied_embeddings
        );
        // Beyond the Llama layer's 9: Gemma 3's four norms (QK-norms, post-attention,
        // post-FFN), Qwen 2's three biases, Qwen 3's two QK-norms; Llama 3's rope_freqs.
        let per_layer = match s.arch {
            synth::Arch::Gemma3 => 13,
            synth::Arch::Qwen2 => 12,
            synth::Arch::Qwen3 => 11,
            _ => 9,
        };
        let rope_freqs = usize::from(s.arch == synth::Arch::Llama3);
        assert_eq!(
            ts.len(),
            2 + per_layer * s.n_layers + usize::from(!s.tied_embeddings) + rope_freqs,
            "{}",
            s.name
        );
    }
    let llama3 = Shape::named("LLaMA3-8B").unwrap();
    assert_eq!(
        (
            llama3.n_layers,
            llama3.n_embd,
            llama3.n_heads,
            llama3.n_kv_heads,
            llama3.n_ff
        ),
        (32, 4096, 32, 8, 14336)
    );
    assert_eq!(llama3.rope_theta, 500_000.0);
}

#[test]
fn bad_names_shapes_and_tokenizers_are_clear_errors() {
    let err = Shape::named("gpt5").unwrap_err().to_string();
    assert!(err.contains("gpt5"), "{err}");
    for s in SHAPES {
        assert!(err.contains(s.name), "{err}");
    }
    assert!(err.contains("custom"), "{err}");

    for ok in ["q4_0", "Q4_0", "q4_1", "Q8_0", "f16", "F16"] {
        assert!(QUANTS.contains(&parse_quant(ok).unwrap()), "{ok}");
    }
    assert_eq!(parse_quant("q4_1").unwrap(), DType::Q4_1);
    assert_eq!(parse_quant("q5_k").unwrap(), DType::Q5_K);
    let err = parse_quant("q2_k").unwrap_err().to_string();
    assert!(
        err.contains("q2_k") && err.contains("Q4_0, Q4_1, Q8_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, F16"),
        "{err}"
    );
    assert!(parse_quant("f32").is_err());

    for (layers, dim, heads, kv, ffn) in [
        (2, 64, 5, 1, 128),  // heads do not divide the width
        (2, 64, 4, 3, 128),  // KV heads do not divide the heads
        (2, 48, 4, 2, 128),  // width not whole blocks
        (2, 64, 4, 2, 100),  // FFN not whole blocks
        (0, 64, 4, 2, 128),  // no layers
        (2, 96, 32, 8, 128), // odd head size
    ] {
        let err = Shape::custom(layers, dim, heads, kv, ffn, VOCAB, 256).unwrap_err();
        assert!(matches!(err, SynthError::BadShape(_)), "{err}");
    }

    let dir = scratch("errors");
    let out = dir.join("out.gguf");
    let missing = dir.join("no-such-model.gguf");
    let config = SynthConfig {
        shape: small_shape(false),
        quant: DType::Q4_0,
        seed: 0,
        tokenizer_from: missing.clone(),
    };
    let err = synth::synthesize(&config, &out, |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SynthError::TokenizerSource { .. }), "{msg}");
    assert!(
        msg.contains("no-such-model.gguf") && msg.contains("--tokenizer-from"),
        "{msg}"
    );
    assert!(!out.exists());

    if let Some(tok) = tokenizer_model() {
        let config = SynthConfig {
            shape: Shape {
                vocab_size: 32000,
                ..small_shape(false)
            },
            tokenizer_from: tok,
            ..config
        };
        let err = synth::synthesize(&config, &out, |_| {}).unwrap_err();
        assert!(matches!(err, SynthError::VocabMismatch { .. }), "{err}");
        assert!(err.to_string().contains("49152"), "{err}");
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// The `kiln` binary: `kiln synth` as scripts use it, and `kiln info` reading its output.

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

fn last_line_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("some stdout");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line {line:?} is not JSON: {e}"))
}

/// A one-line error on stderr and a failing exit code.
fn assert_clean_failure(out: &Output, needles: &[&str]) {
    assert!(!out.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error, got {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr:?}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} not in {stderr:?}");
    }
}

#[test]
fn cli_synth_writes_a_model_kiln_info_reads() {
    let Some(tok) = tokenizer_model() else { return };
    let dir = scratch("cli");
    let file = dir.join("cli.gguf");
    let out = kiln(&[
        "synth",
        "--shape",
        "custom",
        "--layers",
        "2",
        "--dim",
        "64",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--ffn",
        "128",
        "--ctx",
        "512",
        "--quant",
        "q8_0",
        "--seed",
        "5",
        "--tokenizer-from",
        tok.to_str().unwrap(),
        "-o",
        file.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).is_empty(),
        "progress on stderr"
    );
    let j = last_line_json(&out);
    assert_eq!(j["file"], file.to_str().unwrap());
    assert_eq!(j["bytes"], std::fs::metadata(&file).unwrap().len());
    assert_eq!(j["tensors"], 2 + 9 * 2 + 1);
    assert_eq!(j["shape"], "custom");
    assert_eq!(j["quant"], "Q8_0");
    assert!(j["params"].as_u64().unwrap() > 2 * VOCAB as u64 * 64);
    assert!(j["seconds"].as_f64().unwrap() >= 0.0);

    let info = kiln(&["info", "-m", file.to_str().unwrap(), "--json"]);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let i = last_line_json(&info);
    assert_eq!(i["n_tensors"], j["tensors"]);
    assert_eq!(i["n_params"], j["params"]);
    assert_eq!(i["config"]["n_layers"], 2);
    assert_eq!(i["config"]["n_kv_heads"], 2);
    assert_eq!(i["config"]["context_length"], 512);
    assert_eq!(i["config"]["vocab_size"], VOCAB);
    assert_eq!(i["type_counts"]["q8_0"], 2 + 7 * 2);
    assert_eq!(i["type_counts"]["f32"], 1 + 2 * 2);

    // The same command, the same bytes.
    let again = dir.join("again.gguf");
    let mut args: Vec<String> = Vec::new();
    args.extend(
        [
            "synth",
            "--shape",
            "custom",
            "--layers",
            "2",
            "--dim",
            "64",
            "--heads",
            "4",
            "--kv-heads",
            "2",
            "--ffn",
            "128",
            "--ctx",
            "512",
            "--quant",
            "Q8_0",
            "--seed",
            "5",
        ]
        .map(String::from),
    );
    args.extend(["--tokenizer-from".into(), tok.display().to_string()]);
    args.extend(["-o".into(), again.display().to_string()]);
    let out = kiln(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&file).unwrap() == std::fs::read(&again).unwrap());

    // A custom vocabulary must be the tokenizer's.
    let out = kiln(&[
        "synth",
        "--shape",
        "custom",
        "--layers",
        "1",
        "--dim",
        "64",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--ffn",
        "128",
        "--vocab",
        "32000",
        "--quant",
        "q4_0",
        "--tokenizer-from",
        tok.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, &["32000", "49152"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_synth_errors_are_one_line() {
    let dir = scratch("cli-errors");
    let file = dir.join("x.gguf");
    let file = file.to_str().unwrap();
    let out = kiln(&["synth", "--shape", "gpt5", "--quant", "q4_0", "-o", file]);
    assert_clean_failure(
        &out,
        &[
            "unknown shape",
            "gpt5",
            "smollm2-135m",
            "llama3-1b",
            "llama3-8b",
            "custom",
        ],
    );
    let out = kiln(&[
        "synth",
        "--shape",
        "smollm2-135m",
        "--quant",
        "q2_k",
        "-o",
        file,
    ]);
    assert_clean_failure(&out, &["unknown quant", "q2_k", "Q4_0, Q4_1, Q8_0, Q5_0"]);
    let out = kiln(&[
        "synth",
        "--shape",
        "llama3-1b",
        "--quant",
        "q4_0",
        "--tokenizer-from",
        "/nonexistent/tokenizer.gguf",
        "-o",
        file,
    ]);
    assert_clean_failure(&out, &["/nonexistent/tokenizer.gguf", "--tokenizer-from"]);
    let out = kiln(&[
        "synth", "--shape", "custom", "--layers", "2", "--quant", "q4_0", "-o", file,
    ]);
    assert_clean_failure(&out, &["--dim", "--heads", "--kv-heads", "--ffn"]);
    let out = kiln(&[
        "synth",
        "--shape",
        "llama3-8b",
        "--layers",
        "2",
        "--quant",
        "q4_0",
        "-o",
        file,
    ]);
    assert_clean_failure(&out, &["--layers", "custom"]);
    assert!(!Path::new(file).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
