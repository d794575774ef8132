//! A loaded model: the GGUF file, its config, its weights and its tokenizer.

mod config;
mod graph;
pub mod validate;
mod weights;

use std::path::Path;

pub use config::{ARCHITECTURES, Activation, Family, LayerConfig, ModelConfig};
pub use graph::model_graph;
pub use weights::{LayerWeights, Matrix, Weights};

use kiln_gguf::Gguf;
use kiln_tokenizer::Tokenizer;

/// Metadata arrays the tokenizer copies; a loaded [`Model`]'s `gguf` no longer has them.
const TOKENIZER_ARRAYS: [&str; 3] = [
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
];

/// Everything needed to run a model; weights stay in the file's memory map. `gguf` is the
/// file's header, less the tokenizer's arrays (read into `tokenizer`, then released).
#[derive(Debug)]
pub struct Model {
    pub gguf: Gguf,
    pub config: ModelConfig,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
}

impl Model {
    pub fn load(path: impl AsRef<Path>) -> Result<Model, crate::Error> {
        Model::from_gguf(Gguf::open_prefetched(path)?)
    }

    pub fn from_gguf(mut gguf: Gguf) -> Result<Model, crate::Error> {
        validate::metadata(&gguf)?;
        let config = ModelConfig::from_gguf(&gguf)?;
        validate::against_config(&gguf, &config)?;
        let weights = Weights::from_gguf(&gguf, &config)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        // The tokenizer now holds its own copy of the vocabulary and merges: release the
        // header's (about 5 MB of small strings for a 49k vocabulary).
        drop(gguf.take_metadata(&TOKENIZER_ARRAYS));
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
