//! A GGUF v3 writer: tests build small models with it, `kiln synth` writes random ones.

use std::io::{self, Write};

use kiln_ir::DType;

use super::header::{self, RawTensorInfo};
use super::{DEFAULT_ALIGNMENT, Value, ggml_type_id};

/// Collects metadata and tensors, then writes one GGUF file.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, DType, Vec<u8>)>,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    pub fn metadata(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Add a tensor; `dims` innermost first, `data` already in `dtype`'s layout.
    pub fn tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        dtype: DType,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec(), dtype, data));
        self
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .filter(|a| a.is_power_of_two())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let alignment = self.alignment();
        let entries: Vec<TensorEntry<'_>> = self
            .tensors
            .iter()
            .map(|(name, dims, dtype, data)| TensorEntry {
                name,
                dims,
                dtype: *dtype,
                n_bytes: data.len() as u64,
            })
            .collect();
        let (header, offsets) = encode_header(&self.metadata, &entries, alignment)?;
        out.write_all(&header)?;
        let mut written = 0u64;
        for ((_, _, _, data), start) in self.tensors.iter().zip(offsets) {
            out.write_all(&vec![0u8; (start - written) as usize])?;
            out.write_all(data)?;
            written = start + data.len() as u64;
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }
}

/// A tensor's entry in the header: its name, dims (innermost first), dtype and bytes.
#[derive(Clone, Copy, Debug)]
pub struct TensorEntry<'a> {
    pub name: &'a str,
    pub dims: &'a [u64],
    pub dtype: DType,
    pub n_bytes: u64,
}

/// Each tensor's data offset (from the start of the data section, aligned) and the
/// section's length.
pub fn data_layout(tensors: &[TensorEntry<'_>], alignment: u64) -> (Vec<u64>, u64) {
    let mut offset = 0u64;
    let mut offsets = Vec::with_capacity(tensors.len());
    for t in tensors {
        offset = offset.next_multiple_of(alignment);
        offsets.push(offset);
        offset += t.n_bytes;
    }
    (offsets, offset)
}

/// The GGUF v3 header (magic to the zero padding before the data) and each tensor's data
/// offset; the data follows, each tensor at its offset. Streaming writers (`kiln synth`)
/// write this first and then the tensors as they are produced.
pub fn encode_header(
    metadata: &[(String, Value)],
    tensors: &[TensorEntry<'_>],
    alignment: u64,
) -> io::Result<(Vec<u8>, Vec<u64>)> {
    let (offsets, _) = data_layout(tensors, alignment);
    let raw = tensors
        .iter()
        .zip(&offsets)
        .map(|(t, &offset)| {
            let type_id = ggml_type_id(t.dtype).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} cannot be stored in GGUF", t.dtype),
                )
            })?;
            Ok(RawTensorInfo {
                name: t.name.to_string(),
                dims: t.dims.to_vec(),
                type_id,
                offset,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok((header::encode(3, metadata, &raw, alignment), offsets))
}

pub(crate) fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.push(*v as u8),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Array(elem, items) => {
            out.extend_from_slice(&(*elem as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}
