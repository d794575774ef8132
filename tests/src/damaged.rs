//! Damaged copies of a model, one per way a file can be wrong in meaning (the probe of
//! issue 21 and the cases found since): each is the base file with its header rewritten
//! (a key, a tensor's entry) or a few bytes of data poisoned.
//!
//! A copy is the edited header followed by the base's data section. Cases that fail at
//! load never read most of the data, so for large bases the data can be left as a sparse
//! hole of zeros ([`Fill::Sparse`]: instant, no disk) — a file the checks wrongly accept
//! still runs and is caught exiting 0. Cases that need the real bytes say so.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use kiln_engine::gguf::{self, Header, RawTensorInfo, Value, ValueType};
use kiln_ir::DType;

/// A model file to damage: its path and header.
#[derive(Debug)]
pub struct Base {
    pub name: &'static str,
    pub path: PathBuf,
    header: Header,
    data_offset: u64,
    alignment: u64,
    len: u64,
}

impl Base {
    pub fn open(name: &'static str, path: &Path) -> io::Result<Base> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        // Read more of the file until the header parses (a large vocabulary makes MBs).
        let mut prefix = Vec::new();
        let mut want = 1u64 << 20;
        let header = loop {
            prefix.clear();
            file.seek(SeekFrom::Start(0))?;
            (&mut file).take(want).read_to_end(&mut prefix)?;
            match Header::parse(&prefix) {
                Ok(h) => break h,
                Err(gguf::GgufError::Truncated { .. } | gguf::GgufError::CountTooLarge { .. })
                    if want < len =>
                {
                    want *= 4;
                }
                Err(e) => return Err(io::Error::other(format!("{}: {e}", path.display()))),
            }
        };
        let bad = |e: gguf::GgufError| io::Error::other(format!("{}: {e}", path.display()));
        Ok(Base {
            name,
            path: path.to_path_buf(),
            alignment: header.alignment().map_err(bad)?,
            data_offset: header.data_offset().map_err(bad)?,
            header,
            len,
        })
    }

    pub fn arch(&self) -> &str {
        self.header
            .get("general.architecture")
            .and_then(Value::as_str)
            .unwrap_or("llama")
    }

    fn int(&self, key: &str) -> Option<u64> {
        self.header.get(key).and_then(Value::as_u64)
    }

    fn tensor(&self, name: &str) -> Option<&RawTensorInfo> {
        self.header.tensors.iter().find(|t| t.name == name)
    }
}

/// How a damaged copy's data section is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// The base's bytes.
    Copy,
    /// Zeros (a sparse file), unless the case needs the real bytes.
    Sparse,
}

/// What a damaged file must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Refused when the model is loaded (every command that loads it fails).
    LoadError,
    /// Loads, but generating fails (the damage is in the numbers).
    RunError,
    /// An extreme but meaningful value: any clean outcome, never a crash or a hang.
    NoCrash,
}

type Edit = Box<dyn Fn(&Base, &mut Header, &mut Vec<Poison>) + Send + Sync>;

/// Overwrite every scale (or value) of a tensor with NaN.
#[derive(Clone, Debug)]
pub struct Poison {
    pub tensor: String,
}

/// One damaged variant of a base model.
pub struct Damage {
    /// The mutation class, e.g. `block_count=2^63`.
    pub class: String,
    pub expect: Expect,
    /// Texts the one-line error must contain (the key or tensor at fault).
    pub needles: Vec<String>,
    /// Needs the base's real data (not [`Fill::Sparse`]).
    pub needs_data: bool,
    edit: Edit,
}

impl std::fmt::Debug for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Damage")
            .field("class", &self.class)
            .field("expect", &self.expect)
            .field("needles", &self.needles)
            .finish_non_exhaustive()
    }
}

impl Damage {
    /// Write the damaged copy of `base` to `out`.
    pub fn write(&self, base: &Base, out: &Path, fill: Fill) -> io::Result<()> {
        let mut header = base.header.clone();
        let mut poison = Vec::new();
        (self.edit)(base, &mut header, &mut poison);
        let bytes = header.encode(base.alignment);
        let mut file = File::create(out)?;
        file.write_all(&bytes)?;
        let new_data = bytes.len() as u64;
        if fill == Fill::Copy || self.needs_data {
            let mut src = File::open(&base.path)?;
            src.seek(SeekFrom::Start(base.data_offset))?;
            io::copy(&mut src, &mut file)?;
        } else {
            file.set_len(new_data + (base.len - base.data_offset))?;
        }
        for p in &poison {
            poison_tensor(base, &p.tensor, &mut file, new_data)?;
        }
        file.sync_data()
    }
}

/// NaN in every block scale of a tensor (or every value of a float tensor).
fn poison_tensor(base: &Base, name: &str, out: &mut File, new_data: u64) -> io::Result<()> {
    let t = base
        .tensor(name)
        .ok_or_else(|| io::Error::other(format!("no tensor {name}")))?;
    let dtype = gguf::dtype_from_ggml(t.type_id).map_err(io::Error::other)?;
    let n: u64 = t.dims.iter().product();
    let bytes = dtype
        .bytes_for(n)
        .ok_or_else(|| io::Error::other("bad dims"))?;
    let mut data = vec![0u8; bytes as usize];
    let mut src = File::open(&base.path)?;
    src.seek(SeekFrom::Start(base.data_offset + t.offset))?;
    src.read_exact(&mut data)?;
    let nan: &[u8] = match dtype {
        DType::F32 => &f32::NAN.to_le_bytes(),
        // f16 NaN: the scale `d` leads every Q4_0, Q4_1 and Q8_0 block.
        DType::F16 | DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => &[0x00, 0x7e],
        other => return Err(io::Error::other(format!("cannot poison {other}"))),
    };
    for block in data.chunks_exact_mut(dtype.block_bytes()) {
        block[..nan.len()].copy_from_slice(nan);
    }
    out.seek(SeekFrom::Start(new_data + t.offset))?;
    out.write_all(&data)
}

fn set(header: &mut Header, key: &str, value: Value) {
    match header.metadata.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => header.metadata.push((key.to_string(), value)),
    }
}

fn tensor_mut<'h>(header: &'h mut Header, name: &str) -> &'h mut RawTensorInfo {
    header
        .tensors
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("the base has no tensor {name}"))
}

struct Corpus<'b> {
    base: &'b Base,
    out: Vec<Damage>,
}

impl Corpus<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.base.arch())
    }

    fn add(
        &mut self,
        class: impl Into<String>,
        expect: Expect,
        needles: &[&str],
        edit: impl Fn(&Base, &mut Header, &mut Vec<Poison>) + Send + Sync + 'static,
    ) {
        self.out.push(Damage {
            class: class.into(),
            expect,
            needles: needles.iter().map(|s| s.to_string()).collect(),
            needs_data: expect != Expect::LoadError,
            edit: Box::new(edit),
        });
    }

    /// A key set to a value, refused naming the key.
    fn bad_value(&mut self, suffix: &str, shown: &str, value: Value) {
        let key = self.key(suffix);
        let class = format!("{suffix}={shown}");
        let k = key.clone();
        self.add(class, Expect::LoadError, &[&key], move |_, h, _| {
            set(h, &k, value.clone())
        });
    }
}

/// Every damaged variant of `base`.
pub fn corpus(base: &Base) -> Vec<Damage> {
    let mut c = Corpus {
        base,
        out: Vec::new(),
    };
    let blocks = base
        .int(&c.key("block_count"))
        .expect("the base has block_count");
    for (shown, n) in [
        ("2^63", 1u64 << 63),
        ("2^40", 1 << 40),
        ("2^32", 1 << 32),
        ("0xFFFFFFFF", u64::from(u32::MAX)),
        ("2^31", 1 << 31),
        ("10^9", 1_000_000_000),
        ("10^8", 100_000_000),
    ] {
        let value = u32::try_from(n).map_or(Value::U64(n), Value::U32);
        c.bad_value("block_count", shown, value);
    }
    c.bad_value("block_count", "0", Value::U32(0));
    c.bad_value("block_count", "layers+1", Value::U32(blocks as u32 + 1));
    let last = format!("blk.{}.", blocks - 1);
    let key = c.key("block_count");
    let k = key.clone();
    c.add(
        "block_count=layers-1",
        Expect::LoadError,
        &[&key, &last, "ignored"],
        move |_, h, _| set(h, &k, Value::U32(blocks as u32 - 1)),
    );

    let eps = "attention.layer_norm_rms_epsilon";
    for (shown, v) in [
        ("NaN", f32::NAN),
        ("inf", f32::INFINITY),
        ("-1", -1.0),
        ("0", 0.0),
    ] {
        c.bad_value(eps, shown, Value::F32(v));
    }
    for (shown, v) in [
        ("0", 0.0),
        ("-1", -1.0),
        ("inf", f32::INFINITY),
        ("NaN", f32::NAN),
    ] {
        c.bad_value("rope.freq_base", shown, Value::F32(v));
    }
    for (shown, v) in [("0", 0), ("odd", 63), ("2*head", 1024)] {
        c.bad_value("rope.dimension_count", shown, Value::U32(v));
    }
    c.bad_value("attention.head_count", "0", Value::U32(0));
    let heads = base.int(&c.key("attention.head_count")).unwrap_or(1);
    let kv = if heads.is_multiple_of(2) {
        heads + 1
    } else {
        2
    }; // divides no even or odd count
    c.bad_value(
        "attention.head_count_kv",
        "non-divisor",
        Value::U32(kv as u32),
    );
    c.bad_value("context_length", "0", Value::U32(0));
    c.bad_value("embedding_length", "0", Value::U32(0));
    c.bad_value("attention.value_length", "2*key", Value::U32(2048));
    let (ty, factor) = (c.key("rope.scaling.type"), c.key("rope.scaling.factor"));
    let needle = factor.clone();
    c.add(
        "rope.scaling.factor=0",
        Expect::LoadError,
        &[&needle],
        move |_, h, _| {
            set(h, &ty, Value::String("linear".into()));
            set(h, &factor, Value::F32(0.0));
        },
    );
    c.bad_value("some_future_float", "NaN", Value::F64(f64::NAN));

    // Dimensions the tensors do not have.
    let width = base.int(&c.key("embedding_length")).unwrap_or(64);
    c.bad_value("embedding_length", "2*width", Value::U32(2 * width as u32));
    let ff = c.key("feed_forward_length");
    c.add(
        "feed_forward_length=2^40",
        Expect::LoadError,
        &["ffn_"],
        move |_, h, _| set(h, &ff, Value::U64(1 << 40)),
    );
    // A trained context is not bounded by the file: only what it sizes must fail cleanly.
    for (shown, n) in [
        ("2^40", 1u64 << 40),
        ("2^63", 1 << 63),
        ("u64::MAX", u64::MAX),
    ] {
        let context = c.key("context_length");
        c.add(
            format!("context_length={shown}"),
            Expect::NoCrash,
            &[],
            move |_, h, _| set(h, &context, Value::U64(n)),
        );
    }

    vocabulary(&mut c);
    tensor_table(&mut c);
    c.out
}

/// Special ids and tokenizer/embedding sizes.
fn vocabulary(c: &mut Corpus<'_>) {
    let n = c
        .base
        .header
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .map_or(0, <[Value]>::len);
    for (id_key, shown, value) in [
        ("bos", "vocab", Value::U32(n as u32)),
        ("eos", "10^6", Value::U32(1_000_000)),
        ("padding", "u32::MAX", Value::U32(u32::MAX)),
        ("unknown", "-1", Value::I32(-1)),
        ("eot", "vocab+5", Value::U32(n as u32 + 5)),
    ] {
        let key = format!("tokenizer.ggml.{id_key}_token_id");
        let k = key.clone();
        c.add(
            format!("{id_key}_token_id={shown}"),
            Expect::LoadError,
            &[&key, "outside the vocabulary"],
            move |_, h, _| set(h, &k, value.clone()),
        );
    }
    // A 100-piece tokenizer in front of the full embedding, with and without a
    // vocab_size key to disagree with.
    let vocab_key = c.key("vocab_size");
    for keep_key in [true, false] {
        let k = vocab_key.clone();
        let class = if keep_key {
            "tokens=100"
        } else {
            "tokens=100,no-vocab_size"
        };
        let needles: &[&str] = if keep_key {
            &["100 tokens"]
        } else {
            &["100 tokens", "token_embd.weight"]
        };
        c.add(class, Expect::LoadError, needles, move |_, h, _| {
            for (key, value) in &mut h.metadata {
                let per_token = [
                    "tokenizer.ggml.tokens",
                    "tokenizer.ggml.token_type",
                    "tokenizer.ggml.scores",
                ];
                if let (true, Value::Array(_, items)) = (per_token.contains(&key.as_str()), value) {
                    items.truncate(100);
                }
            }
            if !keep_key {
                h.metadata.retain(|(key, _)| *key != k);
            }
        });
    }
    let k = vocab_key.clone();
    c.add(
        "vocab_size=tokens+1",
        Expect::LoadError,
        &[&vocab_key],
        move |_, h, _| set(h, &k, Value::U32(n as u32 + 1)),
    );
    c.add(
        "token_type=short",
        Expect::LoadError,
        &["tokenizer.ggml.token_type"],
        |_, h, _| {
            set(
                h,
                "tokenizer.ggml.token_type",
                Value::Array(ValueType::I32, vec![Value::I32(1); 10]),
            )
        },
    );
}

/// Tensor entries: offsets, types, shapes and names.
fn tensor_table(c: &mut Corpus<'_>) {
    c.add(
        "attn_q.offset=0",
        Expect::LoadError,
        &["blk.0.attn_q.weight", "overlaps"],
        |_, h, _| tensor_mut(h, "blk.0.attn_q.weight").offset = 0,
    );
    let embd_type = c.base.tensor("token_embd.weight").map_or(0, |t| t.type_id);
    for (shown, type_id) in [("f16", 1u32), ("q4_0", 2)] {
        if type_id == embd_type {
            continue;
        }
        c.add(
            format!("token_embd.type={shown}"),
            Expect::LoadError,
            &["token_embd.weight"],
            move |_, h, _| tensor_mut(h, "token_embd.weight").type_id = type_id,
        );
    }
    c.add(
        "token_embd.rows/2",
        Expect::LoadError,
        &["token_embd.weight"],
        |_, h, _| tensor_mut(h, "token_embd.weight").dims[1] /= 2,
    );
    c.add(
        "tensor_type=99",
        Expect::LoadError,
        &["blk.0.attn_k.weight", "99"],
        |_, h, _| tensor_mut(h, "blk.0.attn_k.weight").type_id = 99,
    );
    c.add(
        "ffn_up.renamed",
        Expect::LoadError,
        &["blk.1.ffn_upx.weight"],
        |_, h, _| tensor_mut(h, "blk.1.ffn_up.weight").name = "blk.1.ffn_upx.weight".into(),
    );
    c.add(
        "output_norm.renamed",
        Expect::LoadError,
        &["output_norm_x.weight"],
        |_, h, _| tensor_mut(h, "output_norm.weight").name = "output_norm_x.weight".into(),
    );
    c.add(
        "attn_k.dropped",
        Expect::LoadError,
        &["blk.1."],
        |_, h, _| h.tensors.retain(|t| t.name != "blk.1.attn_k.weight"),
    );
    c.add(
        "architecture=llama2",
        Expect::LoadError,
        &["llama2"],
        |_, h, _| set(h, "general.architecture", Value::String("llama2".into())),
    );
    c.add(
        "alignment=48",
        Expect::LoadError,
        &["general.alignment"],
        |_, h, _| set(h, "general.alignment", Value::U32(48)),
    );
    // Numbers: a NaN norm is refused at load; NaN block scales in a matrix reach the
    // logits, and generating must then fail rather than repeat one token.
    c.add(
        "output_norm=NaN",
        Expect::LoadError,
        &["output_norm.weight", "NaN"],
        |_, _, p| {
            p.push(Poison {
                tensor: "output_norm.weight".into(),
            })
        },
    );
    c.add(
        "attn_v.scales=NaN",
        Expect::RunError,
        &["NaN"],
        |_, _, p| {
            p.push(Poison {
                tensor: "blk.0.attn_v.weight".into(),
            })
        },
    );
}
