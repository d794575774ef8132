//! out (outputs, d) = rows `rows` of x (tokens, d).

pub fn select_rows(x: &[f32], d: usize, rows: &[u32], out: &mut [f32]) {
    for (o, &r) in out.chunks_exact_mut(d).zip(rows) {
        o.copy_from_slice(&x[r as usize * d..(r as usize + 1) * d]);
    }
}
