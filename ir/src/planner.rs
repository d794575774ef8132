//! The memory planner: one arena for all activations of a step, with liveness-based
//! reuse. Buffers whose lifetimes overlap never share bytes.

/// Arena offsets are multiples of this (a cache line; enough for any vector load).
pub const ARENA_ALIGNMENT: usize = 64;

/// A buffer to place: its size and the launches during which it is live (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferRequest {
    pub bytes: usize,
    pub first_use: usize,
    pub last_use: usize,
}

/// Where the buffers went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaLayout {
    /// Byte offset of each request, in request order.
    pub offsets: Vec<usize>,
    /// Arena size: the end of the furthest buffer.
    pub arena_bytes: usize,
    /// What one buffer per request would take.
    pub naive_bytes: usize,
}

fn align(x: usize) -> usize {
    x.div_ceil(ARENA_ALIGNMENT) * ARENA_ALIGNMENT
}

fn overlaps(a: &BufferRequest, b: &BufferRequest) -> bool {
    a.first_use <= b.last_use && b.first_use <= a.last_use
}

/// Greedy placement, largest buffers first, each at the lowest offset that clears every
/// already-placed buffer live at the same time.
pub fn plan_arena(requests: &[BufferRequest]) -> ArenaLayout {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| {
        (
            std::cmp::Reverse(requests[i].bytes),
            requests[i].first_use,
            i,
        )
    });
    let mut offsets = vec![0; requests.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut arena_bytes = 0;
    for &i in &order {
        let req = &requests[i];
        let size = align(req.bytes);
        // Intervals taken by conflicting buffers, by start.
        let mut taken: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| overlaps(req, &requests[j]))
            .map(|&j| (offsets[j], offsets[j] + align(requests[j].bytes)))
            .collect();
        taken.sort_unstable();
        let mut offset = 0;
        for (start, end) in taken {
            if offset + size <= start {
                break;
            }
            offset = offset.max(end);
        }
        offsets[i] = offset;
        arena_bytes = arena_bytes.max(offset + size);
        placed.push(i);
    }
    ArenaLayout {
        offsets,
        arena_bytes,
        naive_bytes: requests.iter().map(|r| align(r.bytes)).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn requests() -> impl Strategy<Value = Vec<BufferRequest>> {
        prop::collection::vec((1usize..5000, 0usize..40, 0usize..10), 0..60).prop_map(|v| {
            v.into_iter()
                .map(|(bytes, first_use, len)| BufferRequest {
                    bytes,
                    first_use,
                    last_use: first_use + len,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn live_buffers_never_share_bytes(reqs in requests()) {
            let layout = plan_arena(&reqs);
            for i in 0..reqs.len() {
                prop_assert_eq!(layout.offsets[i] % ARENA_ALIGNMENT, 0);
                prop_assert!(layout.offsets[i] + reqs[i].bytes <= layout.arena_bytes);
                for j in i + 1..reqs.len() {
                    if overlaps(&reqs[i], &reqs[j]) {
                        let (a, b) = (layout.offsets[i], layout.offsets[j]);
                        let disjoint = a + reqs[i].bytes <= b || b + reqs[j].bytes <= a;
                        prop_assert!(disjoint, "buffers {} and {} overlap", i, j);
                    }
                }
            }
            // Never worse than no reuse, never better than the busiest moment.
            prop_assert!(layout.arena_bytes <= layout.naive_bytes);
            let busiest = (0..50).map(|t| reqs.iter()
                .filter(|r| r.first_use <= t && t <= r.last_use)
                .map(|r| align(r.bytes)).sum::<usize>()).max().unwrap_or(0);
            prop_assert!(layout.arena_bytes >= busiest);
        }
    }

    #[test]
    fn disjoint_lifetimes_share_one_slot() {
        let reqs = [
            BufferRequest {
                bytes: 1000,
                first_use: 0,
                last_use: 1,
            },
            BufferRequest {
                bytes: 1000,
                first_use: 2,
                last_use: 3,
            },
            BufferRequest {
                bytes: 1000,
                first_use: 4,
                last_use: 5,
            },
        ];
        let layout = plan_arena(&reqs);
        assert_eq!(layout.arena_bytes, 1024);
        assert_eq!(layout.naive_bytes, 3072);
    }
}
