//! Size budgets of the release binaries (edge deployment): the `kiln` binary with every
//! backend at most 15 MB, the CPU-only and backend-less builds and the C library at most
//! 5 MB. Building release inside a test is too slow, so this checks what is there:
//! target/release/kiln and the copies `scripts/binary-size.sh` leaves in target/size/
//! (CI runs the script first); a file that is absent shows as ignored, with the reason.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kiln_testkit::{Outcome, fail, pass, skip, test};

const MB: u64 = 1_000_000;

/// (file under target/, budget in bytes, what it is)
const BUDGETS: &[(&str, u64, &str)] = &[
    (
        "release/kiln",
        15 * MB,
        "target/release/kiln (as last built)",
    ),
    ("size/kiln-full", 15 * MB, "kiln with every backend"),
    ("size/kiln-cpu", 5 * MB, "kiln with the CPU backend only"),
    ("size/kiln-ref", 5 * MB, "kiln without a compiled backend"),
    ("size/libkiln.so", 5 * MB, "the C library (shared)"),
];

/// target/, from this test binary's path (target/<profile>/deps/<test>).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .expect("the test binary is in target/<profile>/deps")
}

/// One test per budget: a binary that is not built shows as ignored, with the reason.
fn main() -> ExitCode {
    let target = target_dir();
    let trials = BUDGETS
        .iter()
        .map(|&(file, budget, what)| {
            let path = target.join(file);
            test(
                format!("size_of_{}", file.replace(['/', '.', '-'], "_")),
                move || check(&path, budget, what),
            )
        })
        .collect();
    kiln_testkit::run(trials)
}

fn check(path: &Path, budget: u64, what: &str) -> Outcome {
    let Ok(meta) = std::fs::metadata(path) else {
        return skip(format!(
            "{what}: {} is not built (scripts/binary-size.sh builds it)",
            path.display()
        ));
    };
    let size = meta.len();
    if kiln_testkit::verbose() {
        println!(
            "{what}: {size} bytes ({:.2} MB, budget {} MB)",
            size as f64 / MB as f64,
            budget / MB
        );
    }
    if size > budget {
        return fail(format!(
            "{what} ({}) is {size} bytes, over its budget of {budget}",
            path.display()
        ));
    }
    pass()
}
