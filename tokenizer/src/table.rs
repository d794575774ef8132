//! The token texts, stored once: one buffer holding every text end to end, and an
//! open-addressing index from text to id over that buffer. A 262k-piece SentencePiece
//! vocabulary is then three allocations instead of half a million small strings, and a
//! lookup by `&str` (a slice of the text being tokenized) allocates nothing.

use std::hash::Hasher;

use super::vocab::TextHasher;

/// Marks an empty slot of the index.
const EMPTY: u32 = u32::MAX;

#[derive(Debug)]
pub(super) struct TokenTable {
    /// Every token's text, end to end.
    data: String,
    /// `ends[id]`: where token `id`'s text ends in `data` (it starts at `ends[id - 1]`).
    ends: Vec<usize>,
    /// Open addressing with linear probing: `(id, upper hash bits)` per slot, `id == EMPTY`
    /// when free. Half full at most, so a probe sequence is short.
    slots: Vec<(u32, u32)>,
}

fn hash(text: &str) -> u64 {
    let mut h = TextHasher::default();
    h.write(text.as_bytes());
    // The multiply-rotate hash leaves its low bits weak for short keys: fold the high half in.
    let x = h.finish();
    x ^ (x >> 29) ^ (x >> 47)
}

impl TokenTable {
    /// The table of `texts`, ids in order; `Err((first, second))`: two ids with the same text.
    pub fn build<'a>(
        texts: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<TokenTable, (u32, u32)> {
        let n = texts.len();
        let mut data = String::new();
        let mut ends = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        for text in texts {
            data.push_str(text);
            ends.push(data.len());
            hashes.push(hash(text));
        }
        let n_slots = (n.max(4) * 2).next_power_of_two();
        let mask = n_slots as u64 - 1;
        let mut table = TokenTable {
            data,
            ends,
            slots: vec![(EMPTY, 0); n_slots],
        };
        // Insert in order of home slot, so that the writes sweep the index once instead of
        // landing at random (at 262k tokens, cache misses were half the load time). Any
        // insertion order gives a valid linear-probing table.
        let mut order: Vec<(u32, u32, u32)> = hashes
            .iter()
            .enumerate()
            .map(|(id, &h)| ((h & mask) as u32, id as u32, (h >> 32) as u32))
            .collect();
        drop(hashes);
        order.sort_unstable();
        for (home, id, tag) in order {
            // `find`, reading the text only on a tag match: the ids come in random order.
            let mut i = home as usize;
            loop {
                let (other, other_tag) = table.slots[i];
                if other == EMPTY {
                    table.slots[i] = (id, tag);
                    break;
                }
                if other_tag == tag && table.bytes(other) == table.bytes(id) {
                    return Err((other.min(id), other.max(id)));
                }
                i = (i + 1) & (n_slots - 1);
            }
        }
        Ok(table)
    }

    /// The id of the token whose text is `text`.
    pub fn get(&self, text: &str) -> Option<u32> {
        self.find(text, hash(text)).ok()
    }

    /// The text of token `id`; empty for an id outside the table.
    pub fn text(&self, id: u32) -> &str {
        let i = id as usize;
        match self.ends.get(i) {
            Some(&end) => &self.data[if i == 0 { 0 } else { self.ends[i - 1] }..end],
            None => "",
        }
    }

    /// [`TokenTable::text`] as bytes, without checking character boundaries (for lookups).
    fn bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data.as_bytes()[start..self.ends[i]]
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Every token's text, in id order.
    pub fn texts(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.ends.len() as u32).map(|id| self.text(id))
    }

    /// `Ok(id)` of `text`, or `Err(slot)`: the free slot where it would go.
    fn find(&self, text: &str, h: u64) -> Result<u32, usize> {
        let mask = self.slots.len() - 1;
        let tag = (h >> 32) as u32;
        let mut i = h as usize & mask;
        loop {
            let (id, slot_tag) = self.slots[i];
            if id == EMPTY {
                return Err(i);
            }
            if slot_tag == tag && self.bytes(id) == text.as_bytes() {
                return Ok(id);
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_get_text_and_duplicates() {
        let words: Vec<String> = (0..1000).map(|i| format!("w{i}▁")).collect();
        let t = TokenTable::build(words.iter().map(String::as_str)).unwrap();
        assert_eq!(t.len(), 1000);
        for (i, w) in words.iter().enumerate() {
            assert_eq!(t.get(w), Some(i as u32));
            assert_eq!(t.text(i as u32), w);
        }
        assert_eq!(t.get("w1000▁"), None);
        assert_eq!(t.get(""), None);
        assert_eq!(t.text(1000), "");
        assert_eq!(t.texts().nth(3), Some("w3▁"));
        let dup = ["a", "b", "c", "b", "a"];
        let err = TokenTable::build(dup.into_iter()).unwrap_err();
        assert!(matches!(err, (0, 4) | (1, 3)), "{err:?}");
        assert!(
            TokenTable::build(std::iter::empty())
                .unwrap()
                .get("a")
                .is_none()
        );
    }
}
