//! The validating GGUF reader. Every count, length and offset is checked against the
//! bytes that are actually there before it is used, so a bad file is an error, never a
//! panic or an out-of-bounds read.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use kiln_ir::DType;

use super::{
    DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufError, MAX_DIMS, Value, ValueType, dtype_from_ggml,
};

/// Arrays inside arrays deeper than this are rejected (a crafted file could otherwise
/// recurse until the stack runs out).
const MAX_ARRAY_DEPTH: usize = 8;

/// Where a tensor lives and what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, innermost (row length) first, as ggml's `ne`.
    pub dims: Vec<u64>,
    pub dtype: DType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Bytes of data (checked to lie inside the file).
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (ne0) and number of rows (the product of the outer dims).
    pub fn rows(&self) -> (usize, usize) {
        let row_len = self.dims.first().copied().unwrap_or(1) as usize;
        let n_rows = self.dims.iter().skip(1).product::<u64>() as usize;
        (row_len, n_rows)
    }
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for Storage {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

/// Ask the kernel to read the whole mapped file ahead, from a short-lived thread: on a
/// cold page cache the weights then arrive in one sequential pass while the header and
/// tokenizer are parsed, instead of fault by fault during the first forward pass
/// (llama.cpp prefetches too, but in line). Only a hint; failures are ignored.
fn prefetch_in_background(storage: &Arc<Storage>) {
    #[cfg(unix)]
    if matches!(**storage, Storage::Mapped(_)) {
        let storage = Arc::clone(storage);
        let _ = std::thread::Builder::new()
            .name("kiln-prefetch".into())
            .spawn(move || {
                if let Storage::Mapped(map) = &*storage {
                    let _ = map.advise(memmap2::Advice::WillNeed);
                }
            });
    }
    #[cfg(not(unix))]
    let _ = storage;
}

/// A parsed, validated GGUF file. Tensor data stays in the memory map.
pub struct Gguf {
    storage: Arc<Storage>,
    pub version: u32,
    pub alignment: u64,
    metadata: Vec<(String, Value)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_offset: u64,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Gguf {
    /// Memory-map and validate a file.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf, GgufError> {
        Gguf::open_impl(path.as_ref(), false)
    }

    /// [`Gguf::open`], and start reading the whole file into the page cache in the
    /// background: for loading a model to run, whose every weight will be read.
    pub fn open_prefetched(path: impl AsRef<Path>) -> Result<Gguf, GgufError> {
        Gguf::open_impl(path.as_ref(), true)
    }

    fn open_impl(path: &Path, prefetch: bool) -> Result<Gguf, GgufError> {
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            // Mapping an empty file fails on some systems; it is simply too short.
            return Gguf::parse(Arc::new(Storage::Owned(Vec::new())));
        }
        // SAFETY: the map is read-only. Another process truncating or rewriting the
        // file while it is mapped is outside what we can guard against (as with every
        // mmap-based loader); we never hand out references that outlive `self`.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        let storage = Arc::new(Storage::Mapped(map));
        if prefetch {
            prefetch_in_background(&storage);
        }
        Gguf::parse(storage)
    }

    /// Parse a file held in memory (tests, fuzzing, files built by [`super::GgufWriter`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Gguf, GgufError> {
        Gguf::parse(Arc::new(Storage::Owned(bytes)))
    }

    fn parse(storage: Arc<Storage>) -> Result<Gguf, GgufError> {
        let bytes = storage.bytes();
        let mut cur = Cursor { bytes, pos: 0 };

        let magic: [u8; 4] = cur.take(4, "magic")?.try_into().expect("4 bytes");
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
        let mut metadata_index = HashMap::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = cur.string("metadata key")?;
            let type_id = cur.u32("value type")?;
            let what = format!("value of {key:?}");
            let value = cur.value(&key, &what, type_id, 0)?;
            if metadata_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata_index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => match &metadata[i].1 {
                Value::U32(a) if *a > 0 && a.is_power_of_two() => u64::from(*a),
                other => return Err(GgufError::BadAlignment(other.summary())),
            },
        };

        let mut infos = Vec::with_capacity(n_tensors as usize);
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
            infos.push((name, dims, type_id, offset));
        }

        let data_offset = align_up(cur.pos as u64, alignment).ok_or_else(|| {
            GgufError::BadAlignment(format!("{alignment} (data offset overflows)"))
        })?;
        // None when the file ends before its data section would start.
        let data_len = (bytes.len() as u64).checked_sub(data_offset);

        let mut tensors = Vec::with_capacity(infos.len());
        let mut tensor_index = HashMap::with_capacity(infos.len());
        for (name, dims, type_id, offset) in infos {
            let dtype =
                dtype_from_ggml(type_id).map_err(|type_name| GgufError::UnknownTensorType {
                    tensor: name.clone(),
                    type_id,
                    type_name,
                })?;
            // The product of the non-zero dims must fit, so that no partial product
            // (`TensorInfo::rows`) overflows either when another dim is zero.
            let fits = dims
                .iter()
                .filter(|&&d| d != 0)
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .is_some_and(|n| n <= i64::MAX as u64);
            if !fits {
                return Err(GgufError::DimensionOverflow { tensor: name, dims });
            }
            let n_elements: u64 = dims.iter().product();
            let row_len = dims.first().copied().unwrap_or(1);
            if row_len % dtype.block_len() as u64 != 0 {
                return Err(GgufError::RowNotBlockMultiple {
                    tensor: name,
                    dtype,
                    row_len,
                    block_len: dtype.block_len(),
                });
            }
            let Some(n_bytes) = dtype.bytes_for(n_elements) else {
                return Err(GgufError::DimensionOverflow { tensor: name, dims });
            };
            if offset % alignment != 0 {
                return Err(GgufError::MisalignedTensor {
                    tensor: name,
                    offset,
                    alignment,
                });
            }
            let in_range = data_len.is_some_and(|data_len| {
                offset
                    .checked_add(n_bytes)
                    .is_some_and(|end| end <= data_len)
            });
            if !in_range {
                return Err(GgufError::TensorOutOfRange {
                    tensor: name,
                    offset,
                    bytes: n_bytes,
                    data_len: data_len.unwrap_or(0),
                });
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor(name));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                dtype,
                offset,
                n_bytes,
            });
        }

        Ok(Gguf {
            storage,
            version,
            alignment,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
            data_offset,
        })
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// Remove metadata entries and hand back their values (a model releases the
    /// tokenizer's large arrays once its tokenizer holds them).
    pub fn take_metadata(&mut self, keys: &[&str]) -> Vec<(String, Value)> {
        let (taken, kept) = std::mem::take(&mut self.metadata)
            .into_iter()
            .partition(|(k, _)| keys.contains(&k.as_str()));
        self.metadata = kept;
        self.metadata_index = self
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        taken
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: found.value_type(),
        }
    }

    /// A required non-negative integer key (any integer width).
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| Self::wrong_type(key, "a non-negative integer", v))
    }

    /// A required float key (f32 or f64).
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64()
            .ok_or_else(|| Self::wrong_type(key, "a float", v))
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str()
            .ok_or_else(|| Self::wrong_type(key, "a string", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        let v = self.require(key)?;
        v.as_array()
            .ok_or_else(|| Self::wrong_type(key, "an array", v))
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))
    }

    /// The bytes of a tensor (validated in range when the file was opened).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.storage.bytes()[start..start + info.n_bytes as usize]
    }

    /// A tensor's bytes shared with the file's map (backends keep them without a copy).
    pub fn tensor_shared(&self, info: &TensorInfo) -> kiln_ir::backend::SharedBytes {
        let start = (self.data_offset + info.offset) as usize;
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = self.storage.clone();
        kiln_ir::backend::SharedBytes::new(owner, start..start + info.n_bytes as usize)
            .expect("tensor ranges are validated when the file is opened")
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Offset of the data section from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
}

fn align_up(x: u64, alignment: u64) -> Option<u64> {
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
