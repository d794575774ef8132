//! The CUDA backend on any machine: opening it never panics. Without a driver library,
//! NVRTC or a device it is `BackendError::NoDevice` with the reason (cudarc alone would
//! panic when libcuda is absent: the backend checks the libraries first).

use kiln_backend_cuda::{CudaBackend, CudaOptions};
use kiln_ir::backend::{Backend, BackendError};

#[test]
fn opening_without_a_device_is_no_device_not_a_panic() {
    match CudaBackend::new() {
        Ok(b) => println!("a CUDA device: {:?}", b.properties()),
        Err(BackendError::NoDevice { backend, reason }) => {
            assert_eq!(backend, "cuda");
            assert!(!reason.is_empty());
            println!("no CUDA device, as expected here: {reason}");
        }
        Err(e) => panic!("opening the CUDA backend failed with {e}, not NoDevice"),
    }
}

#[test]
fn a_missing_ordinal_is_no_device() {
    let options = CudaOptions {
        device: 4096,
        ..CudaOptions::default()
    };
    match CudaBackend::with_options(options) {
        Err(BackendError::NoDevice { .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("device 4096 opened"),
    }
}
