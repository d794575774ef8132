//! The token texts, stored once: one buffer holding every text end to end, and an
//! open-addressing index from text to id over that buffer. A 262k-piece SentencePiece
//! vocabulary is then three allocations instead of half a million small strings, and a
//! lookup by `&str` (a slice of the text being tokenized) allocates nothing.

use std::hash::Hasher;

use super::vocab::TextHasher;

/// Marks an empty slot of the index.
const EMPTY: u32 = u32::MAX;

#[derive(Debug, Default)]
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
    /// An empty table expecting `n` tokens.
    pub fn with_capacity(n: usize, text_bytes: usize) -> TokenTable {
        let n_slots = (n.max(4) * 2).next_power_of_two();
        TokenTable {
            data: String::with_capacity(text_bytes),
            ends: Vec::with_capacity(n),
            slots: vec![(EMPTY, 0); n_slots],
        }
    }

    /// Append a token; returns its id, or the id of the token with the same text (which
    /// is then not added).
    pub fn push(&mut self, text: &str) -> Result<u32, u32> {
        let id = self.ends.len() as u32;
        let h = hash(text);
        let slot = match self.find(text, h) {
            Ok(existing) => return Err(existing),
            Err(free) => free,
        };
        self.data.push_str(text);
        self.ends.push(self.data.len());
        self.slots[slot] = (id, (h >> 32) as u32);
        if self.ends.len() * 2 > self.slots.len() {
            self.grow();
        }
        Ok(id)
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
            if slot_tag == tag && self.text(id) == text {
                return Ok(id);
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let n_slots = self.slots.len() * 2;
        let mask = n_slots - 1;
        let mut slots = vec![(EMPTY, 0); n_slots];
        for id in 0..self.ends.len() as u32 {
            let h = hash(self.text(id));
            let mut i = h as usize & mask;
            while slots[i].0 != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = (id, (h >> 32) as u32);
        }
        self.slots = slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_get_text_and_duplicates() {
        let mut t = TokenTable::with_capacity(2, 0);
        let words: Vec<String> = (0..1000).map(|i| format!("w{i}▁")).collect();
        for (i, w) in words.iter().enumerate() {
            assert_eq!(t.push(w), Ok(i as u32));
        }
        assert_eq!(t.push("w7▁"), Err(7));
        assert_eq!(t.len(), 1000);
        for (i, w) in words.iter().enumerate() {
            assert_eq!(t.get(w), Some(i as u32));
            assert_eq!(t.text(i as u32), w);
        }
        assert_eq!(t.get("w1000▁"), None);
        assert_eq!(t.get(""), None);
        assert_eq!(t.text(1000), "");
        assert_eq!(t.texts().nth(3), Some("w3▁"));
    }
}
