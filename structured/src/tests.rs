//! Masks over the reference vocabularies: every token a random walk samples under the
//! mask is one the grammar accepts, and the text it ends with parses and validates.

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln_gguf::Gguf;
use serde_json::{Value, json};

use super::*;

fn model_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name)
}

fn tokenizer(name: &str) -> Tokenizer {
    let path = model_path(name);
    let g = Gguf::open(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/fetch-model.sh fetches the reference models)",
            path.display()
        )
    });
    Tokenizer::from_gguf(&g).expect("tokenizer loads")
}

fn smollm() -> &'static (Tokenizer, Structured) {
    static S: OnceLock<(Tokenizer, Structured)> = OnceLock::new();
    S.get_or_init(|| {
        let t = tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf");
        let s = Structured::new(&t).expect("trie builds");
        (t, s)
    })
}

/// xorshift64*: random logits without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Sample under the constraint from random logits until it finishes or an EOG is drawn;
/// every token drawn must have been allowed. Returns the text.
fn walk(t: &Tokenizer, s: &Structured, grammar: &Grammar, seed: u64, max: usize) -> String {
    let mut c = s.compile(grammar).expect("grammar compiles");
    let mut rng = Rng(seed | 1);
    let mut ids = Vec::new();
    // Logits rows one wider than the vocabulary: a padded row is never allowed.
    let n = t.vocab_size() + 3;
    for _ in 0..max {
        let mut logits: Vec<f32> = (0..n).map(|_| rng.next_f32() * 8.0).collect();
        c.apply(&mut logits).unwrap();
        let id = kiln_argmax(&logits);
        assert!(
            logits[id as usize].is_finite(),
            "nothing allowed at step {}",
            ids.len()
        );
        assert!(c.allows(id).unwrap(), "the mask let through {id}");
        c.accept(id).unwrap();
        if t.is_eog(id) {
            break;
        }
        ids.push(id);
        if c.is_finished() {
            break;
        }
    }
    assert!(
        c.is_accepting() || c.is_finished(),
        "no end in {max} tokens: {:?}",
        t.decode(&ids)
    );
    t.decode(&ids)
}

fn kiln_argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in l.iter().enumerate() {
        if *v > l[best] {
            best = i;
        }
    }
    best as u32
}

/// The subset of JSON schema the tests use: type, properties, required,
/// additionalProperties false, enum, bounds, items, array lengths, string lengths, anyOf.
fn validate(v: &Value, schema: &Value, defs: &Value) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return validate(v, &defs[name], defs);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        return if any.iter().any(|s| validate(v, s, defs).is_ok()) {
            Ok(())
        } else {
            Err(format!("{v} matches no anyOf branch"))
        };
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{v} not in enum {e:?}"));
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match (ty, v) {
        (None, _) => true,
        (Some("object"), Value::Object(_)) | (Some("array"), Value::Array(_)) => true,
        (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => true,
        (Some("null"), Value::Null) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Some("number"), Value::Number(_)) => true,
        _ => false,
    };
    if !ok {
        return Err(format!("{v} is not of type {ty:?}"));
    }
    if let Some(x) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && x < min
        {
            return Err(format!("{x} < minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && x > max
        {
            return Err(format!("{x} > maximum {max}"));
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            return Err(format!("{s:?} longer than maxLength"));
        }
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            return Err(format!("{s:?} shorter than minLength"));
        }
    }
    if let Some(items) = v.as_array() {
        let len = items.len() as u64;
        if schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
            || schema
                .get("minItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| len < m)
        {
            return Err(format!("{len} items out of bounds"));
        }
        if let Some(item) = schema.get("items") {
            for x in items {
                validate(x, item, defs)?;
            }
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                return Err(format!("missing required {r}"));
            }
        }
        for (k, x) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(x, s, defs)?,
                None if schema.get("additionalProperties") == Some(&json!(false)) => {
                    return Err(format!("extra property {k}"));
                }
                None => {}
            }
        }
    }
    Ok(())
}

pub(crate) fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
               "age": {"type": "integer", "minimum": 0, "maximum": 120}},
               "required": ["name", "age"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
               "ok": {"type": "boolean"}}, "required": ["color", "ok"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 6},
               "minItems": 1, "maxItems": 3}}, "required": ["tags"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"p": {"$ref": "#/$defs/Point"},
               "label": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]}},
               "required": ["p", "label"], "additionalProperties": false,
               "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -5, "maximum": 5},
               "y": {"type": "integer", "minimum": -5, "maximum": 5}}, "required": ["x", "y"], "additionalProperties": false}}}),
        json!({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9}, "maxItems": 4}),
        json!({"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1},
               "note": {"type": "string", "maxLength": 5}}, "required": ["score"], "additionalProperties": false}),
    ]
}

#[test]
fn every_sampled_token_is_allowed_and_outputs_validate() {
    let (t, s) = smollm();
    for (i, schema) in schemas().iter().enumerate() {
        for seed in 1..4u64 {
            let text = walk(
                t,
                s,
                &Grammar::JsonSchema(schema.clone()),
                seed * 7919 + i as u64,
                600,
            );
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("schema {i} seed {seed}: {text:?} is not JSON: {e}"));
            let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
            validate(&v, schema, &defs).unwrap_or_else(|e| panic!("schema {i}: {text}: {e}"));
        }
    }
}

#[test]
fn json_object_mode_gives_an_object() {
    let (t, s) = smollm();
    let text = walk(t, s, &Grammar::JsonObject, 5, 2000);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(v.is_object(), "{text}");
}

#[test]
fn lark_and_regex_grammars() {
    let (t, s) = smollm();
    let text = walk(t, s, &Grammar::Regex("(yes|no)!".into()), 3, 50);
    assert!(text == "yes!" || text == "no!", "{text:?}");
    let lark = r#"start: "call " NAME "(" NUMBER ")"
NAME: /[a-z]{1,5}/
NUMBER: /[0-9]{1,3}/
"#;
    let text = walk(t, s, &Grammar::Lark(lark.into()), 9, 50);
    let re = text.strip_prefix("call ").expect(&text);
    let (name, rest) = re.split_once('(').expect(&text);
    assert!(
        (1..=5).contains(&name.len()) && name.chars().all(|c| c.is_ascii_lowercase()),
        "{text}"
    );
    let num = rest.strip_suffix(')').expect(&text);
    assert!(num.parse::<u32>().is_ok_and(|n| n < 1000), "{text}");
}

#[test]
fn bad_grammars_are_errors_not_panics() {
    let (_, s) = smollm();
    for bad in [
        Grammar::JsonSchema(json!({"type": "objekt"})),
        Grammar::JsonSchema(json!({"$ref": "#/$defs/Missing"})),
        Grammar::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1})),
        Grammar::JsonSchema(json!({"type": "string", "pattern": "(unclosed"})),
        Grammar::Lark("start: undefined_rule".into()),
        Grammar::Regex("(".into()),
    ] {
        let e = s.compile(&bad).expect_err(&format!("{bad:?} compiles"));
        assert!(matches!(e, StructuredError::Grammar(_)) && !e.to_string().is_empty());
    }
}

#[test]
fn a_token_outside_the_mask_is_refused() {
    let (t, s) = smollm();
    let mut c = s.compile(&Grammar::Regex("a+".into())).unwrap();
    let b = t.encode("b", false, false)[0];
    assert!(!c.allows(b).unwrap());
    assert!(c.accept(b).is_err());
}

/// Per-token cost of a mask (compute + apply to a logits row) on both reference
/// vocabularies, over random walks through the test schemas. Timing, not a check:
/// `cargo test -p kiln-structured --release -- --ignored --nocapture mask_cost`.
#[test]
#[ignore = "timing; run by hand"]
fn mask_cost() {
    for name in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let t = tokenizer(name);
        let start = std::time::Instant::now();
        let s = Structured::new(&t).unwrap();
        let trie_ms = start.elapsed().as_secs_f64() * 1e3;
        let n = t.vocab_size();
        for bounded in [true, false] {
            let mut times = Vec::new();
            let mut firsts = Vec::new();
            for (i, schema) in schemas().iter().enumerate() {
                let schema = &if bounded {
                    schema.clone()
                } else {
                    without_lengths(schema)
                };
                for seed in 1..6u64 {
                    let mut c = s.compile(&Grammar::JsonSchema(schema.clone())).unwrap();
                    let mut rng = Rng(seed * 31 + i as u64);
                    for step in 0..300 {
                        let mut logits: Vec<f32> = (0..n).map(|_| rng.next_f32() * 8.0).collect();
                        let t0 = std::time::Instant::now();
                        c.apply(&mut logits).unwrap();
                        let us = t0.elapsed().as_secs_f64() * 1e6;
                        if step == 0 {
                            firsts.push(us)
                        } else {
                            times.push(us)
                        }
                        let id = kiln_argmax(&logits);
                        c.accept(id).unwrap();
                        if t.is_eog(id) || c.is_finished() {
                            break;
                        }
                    }
                }
            }
            times.sort_by(f64::total_cmp);
            firsts.sort_by(f64::total_cmp);
            let q = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p) as usize];
            println!(
                "{name} (string lengths bounded: {bounded}): vocab {n}, trie {trie_ms:.0} ms; {} masks after the first: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; first mask of a grammar: p50 {:.0} µs, max {:.0} µs",
                times.len(),
                q(&times, 0.5),
                q(&times, 0.99),
                q(&times, 1.0),
                q(&firsts, 0.5),
                q(&firsts, 1.0),
            );
        }
    }
}

/// `schema` without maxLength/minLength (strings of any length).
fn without_lengths(schema: &Value) -> Value {
    match schema {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| *k != "maxLength" && *k != "minLength")
                .map(|(k, v)| (k.clone(), without_lengths(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_lengths).collect()),
        v => v.clone(),
    }
}
