//! Every kernel variant's module builds for the host (the dialect covers what the
//! kernels use).

use kiln_backend_cuda_emu::Module;
use kiln_kernels_cuda::sources::all_variants;

#[test]
fn every_variant_builds_for_the_host() {
    if let Err(e) = kiln_backend_cuda_emu::compile::available() {
        eprintln!("skipped: {e}");
        return;
    }
    let mut failed = Vec::new();
    for v in all_variants() {
        if let Err(e) = Module::variant(&v) {
            failed.push(format!("{}: {e}", v.name()));
        }
    }
    if let Err(e) = Module::argmax() {
        failed.push(format!("argmax: {e}"));
    }
    if let Err(e) = Module::top_k() {
        failed.push(format!("top_k: {e}"));
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
