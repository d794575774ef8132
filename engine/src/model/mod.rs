//! A loaded model: the GGUF file, its config, its weights and its tokenizer.

mod config;
mod graph;
mod weights;

use std::path::Path;

pub use config::LlamaConfig;
pub use graph::llama_graph;
pub use weights::{LayerWeights, Matrix, Weights};

use crate::gguf::Gguf;
use crate::tokenizer::Tokenizer;

/// Everything needed to run a model; weights stay in the file's memory map.
#[derive(Debug)]
pub struct Model {
    pub gguf: Gguf,
    pub config: LlamaConfig,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
}

impl Model {
    pub fn load(path: impl AsRef<Path>) -> Result<Model, crate::Error> {
        Model::from_gguf(Gguf::open(path)?)
    }

    pub fn from_gguf(gguf: Gguf) -> Result<Model, crate::Error> {
        let config = LlamaConfig::from_gguf(&gguf)?;
        let weights = Weights::from_gguf(&gguf, &config)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        Ok(Model {
            gguf,
            config,
            weights,
            tokenizer,
        })
    }

    /// The bytes of row `r` of a weight matrix.
    pub fn row(&self, m: &Matrix, r: usize) -> &[u8] {
        let start = m.start + r * m.row_bytes;
        &self.gguf.bytes()[start..start + m.row_bytes]
    }

    /// All rows of a weight matrix, contiguous.
    pub fn matrix_bytes(&self, m: &Matrix) -> &[u8] {
        &self.gguf.bytes()[m.start..m.start + m.rows * m.row_bytes]
    }
}

impl kiln_ir::backend::WeightSource for Model {
    fn weight(&self, name: &str) -> Option<kiln_ir::backend::SharedBytes> {
        self.gguf.tensor(name).map(|t| self.gguf.tensor_shared(t))
    }
}
