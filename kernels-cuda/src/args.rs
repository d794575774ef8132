//! Kernel arguments declared once. [`kernel_args!`](crate::kernel_args) defines a
//! `#[repr(C)]` struct the host fills and the C declaration of the same struct, which a
//! kernel source starts with: the kernel takes it by value
//! (`extern "C" __global__ void matvec_q4_0_t8(const MatvecArgs a)`), so host and device
//! agree on every field by construction, and NVRTC checks the size the host passes
//! (`static_assert` in the declaration).
//!
//! Device addresses are 64-bit ([`Ptr`], [`ConstPtr`]): a buffer may be larger than 4 GiB.

use std::marker::PhantomData;

/// A type a kernel argument field may have, with its C spelling.
pub trait CType: Copy {
    /// The C type.
    const C: &'static str;
}

impl CType for u32 {
    const C: &'static str = "unsigned int";
}
impl CType for i32 {
    const C: &'static str = "int";
}
impl CType for f32 {
    const C: &'static str = "float";
}
impl CType for u64 {
    const C: &'static str = "unsigned long long";
}
impl CType for u16 {
    const C: &'static str = "unsigned short";
}
impl CType for u8 {
    const C: &'static str = "unsigned char";
}
impl CType for i8 {
    const C: &'static str = "signed char";
}

/// The element type of a device pointer.
pub trait Elem: Copy {
    const C: &'static str;
}
impl<T: CType> Elem for T {
    const C: &'static str = T::C;
}

/// A device address of `T`s the kernel writes (C: `T*`).
#[repr(transparent)]
pub struct Ptr<T: Elem>(pub u64, PhantomData<T>);

/// A device address of `T`s the kernel only reads (C: `const T*`).
#[repr(transparent)]
pub struct ConstPtr<T: Elem>(pub u64, PhantomData<T>);

macro_rules! pointer {
    ($p:ident, $c:literal) => {
        impl<T: Elem> $p<T> {
            /// The pointer at device address `address`.
            pub const fn new(address: u64) -> Self {
                $p(address, PhantomData)
            }
            /// The same buffer `count` elements further on.
            pub const fn add(self, count: u64) -> Self {
                $p(
                    self.0 + count * std::mem::size_of::<T>() as u64,
                    PhantomData,
                )
            }
        }
        impl<T: Elem> Clone for $p<T> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<T: Elem> Copy for $p<T> {}
        impl<T: Elem> Default for $p<T> {
            fn default() -> Self {
                $p(0, PhantomData)
            }
        }
        impl<T: Elem> PartialEq for $p<T> {
            fn eq(&self, other: &Self) -> bool {
                self.0 == other.0
            }
        }
        impl<T: Elem> std::fmt::Debug for $p<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
        impl<T: Elem> Field for $p<T> {
            fn c_type() -> String {
                format!($c, T::C)
            }
        }
    };
}
pointer!(Ptr, "{}*");
pointer!(ConstPtr, "const {}*");

/// A field of a kernel argument struct: its C type.
pub trait Field: Copy {
    fn c_type() -> String;
}
impl<T: CType> Field for T {
    fn c_type() -> String {
        T::C.to_string()
    }
}

/// A kernel argument struct: passed by value, declared in C by [`KernelArgs::c_decl`].
pub trait KernelArgs: Copy {
    /// The struct's name in both languages.
    const NAME: &'static str;
    /// The C declaration (fields in order, then a size check against the host's).
    fn c_decl() -> String;
    /// The struct's bytes as the launch passes them.
    fn as_bytes(&self) -> &[u8];
}

/// `kernel_args! { /// doc  Name { /// doc  field: Type, ... } }`: a `#[repr(C)]` struct
/// and its [`KernelArgs`] impl. Field types: `u32`, `i32`, `f32`, `u64`, [`Ptr<T>`],
/// [`ConstPtr<T>`] (T one of u8, i8, u16, u32, f32). Put 8-byte fields first so neither
/// language pads (the size check catches any difference anyway).
#[macro_export]
macro_rules! kernel_args {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
        }

        impl $crate::args::KernelArgs for $name {
            const NAME: &'static str = stringify!($name);
            fn c_decl() -> String {
                let mut s = format!("struct {} {{\n", stringify!($name));
                $(
                    s.push_str(&format!(
                        "    {} {};\n",
                        <$ty as $crate::args::Field>::c_type(),
                        stringify!($field)
                    ));
                )*
                s.push_str(&format!(
                    "}};\nstatic_assert(sizeof({}) == {}, \"{} differs from the host's\");\n",
                    stringify!($name),
                    std::mem::size_of::<$name>(),
                    stringify!($name),
                ));
                s
            }
            fn as_bytes(&self) -> &[u8] {
                // SAFETY: `Self` is `#[repr(C)]` and `Copy`, made of integers, floats and
                // 64-bit addresses only; the slice covers exactly its bytes and lives as
                // long as `self`. Padding bytes (none when 8-byte fields come first) are
                // only copied into the launch's parameter buffer, never interpreted.
                unsafe {
                    std::slice::from_raw_parts(
                        (self as *const Self).cast::<u8>(),
                        std::mem::size_of::<Self>(),
                    )
                }
            }
        }
    };
}

// The argument structs of the kernels. Arena values are f32 pointers (values may alias:
// no `__restrict__` on them), weights are byte pointers to a weight's start (rows are
// 32-bit offsets from it: a weight is under 4 GiB), `step` is the step buffer (its header
// gives the rows of this step, so the arguments hold for every step). `rows_sel` is the
// step header word that counts the rows (0: tokens, 1: outputs). `pad` fields keep the
// structs free of padding bytes.

crate::kernel_args! {
    /// embed.cu: out (tokens, d) = rows `token_ids` of the table.
    EmbedArgs {
        table: ConstPtr<u8>,
        out: Ptr<f32>,
        step: ConstPtr<u32>,
        /// Bytes of one table row.
        row_bytes: u32,
        d: u32,
        /// Rows of the table (ids at or past it write nothing).
        rows: u32,
        pad: u32,
    }
}

crate::kernel_args! {
    /// rmsnorm.cu, head_rmsnorm.cu, rmsnorm_add.cu (rmsnorm_common.cuh): out = x /
    /// sqrt(mean(x²) + eps) · weight (+ res), rows of d: `heads` of them per row of the
    /// step (rows_sel).
    RmsNormArgs {
        x: ConstPtr<f32>,
        out: Ptr<f32>,
        weight: ConstPtr<f32>,
        /// rmsnorm_add's residual (rows, d); null for the others.
        res: ConstPtr<f32>,
        step: ConstPtr<u32>,
        rows_sel: u32,
        d: u32,
        eps: f32,
        /// Rows of d per row of the step: head_rmsnorm's heads, 1 for the others.
        heads: u32,
    }
}

crate::kernel_args! {
    /// The matmul family of F32/F16/BF16 weights (matmul_core.cuh): out (rows, n) from
    /// x (rows, k) and the weight w (and w2 for the gated ones); res and norm where the op
    /// has them.
    MatmulArgs {
        x: ConstPtr<f32>,
        out: Ptr<f32>,
        /// The residual (rows, n) of matmul_add.
        res: ConstPtr<f32>,
        /// The weight (gate) and the second weight (up).
        w: ConstPtr<u8>,
        w2: ConstPtr<u8>,
        /// The RMSNorm weight (k) of the rmsnorm_ variants.
        norm: ConstPtr<f32>,
        step: ConstPtr<u32>,
        rows_sel: u32,
        k: u32,
        n: u32,
        /// Bytes of one weight row.
        row_bytes: u32,
        eps: f32,
        pad: u32,
    }
}

crate::kernel_args! {
    /// The elementwise kernels over (rows, cols): add.cu (a + b), swiglu.cu (silu(a) ·
    /// b), geglu.cu (gelu(a) · b), add_bias.cu (a + b, b a row of cols), scale.cu (a ·
    /// factor, b null).
    BinaryArgs {
        a: ConstPtr<f32>,
        b: ConstPtr<f32>,
        out: Ptr<f32>,
        step: ConstPtr<u32>,
        rows_sel: u32,
        cols: u32,
        /// scale.cu's factor.
        factor: f32,
        pad: u32,
    }
}

crate::kernel_args! {
    /// select_rows.cu: out (outputs, cols) = the output rows of x (tokens, cols).
    SelectRowsArgs {
        x: ConstPtr<f32>,
        out: Ptr<f32>,
        step: ConstPtr<u32>,
        cols: u32,
        pad: u32,
    }
}

crate::kernel_args! {
    /// rope.cu: out = rope(x), x (tokens, width) of heads of head_dim.
    RopeArgs {
        x: ConstPtr<f32>,
        out: Ptr<f32>,
        step: ConstPtr<u32>,
        width: u32,
        head_dim: u32,
        /// The RoPE geometry (the step's STEP_ROPE_DIR entry).
        table: u32,
        pad: u32,
    }
}

crate::kernel_args! {
    /// The KV kernels (kv_common.cuh: kv_write, rope_kv_write, attention and its decode,
    /// combine and prefill entries). A page's offset in the KV buffer is 64-bit
    /// (kv_common.cuh: page_at), offsets within a page 32-bit.
    KvArgs {
        /// q (tokens, n_heads · head_dim), and the rotated q / the attention output.
        q: ConstPtr<f32>,
        q_out: Ptr<f32>,
        /// k and v (tokens, n_kv_heads · head_dim).
        k: ConstPtr<f32>,
        v: ConstPtr<f32>,
        kv: Ptr<u8>,
        step: ConstPtr<u32>,
        /// The decode splits' partial results (launch.rs: partial_floats).
        partial: Ptr<f32>,
        n_heads: u32,
        n_kv_heads: u32,
        head_dim: u32,
        /// Tokens per page, bytes of a page.
        page_size: u32,
        page_bytes: u32,
        /// Byte offsets of this layer within a page, of the V values, K scales and V
        /// scales within a layer.
        layer_base: u32,
        v_base: u32,
        ks_base: u32,
        vs_base: u32,
        /// Softmax scale.
        scale: f32,
        /// The KV group whose block tables hold this layer's pages.
        kv_group: u32,
        /// The RoPE geometry of rope_kv_write.
        rope: u32,
        /// Splits of the decode launch this combine merges (set per step).
        splits: u32,
        /// Sliding window: attend to positions > pos - window; 0: every position.
        window: u32,
    }
}

crate::kernel_args! {
    /// argmax.cu: the index of the largest logit of each row.
    ArgmaxArgs {
        logits: ConstPtr<f32>,
        ids: Ptr<u32>,
        step: ConstPtr<u32>,
        rows_sel: u32,
        cols: u32,
    }
}

crate::kernel_args! {
    /// top_k.cu: the k largest logits of each row with their ids (a sampler's top-k).
    TopKArgs {
        logits: ConstPtr<f32>,
        /// (rows, k, 2) each candidate's id and logit bits.
        out: Ptr<u32>,
        step: ConstPtr<u32>,
        rows_sel: u32,
        cols: u32,
        k: u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::kernel_args! {
        /// A test struct.
        Example {
            /// Input.
            x: ConstPtr<f32>,
            out: Ptr<u8>,
            n: u32,
            eps: f32,
        }
    }

    #[test]
    fn declares_the_same_fields_in_c_with_a_size_check() {
        let decl = Example::c_decl();
        assert_eq!(
            decl,
            "struct Example {\n    const float* x;\n    unsigned char* out;\n    unsigned int n;\n    \
             float eps;\n};\nstatic_assert(sizeof(Example) == 24, \"Example differs from the host's\");\n"
        );
        let a = Example {
            x: ConstPtr::new(0x1000).add(3),
            out: Ptr::new(0xdead_0000_0000),
            n: 7,
            eps: 0.5,
        };
        let b = a.as_bytes();
        assert_eq!(b.len(), 24);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 0x100c);
        assert_eq!(
            u64::from_le_bytes(b[8..16].try_into().unwrap()),
            0xdead_0000_0000
        );
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 7);
        assert_eq!(f32::from_le_bytes(b[20..24].try_into().unwrap()), 0.5);
    }
}
