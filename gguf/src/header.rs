//! The header as stored: version, metadata and the tensor table, read with every count and
//! length checked against the bytes present, but tensor types, shapes and offsets taken as
//! they are. [`super::Gguf`] checks those against the data; tools that rewrite a header
//! (the damaged-model corpus, the structure-aware fuzzer) edit a [`Header`] and encode it.

use std::collections::HashSet;

use super::write::{put_string, put_value};
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufError, MAX_DIMS, Value, ValueType};

/// Arrays inside arrays deeper than this are rejected (a crafted file could otherwise
/// recurse until the stack runs out).
const MAX_ARRAY_DEPTH: usize = 8;

/// A tensor's entry in the header, unchecked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTensorInfo {
    pub name: String,
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    /// The ggml type id.
    pub type_id: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
}

/// A GGUF header: what precedes the data section.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub version: u32,
    /// Metadata in file order (keys are unique).
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<RawTensorInfo>,
    /// Bytes from the start of the file to the end of the tensor table; the data section
    /// starts at the next multiple of the alignment.
    pub len: u64,
}

impl Header {
    /// Read the header at the start of `bytes` (the data section need not follow).
    pub fn parse(bytes: &[u8]) -> Result<Header, GgufError> {
        let mut cur = Cursor { bytes, pos: 0 };
        let magic: [u8; 4] = cur.array("magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = cur.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = cur.u64("tensor count")?;
        let n_kv = cur.u64("metadata count")?;
        // A metadata entry takes at least 8 + 4 + 1 bytes, a tensor info at least 8+4+4+8
        // (a scalar tensor has no dimensions).
        cur.check_count(n_kv, 13, "metadata count")?;
        cur.check_count(n_tensors, 24, "tensor count")?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut keys = HashSet::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = cur.string("metadata key")?;
            let type_id = cur.u32("value type")?;
            let what = format!("value of {key:?}");
            let value = cur.value(&key, &what, type_id, 0)?;
            if !keys.insert(key.clone()) {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
        }

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = cur.string("tensor name")?;
            let n_dims = cur.u32("tensor dimension count")?;
            if n_dims as usize > MAX_DIMS {
                return Err(GgufError::TooManyDims {
                    tensor: name,
                    n_dims,
                    max: MAX_DIMS,
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(cur.u64("tensor dimension")?);
            }
            let type_id = cur.u32("tensor type")?;
            let offset = cur.u64("tensor offset")?;
            tensors.push(RawTensorInfo {
                name,
                dims,
                type_id,
                offset,
            });
        }
        Ok(Header {
            version,
            metadata,
            tensors,
            len: cur.pos as u64,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.alignment` (default 32): a power-of-two u32.
    pub fn alignment(&self) -> Result<u64, GgufError> {
        match self.get("general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => Ok(u64::from(*a)),
            Some(other) => Err(GgufError::BadAlignment(other.summary())),
        }
    }

    /// Where the data section starts in the file.
    pub fn data_offset(&self) -> Result<u64, GgufError> {
        let alignment = self.alignment()?;
        align_up(self.len, alignment)
            .ok_or_else(|| GgufError::BadAlignment(format!("{alignment} (data offset overflows)")))
    }

    /// The header's bytes, zero-padded to `alignment`: the data section follows. Nothing
    /// is checked, so that a damaged header can be written as it is.
    pub fn encode(&self, alignment: u64) -> Vec<u8> {
        encode(self.version, &self.metadata, &self.tensors, alignment)
    }
}

/// A header's bytes from its parts, zero-padded to `alignment`.
pub(crate) fn encode(
    version: u32,
    metadata: &[(String, Value)],
    tensors: &[RawTensorInfo],
    alignment: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&GGUF_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut out, key);
        out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
        put_value(&mut out, value);
    }
    for t in tensors {
        put_string(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.type_id.to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    out.resize(
        (out.len() as u64).next_multiple_of(alignment.max(1)) as usize,
        0,
    );
    out
}

pub(crate) fn align_up(x: u64, alignment: u64) -> Option<u64> {
    Some(x.checked_add(alignment - 1)? / alignment * alignment)
}

/// A bounds-checked little-endian reader.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                available: self.remaining(),
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    /// Reject a count whose entries (at least `min_bytes` each) cannot fit in what is left,
    /// before anything is allocated for it.
    fn check_count(&self, count: u64, min_bytes: u64, what: &str) -> Result<(), GgufError> {
        if count.saturating_mul(min_bytes) > self.remaining() {
            return Err(GgufError::CountTooLarge {
                what: what.to_string(),
                count,
            });
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let offset = self.pos as u64;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_string(),
            offset,
        })
    }

    fn value(
        &mut self,
        key: &str,
        what: &str,
        type_id: u32,
        depth: usize,
    ) -> Result<Value, GgufError> {
        let Some(ty) = ValueType::from_id(type_id) else {
            return Err(GgufError::UnknownValueType {
                key: key.to_string(),
                type_id,
            });
        };
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(what)?[0] != 0),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestingTooDeep {
                        key: key.to_string(),
                        max_depth: MAX_ARRAY_DEPTH,
                    });
                }
                let elem_id = self.u32(what)?;
                let Some(elem_ty) = ValueType::from_id(elem_id) else {
                    return Err(GgufError::UnknownValueType {
                        key: key.to_string(),
                        type_id: elem_id,
                    });
                };
                let n = self.u64(what)?;
                let min_bytes = match elem_ty {
                    ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
                    ValueType::U16 | ValueType::I16 => 2,
                    ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
                    ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
                    ValueType::Array => 12,
                };
                self.check_count(n, min_bytes, what)?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(key, what, elem_id, depth + 1)?);
                }
                Value::Array(elem_ty, items)
            }
        })
    }
}
