//! Stop sequences over streamed text: text that could be the start of a stop sequence is
//! held back until it is known not to be one, so a client never sees part of a stop.

/// Finds the first stop sequence in a stream of text pieces.
#[derive(Clone, Debug, Default)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    /// Everything generated so far.
    text: String,
    /// Bytes of `text` already released.
    sent: usize,
}

impl StopMatcher {
    pub(crate) fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            text: String::new(),
            sent: 0,
        }
    }

    /// Adds a piece; returns the text now safe to release and whether a stop sequence was
    /// found (the text released then ends just before it, and nothing more will come).
    pub(crate) fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (piece.to_string(), false);
        }
        self.text.push_str(piece);
        // A stop sequence found now ends in the new text; it may start in held-back text.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let from = floor_char_boundary(&self.text, self.sent.saturating_sub(longest));
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        if let Some(at) = found {
            let out = self.text[self.sent.min(at)..at].to_string();
            self.sent = self.text.len();
            return (out, true);
        }
        let hold = self
            .stops
            .iter()
            .map(|s| held_prefix(&self.text[self.sent..], s))
            .max()
            .unwrap_or(0);
        let end = self.text.len() - hold;
        let out = self.text[self.sent..end].to_string();
        self.sent = end;
        (out, false)
    }

    /// The held-back text, released at the end of generation.
    pub(crate) fn flush(&mut self) -> String {
        let out = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        out
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `stop`.
fn held_prefix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&k| stop.is_char_boundary(k) && text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        for p in pieces {
            let (text, stopped) = m.push(p);
            out.push(text);
            if stopped {
                return (out, true, String::new());
            }
        }
        (out, false, m.flush())
    }

    #[test]
    fn no_stops_passes_text_through() {
        assert_eq!(
            run(&[], &["a", "b"]),
            (vec!["a".into(), "b".into()], false, String::new())
        );
    }

    #[test]
    fn a_stop_split_across_pieces_is_never_shown() {
        let (out, stopped, _) = run(&["END"], &["abc E", "N", "D more"]);
        assert!(stopped);
        assert_eq!(out, ["abc ", "", ""]);
    }

    #[test]
    fn a_false_start_is_released_when_it_stops_matching() {
        let (out, stopped, tail) = run(&["END"], &["xE", "Nx", "E"]);
        assert!(!stopped);
        assert_eq!(out, ["x", "ENx", ""]);
        assert_eq!(tail, "E");
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        let (out, stopped, _) = run(&["world", "lo"], &["hello world"]);
        assert!(stopped);
        assert_eq!(out, ["hel"]);
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let (out, stopped, tail) = run(&["é!"], &["café", "?"]);
        assert!(!stopped);
        assert_eq!(out, ["caf", "é?"]);
        assert_eq!(tail, "");
        let (out, stopped, _) = run(&["é!"], &["café", "!x"]);
        assert!(stopped);
        assert_eq!(out, ["caf", ""]);
    }
}
