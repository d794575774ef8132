//! Modules loaded once per process: every plan of a test run that uses a variant shares
//! its library (the compiled file is cached on disk as well, by compile.rs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_kernels_cuda::Variant;

use crate::{EmuError, Module};

/// A variant, its `__CUDA_ARCH__` and whether with the specific features, or one of the modules beside the plan's (by name).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Variant(Variant, u32, bool),
    Named(&'static str),
}

fn get(
    key: Key,
    build: impl FnOnce() -> Result<Module, EmuError>,
) -> Result<Arc<Module>, EmuError> {
    static LOADED: Mutex<Option<HashMap<Key, Arc<Module>>>> = Mutex::new(None);
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    let map = loaded.get_or_insert_with(HashMap::new);
    if let Some(m) = map.get(&key) {
        return Ok(m.clone());
    }
    let m = Arc::new(build()?);
    map.insert(key, m.clone());
    Ok(m)
}

/// The module of variant `v` for `__CUDA_ARCH__` = `arch` (sm_90a with `specific`).
pub fn variant(v: &Variant, arch: u32, specific: bool) -> Result<Arc<Module>, EmuError> {
    get(Key::Variant(*v, arch, specific), || {
        Module::variant_for_arch(v, arch, specific)
    })
}

/// The argmax module.
pub fn argmax() -> Result<Arc<Module>, EmuError> {
    get(Key::Named("argmax"), Module::argmax)
}

/// The top-k module.
pub fn top_k() -> Result<Arc<Module>, EmuError> {
    get(Key::Named("top_k"), Module::top_k)
}
