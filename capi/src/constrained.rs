//! Constrained generation for `kiln_generate_constrained`: a JSON schema or a Lark grammar
//! compiled into kiln-structured's token masks, in a build with the `structured` feature.
//! The edge build (without it: no llguidance in the library) refuses with
//! `KILN_ERR_UNSUPPORTED`. Nothing here is part of the C API itself.

use kiln_engine::driver::TokenMask;

use crate::boundary::ApiError;
use crate::kiln_status;
use crate::session::SessionState;

/// What the grammar text is (`kiln_grammar_kind`'s values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    JsonSchema,
    Lark,
}

impl Kind {
    pub(crate) fn from_c(kind: i32) -> Result<Kind, ApiError> {
        match kind {
            0 => Ok(Kind::JsonSchema),
            1 => Ok(Kind::Lark),
            other => Err(ApiError::new(
                kiln_status::KILN_ERR_INVALID_ARGUMENT,
                format!("grammar kind {other} is not a kiln_grammar_kind (0 JSON schema, 1 Lark)"),
            )),
        }
    }
}

#[cfg(feature = "structured")]
mod with_structured {
    use super::*;
    use kiln_structured::{Constraint, Grammar, Structured};

    /// A constraint as the engine's driver takes it.
    struct Mask(Constraint);

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

    /// `text` compiled for the session's vocabulary (its token trie built on first use
    /// and kept).
    pub(crate) fn compile(
        state: &mut SessionState,
        kind: Kind,
        text: &str,
    ) -> Result<Box<dyn TokenMask>, ApiError> {
        let invalid = |m: String| ApiError::new(kiln_status::KILN_ERR_INVALID_ARGUMENT, m);
        let grammar = match kind {
            Kind::JsonSchema => Grammar::JsonSchema(
                serde_json::from_str(text)
                    .map_err(|e| invalid(format!("the JSON schema is not JSON: {e}")))?,
            ),
            Kind::Lark => Grammar::Lark(text.to_string()),
        };
        let structured = match &state.structured {
            Some(s) => s.clone(),
            None => {
                let s = Structured::new(state.tokenizer())
                    .map_err(|e| invalid(format!("the vocabulary's token trie: {e}")))?;
                state.structured = Some(s.clone());
                s
            }
        };
        let constraint = structured
            .compile(&grammar)
            .map_err(|e| invalid(format!("the grammar cannot be used: {e}")))?;
        Ok(Box::new(Mask(constraint)))
    }
}

#[cfg(feature = "structured")]
pub(crate) use with_structured::compile;

/// The edge build has no grammar engine.
#[cfg(not(feature = "structured"))]
pub(crate) fn compile(
    _state: &mut SessionState,
    _kind: Kind,
    _text: &str,
) -> Result<Box<dyn TokenMask>, ApiError> {
    Err(ApiError::new(
        kiln_status::KILN_ERR_UNSUPPORTED,
        "constrained generation is not in this build of libkiln: build kiln-capi with the cargo feature `structured`",
    ))
}
