//! out (tokens, d) = rows `ids` of the embedding table, dequantized.

use super::WeightMatrix;

pub fn embed(table: WeightMatrix<'_>, ids: &[u32], out: &mut [f32]) {
    for (o, &id) in out.chunks_exact_mut(table.cols).zip(ids) {
        kiln_ir::quant::dequantize_row(table.dtype, table.row(id as usize), o)
            .expect("row geometry checked at load");
    }
}
