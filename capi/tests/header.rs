//! include/kiln.h is what cbindgen generates from the crate: a change to the API that is
//! not in the header (or a hand edit of the header) fails here with the diff.
//! `KILN_BLESS=1 cargo test -p kiln-capi --test header` rewrites the header.

use std::path::Path;

fn generate() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("capi/cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

/// A unified-style line diff (longest common subsequence; the files are small).
fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out += &format!("+{:>4}: {}\n", j + 1, b[j]);
            j += 1;
        } else {
            out += &format!("-{:>4}: {}\n", i + 1, a[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn the_checked_in_header_is_what_cbindgen_generates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/kiln.h");
    let generated = generate();
    if std::env::var_os("KILN_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/kiln.h");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "capi/include/kiln.h differs from what cbindgen generates from capi/src/lib.rs \
         (- checked in, + generated); rerun with KILN_BLESS=1 to update it:\n{}",
        diff(&checked_in, &generated)
    );
}

#[test]
fn the_diff_shows_changed_lines() {
    let d = diff("a\nb\nc\n", "a\nx\nc\nd\n");
    assert_eq!(d, "+   2: x\n-   2: b\n+   4: d\n");
}
