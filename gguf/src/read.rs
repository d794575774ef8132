//! The validating GGUF reader. Every count, length and offset is checked against the
//! bytes that are actually there before it is used, so a bad file is an error, never a
//! panic or an out-of-bounds read.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use kiln_ir::DType;

use super::header::{Header, RawTensorInfo, align_up};
use super::{GgufError, Value, dtype_from_ggml};

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

/// What a file that is not a regular file is, for the error that refuses it.
fn special_file_kind(t: &std::fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a named pipe (FIFO)");
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("neither a file nor a directory")
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
        Gguf::open_impl(path.as_ref(), false, true)
    }

    /// The header and metadata only, without reading the tensor infos: the tokenizer of
    /// a file whose tensors kiln cannot load (`kiln tokenize`). It has no tensors.
    pub fn open_metadata(path: impl AsRef<Path>) -> Result<Gguf, GgufError> {
        Gguf::open_impl(path.as_ref(), false, false)
    }

    /// [`Gguf::open`], and start reading the whole file into the page cache in the
    /// background: for loading a model to run, whose every weight will be read.
    pub fn open_prefetched(path: impl AsRef<Path>) -> Result<Gguf, GgufError> {
        Gguf::open_impl(path.as_ref(), true, true)
    }

    fn open_impl(path: &Path, prefetch: bool, with_tensors: bool) -> Result<Gguf, GgufError> {
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Refuse what is not a regular file before opening it: opening a FIFO with no
        // writer blocks, and devices and directories fail later with misleading errors.
        let not_a_file = |meta: &std::fs::Metadata| match special_file_kind(&meta.file_type()) {
            Some(kind) => Err(GgufError::NotAFile {
                path: path.to_path_buf(),
                kind,
            }),
            None => Ok(()),
        };
        not_a_file(&std::fs::metadata(path).map_err(io_err)?)?;
        let file = File::open(path).map_err(io_err)?;
        // The path may have been replaced in between: check what was opened too.
        let meta = file.metadata().map_err(io_err)?;
        not_a_file(&meta)?;
        let len = meta.len();
        if len == 0 {
            // Mapping an empty file fails on some systems; it is simply too short.
            return Gguf::parse(Arc::new(Storage::Owned(Vec::new())), with_tensors);
        }
        // SAFETY: the map is read-only. Another process truncating or rewriting the
        // file while it is mapped is outside what we can guard against (as with every
        // mmap-based loader); we never hand out references that outlive `self`.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        let storage = Arc::new(Storage::Mapped(map));
        if prefetch {
            prefetch_in_background(&storage);
        }
        Gguf::parse(storage, with_tensors)
    }

    /// Parse a file held in memory (tests, fuzzing, files built by [`super::GgufWriter`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Gguf, GgufError> {
        Gguf::parse(Arc::new(Storage::Owned(bytes)), true)
    }

    fn parse(storage: Arc<Storage>, with_tensors: bool) -> Result<Gguf, GgufError> {
        let bytes = storage.bytes();
        let header = Header::parse(bytes)?;
        let alignment = header.alignment()?;
        let data_offset = header.data_offset()?;
        // None when the file ends before its data section would start.
        let data_len = (bytes.len() as u64).checked_sub(data_offset);

        // Without tensors (`open_metadata`), their types and offsets go unchecked.
        let raw_tensors = if with_tensors {
            header.tensors
        } else {
            Vec::new()
        };
        let mut tensors = Vec::with_capacity(raw_tensors.len());
        let mut tensor_index = HashMap::with_capacity(raw_tensors.len());
        for raw in raw_tensors {
            let info = check_tensor(raw, alignment, data_len)?;
            if tensor_index
                .insert(info.name.clone(), tensors.len())
                .is_some()
            {
                return Err(GgufError::DuplicateTensor(info.name));
            }
            tensors.push(info);
        }
        check_layout(&tensors, alignment)?;

        let metadata = header.metadata;
        let metadata_index = metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        Ok(Gguf {
            storage,
            version: header.version,
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

/// A tensor's entry checked on its own: a type kiln reads, dimensions whose product fits,
/// whole blocks per row, an aligned offset, and bytes inside the data section
/// (`data_len`: None when the file ends before the data section starts).
fn check_tensor(
    raw: RawTensorInfo,
    alignment: u64,
    data_len: Option<u64>,
) -> Result<TensorInfo, GgufError> {
    let RawTensorInfo {
        name,
        dims,
        type_id,
        offset,
    } = raw;
    let dtype = dtype_from_ggml(type_id).map_err(|type_name| GgufError::UnknownTensorType {
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
    Ok(TensorInfo {
        name,
        dims,
        dtype,
        offset,
        n_bytes,
    })
}

/// The data section holds the tensors in table order, each at the end of the one before
/// rounded up to the alignment: ggml's own rule (`gguf_init_from_file` refuses any other
/// offset). So two tensors never share bytes, and a tensor whose type or shape was changed
/// (its size no longer fills the space up to the next) is caught here, naming both.
fn check_layout(tensors: &[TensorInfo], alignment: u64) -> Result<(), GgufError> {
    let mut expected = 0u64;
    let mut previous: Option<&TensorInfo> = None;
    for t in tensors {
        if t.offset != expected {
            let previous = previous.map_or_else(
                || "the start of the data section".to_string(),
                |p| {
                    format!(
                        "the tensor before it, {:?} ({} {:?}, {} bytes from offset {})",
                        p.name, p.dtype, p.dims, p.n_bytes, p.offset
                    )
                },
            );
            return Err(GgufError::TensorLayout {
                tensor: t.name.clone(),
                offset: t.offset,
                relation: if t.offset < expected {
                    "overlaps"
                } else {
                    "leaves a gap after"
                },
                previous,
                expected,
            });
        }
        // In range (checked per tensor), so neither sum overflows.
        expected = align_up(t.offset + t.n_bytes, alignment).unwrap_or(u64::MAX);
        previous = Some(t);
    }
    Ok(())
}
