//! `kiln run --json-schema FILE` and `--grammar FILE`: the output constrained by
//! kiln-structured's masks, through the engine's [`TokenMask`].

use std::path::Path;

use kiln_engine::Error;
use kiln_engine::driver::TokenMask;
use kiln_engine::tokenizer::Tokenizer;
use kiln_structured::{Constraint, Grammar, Structured};

/// A constraint as the engine's driver takes it.
#[derive(Debug)]
pub struct Mask(Constraint);

impl TokenMask for Mask {
    fn apply(&mut self, logits: &mut [f32]) -> Result<(), String> {
        self.0.apply(logits).map_err(|e| e.to_string())
    }

    fn accept(&mut self, id: u32) -> Result<(), String> {
        self.0.accept(id).map_err(|e| e.to_string())
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

/// The grammar of `--json-schema` (a JSON schema file) or `--grammar` (a Lark grammar
/// file), compiled for `tokenizer`; None when neither is given.
pub fn load(
    tokenizer: &Tokenizer,
    json_schema: Option<&Path>,
    grammar: Option<&Path>,
) -> Result<Option<Mask>, Error> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))
    };
    let (grammar, path) = match (json_schema, grammar) {
        (None, None) => return Ok(None),
        (Some(path), _) => {
            let schema = serde_json::from_str(&read(path)?)
                .map_err(|e| Error::Invalid(format!("{} is not JSON: {e}", path.display())))?;
            (Grammar::JsonSchema(schema), path)
        }
        (None, Some(path)) => (Grammar::Lark(read(path)?), path),
    };
    let structured = Structured::new(tokenizer).map_err(|e| Error::Invalid(e.to_string()))?;
    let constraint = structured
        .compile(&grammar)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    Ok(Some(Mask(constraint)))
}
