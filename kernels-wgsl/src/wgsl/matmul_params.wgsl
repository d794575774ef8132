// matmul_params.wgsl: the params block and bindings of the matmul family, which the
// matrix-vector tiles (matmul_core) and the tiled GEMM (gemm_core) read alike: the
// lowering gives a GEMM dispatch its matrix-vector twin's params block.

struct Params {
    rows_sel: u32,  // STEP_N_TOKENS or STEP_N_OUTPUTS: what the rows count
    k: u32,         // input columns
    n: u32,         // output columns (weight rows) of this dispatch
    row_bytes: u32, // bytes of one weight row
    x: u32,         // arena index of the input (rows, k)
    out: u32,       // arena index of the output (rows, n)
    w: u32,         // byte offset of the weight (gate) in `weights`
    w2: u32,        // byte offset of the second weight (up)
    res: u32,       // arena index of the residual (rows, n)
    norm: u32,      // word index of the RMSNorm weight (k)
    eps: f32,
    out_stride: u32, // columns of an output row (n, or more for a chunk of the rows)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
