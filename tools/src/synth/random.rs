//! The seeded random streams of synthesized weights.

/// 64-bit FNV-1a, to key a tensor's random stream by its name.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256++, one stream per (seed, tensor, row).
pub(super) struct Rng([u64; 4]);

impl Rng {
    pub(super) fn for_row(seed: u64, tensor_key: u64, row: u64) -> Rng {
        let mut sm = seed;
        let a = splitmix64(&mut sm);
        let mut sm = a ^ tensor_key;
        let b = splitmix64(&mut sm);
        let mut sm = b ^ row;
        Rng([
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Fills `out` with N(mean, std) by Box-Muller in Marsaglia's polar form (two
    /// values per accepted draw, no trigonometry).
    pub(super) fn fill_normal(&mut self, out: &mut [f32], mean: f32, std: f32) {
        const SCALE: f32 = 2.0 / (1u32 << 24) as f32;
        for pair in out.chunks_mut(2) {
            let (u, v, s) = loop {
                let r = self.next_u64();
                // Two uniforms in [-1, 1) from 24 bits each.
                let u = (r >> 40) as f32 * SCALE - 1.0;
                let v = ((r >> 16) & 0xff_ffff) as f32 * SCALE - 1.0;
                let s = u * u + v * v;
                if s > 0.0 && s < 1.0 {
                    break (u, v, s);
                }
            };
            let f = (-2.0 * s.ln() / s).sqrt() * std;
            pair[0] = mean + u * f;
            if let Some(second) = pair.get_mut(1) {
                *second = mean + v * f;
            }
        }
    }
}
