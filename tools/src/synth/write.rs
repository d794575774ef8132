//! Writing a synthesized model: the GGUF header, then every tensor's rows drawn and
//! quantized in parallel and streamed to a `.part` file renamed at the end.

use super::*;

/// Writes a random-weight model to `out` (through a `.part` file renamed at the end, so
/// a failed run leaves no half-written model behind).
pub fn synthesize(
    config: &SynthConfig,
    out: &Path,
    progress: impl FnMut(Progress<'_>),
) -> Result<SynthSummary, SynthError> {
    synthesize_with_template(config, None, out, progress)
}

/// [`synthesize`], with `chat_template` (a Jinja chat template) as the model's
/// `tokenizer.chat_template` in place of the tokenizer source's.
pub fn synthesize_with_template(
    config: &SynthConfig,
    chat_template: Option<&str>,
    out: &Path,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<SynthSummary, SynthError> {
    config.shape.validate()?;
    if !QUANTS.contains(&config.quant) {
        return Err(SynthError::UnknownQuant {
            name: config.quant.name().to_string(),
            known: QUANTS.map(quant_name).join(", "),
        });
    }
    let (tokenizer_keys, tokenizer_vocab) = tokenizer_metadata(&config.tokenizer_from)?;
    if tokenizer_vocab != config.shape.vocab_size {
        return Err(SynthError::VocabMismatch {
            shape: config.shape.name.to_string(),
            shape_vocab: config.shape.vocab_size,
            tokenizer_vocab,
            path: config.tokenizer_from.clone(),
        });
    }
    let mut metadata = model_metadata(&config.shape, config.quant, config.seed);
    metadata.extend(tokenizer_keys);
    if let Some(template) = chat_template {
        const KEY: &str = "tokenizer.chat_template";
        metadata.retain(|(k, _)| k != KEY);
        metadata.push((KEY.to_string(), Value::String(template.to_string())));
    }
    let tensors = tensors(&config.shape, config.quant);

    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let io_err = |source| SynthError::Io {
        path: part.clone(),
        source,
    };
    let result = File::create(&part)
        .map_err(io_err)
        .and_then(|file| {
            let mut w = BufWriter::with_capacity(1 << 20, file);
            let bytes = write_model(
                &mut w,
                &part,
                &metadata,
                &tensors,
                config.seed,
                &mut progress,
            )?;
            let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
            file.sync_all().map_err(io_err)?;
            Ok(bytes)
        })
        .and_then(|bytes| {
            std::fs::rename(&part, out).map_err(|source| SynthError::Io {
                path: out.to_path_buf(),
                source,
            })?;
            Ok(bytes)
        });
    match result {
        Ok(bytes) => Ok(SynthSummary {
            bytes,
            tensors: tensors.len(),
            params: tensors.iter().map(SynthTensor::n_elements).sum(),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// Writes header and data; returns the bytes written.
fn write_model<W: Write>(
    out: &mut W,
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[SynthTensor],
    seed: u64,
    progress: &mut impl FnMut(Progress<'_>),
) -> Result<u64, SynthError> {
    let io_err = |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let header = gguf_header(metadata, tensors, ALIGNMENT);
    let data_bytes = data_layout(tensors, ALIGNMENT).1;
    let bytes_total = header.len() as u64 + data_bytes;
    out.write_all(&header).map_err(io_err)?;
    let mut written = header.len() as u64;
    if let Some(first) = tensors.first() {
        progress(Progress {
            tensor: &first.name,
            index: 0,
            n_tensors: tensors.len(),
            bytes_done: written,
            bytes_total,
        });
    }
    let mut buf: Vec<u8> = Vec::new();
    for (index, t) in tensors.iter().enumerate() {
        let row_bytes = t.row_bytes();
        let rows_per_chunk = (CHUNK_BYTES / row_bytes).max(1);
        let tensor_key = fnv1a(t.name.as_bytes());
        let mut row = 0;
        while row < t.rows() {
            let n = rows_per_chunk.min(t.rows() - row);
            buf.resize(n * row_bytes, 0);
            fill_rows(t, tensor_key, seed, row, &mut buf)?;
            out.write_all(&buf).map_err(io_err)?;
            written += buf.len() as u64;
            row += n;
            progress(Progress {
                tensor: &t.name,
                index,
                n_tensors: tensors.len(),
                bytes_done: written,
                bytes_total,
            });
        }
        let pad = written.next_multiple_of(ALIGNMENT) - written;
        if index + 1 < tensors.len() && pad > 0 {
            out.write_all(&[0u8; ALIGNMENT as usize][..pad as usize])
                .map_err(io_err)?;
            written += pad;
        }
    }
    out.flush().map_err(io_err)?;
    debug_assert_eq!(written, bytes_total);
    Ok(written)
}

/// Generates and quantizes rows `first..` of `t` into `dst` (whole rows), in parallel.
fn fill_rows(
    t: &SynthTensor,
    tensor_key: u64,
    seed: u64,
    first: usize,
    dst: &mut [u8],
) -> Result<(), SynthError> {
    let cols = t.cols();
    dst.par_chunks_mut(t.row_bytes())
        .enumerate()
        .try_for_each_init(
            || vec![0.0f32; cols],
            |values, (i, out)| {
                let mut rng = Rng::for_row(seed, tensor_key, (first + i) as u64);
                match t.init {
                    Init::Normal { std } => rng.fill_normal(values, 0.0, std),
                    Init::Norm => rng.fill_normal(values, 1.0, NORM_STD),
                    Init::Llama3RopeFactors { theta } => {
                        values.copy_from_slice(&llama3_rope_factors(theta, 2 * cols));
                    }
                }
                quantize_row(t.dtype, values, out).map_err(|source| SynthError::Quant {
                    tensor: t.name.clone(),
                    source,
                })
            },
        )
}

/// The header entries of the tensors (for the shared GGUF header encoder).
fn entries(tensors: &[SynthTensor]) -> Vec<TensorEntry<'_>> {
    tensors
        .iter()
        .map(|t| TensorEntry {
            name: &t.name,
            dims: &t.dims,
            dtype: t.dtype,
            n_bytes: t.n_bytes(),
        })
        .collect()
}

/// Each tensor's data offset (relative to the data section) and the section's length.
pub(super) fn data_layout(tensors: &[SynthTensor], alignment: u64) -> (Vec<u64>, u64) {
    kiln_gguf::data_layout(&entries(tensors), alignment)
}

/// The GGUF v3 header, encoded exactly as [`kiln_gguf::GgufWriter`] does.
pub(super) fn gguf_header(
    metadata: &[(String, Value)],
    tensors: &[SynthTensor],
    alignment: u64,
) -> Vec<u8> {
    encode_header(metadata, &entries(tensors), alignment)
        .expect("synth dtypes are GGUF types")
        .0
}
