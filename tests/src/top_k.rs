//! A device top-k (`Backend::read_top_k`) against kiln_ir::step::top_k: rows built to
//! hold what orders badly (exact ties by the hundreds, −0 beside +0, −∞, a row of nearly
//! only −∞, a constant row, a NaN row, a +∞ row), and the comparison of every candidate's
//! id and logit bits.

use kiln_ir::backend::{Backend, BackendError, Candidate, top_k};

/// A small xorshift generator (the rows only need to be reproducible).
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 11) % n
    }
}

/// How many rows [`rows`] gives.
pub const ROWS: usize = 6;

/// [`ROWS`] rows of `cols` logits (`cols` at least 4), each built to break a wrong top-k:
/// 0. seven levels (−1.5 to 1.5 by 0.5, the zeros −0 or +0 at random) and 5% −∞: ties
///    everywhere, the k-th value shared by hundreds of ids;
/// 1. spread values (some repeated) and 10% −∞;
/// 2. −∞ but for three values: k past the finite ones takes −∞ by id;
/// 3. one value for the whole row: ids in order;
/// 4. the levels of row 0 and a NaN;
/// 5. the levels of row 0 and a +∞.
pub fn rows(cols: usize, rng: &mut Rng) -> Vec<f32> {
    let level = |rng: &mut Rng| {
        let v = (rng.below(7) as f32 - 3.0) * 0.5;
        if v == 0.0 && rng.below(2) == 0 {
            -0.0
        } else {
            v
        }
    };
    let mut out = Vec::with_capacity(ROWS * cols);
    for _ in 0..cols {
        out.push(if rng.below(20) == 0 {
            f32::NEG_INFINITY
        } else {
            level(rng)
        });
    }
    for _ in 0..cols {
        let v = match rng.below(10) {
            0 => f32::NEG_INFINITY,
            1 => 3.25, // repeated
            _ => (rng.below(1 << 20) as f32 - (1 << 19) as f32) / 4096.0,
        };
        out.push(v);
    }
    let finite = [rng.below(cols as u64), rng.below(cols as u64), 0];
    for c in 0..cols {
        let hit = finite.contains(&(c as u64));
        out.push(if hit {
            c as f32 - 7.0
        } else {
            f32::NEG_INFINITY
        });
    }
    out.extend(std::iter::repeat_n(1.25f32, cols));
    for bad in [f32::NAN, f32::INFINITY] {
        let at = rng.below(cols as u64) as usize;
        for c in 0..cols {
            out.push(if c == at { bad } else { level(rng) });
        }
    }
    out
}

/// Every candidate of `got` ((rows, k) for `logits` (rows, cols)) equal to top_k's, ids
/// and logit bits; `what` names the check in the error.
pub fn check(
    logits: &[f32],
    cols: usize,
    k: usize,
    got: &[Candidate],
    what: &str,
) -> Result<(), String> {
    let mut want = vec![Candidate::NON_FINITE; k];
    for (r, (row, got)) in logits
        .chunks_exact(cols)
        .zip(got.chunks_exact(k))
        .enumerate()
    {
        top_k(row, &mut want);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if g.id != w.id || g.logit.to_bits() != w.logit.to_bits() {
                return Err(format!(
                    "{what}: row {r} candidate {i}: ({}, {:#010x}) where top_k gives ({}, {:#010x})",
                    g.id,
                    g.logit.to_bits(),
                    w.id,
                    w.logit.to_bits()
                ));
            }
        }
    }
    Ok(())
}

/// A candidate no top-k gives: what outputs are filled with before a read.
pub const POISON: Candidate = Candidate {
    id: 0xA5A5_A5A5,
    logit: 1.0e30,
};

/// `Backend::read_top_k` after a few conformance cases (outputs of 1100 columns: a
/// matmul of random weights), for each k of `ks` (up to 1100: a k past the device's
/// own top-k takes the host's path), equals top_k on what `read_logits` gives; and a
/// k past the vocabulary, or candidates not k a row, are errors. `shape` is the
/// backend's (rows, columns) of its last output.
pub fn read_top_k_matches_host<B: Backend>(
    backend: &mut B,
    shape: fn(&B) -> Result<(usize, usize), BackendError>,
    ks: &[usize],
) -> Result<(), String> {
    use kiln_ir::DType;
    for (dtype, tokens) in [(DType::Q8_0, 3), (DType::F16, 1)] {
        let case = crate::conformance::matmul_term_case(dtype, tokens, 1100, 64);
        crate::conformance::run_case(backend, &case).map_err(|e| format!("{}: {e}", case.name))?;
        let (rows, cols) = shape(backend).map_err(|e| e.to_string())?;
        let mut logits = vec![0.0f32; rows * cols];
        backend
            .read_logits(&mut logits)
            .map_err(|e| e.to_string())?;
        for &k in ks {
            let mut got = vec![POISON; rows * k];
            backend
                .read_top_k(cols, k, &mut got)
                .map_err(|e| format!("{} top-{k}: {e}", case.name))?;
            check(&logits, cols, k, &got, &format!("{} top-{k}", case.name))?;
        }
        let mut past = vec![POISON; rows * (cols + 1)];
        if backend.read_top_k(cols, cols + 1, &mut past).is_ok() {
            return Err("a top-k past the vocabulary succeeded".into());
        }
        let mut ragged = vec![POISON; rows * 4 + 1];
        if backend.read_top_k(cols, 4, &mut ragged).is_ok() {
            return Err("a top-4 into candidates not 4 a row succeeded".into());
        }
    }
    Ok(())
}
