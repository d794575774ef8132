//! Choosing a device among an API's adapters, the same way in every backend: hardware
//! GPUs first (discrete, then integrated), then virtual ones, then others, then CPU
//! implementations (lavapipe, WARP), which are taken only when asked for, so that the
//! engine's choice of the best backend never lands on a software rasterizer.

use kiln_ir::backend::BackendError;

/// What kind of device an adapter is, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceKind {
    DiscreteGpu,
    IntegratedGpu,
    VirtualGpu,
    Other,
    /// A CPU implementation of the API.
    Cpu,
}

/// The best of `candidates`, each (kind, name, device); a CPU implementation only with
/// `allow_cpu`. `none` is why there is no device when there are no candidates; `allow`
/// says how a user allows a CPU implementation.
pub fn choose<T>(
    mut candidates: Vec<(DeviceKind, String, T)>,
    allow_cpu: bool,
    backend: &'static str,
    none: impl FnOnce() -> String,
    allow: &str,
) -> Result<T, BackendError> {
    let no_device = |reason| BackendError::NoDevice { backend, reason };
    candidates.sort_by_key(|c| c.0);
    let Some((kind, name, best)) = candidates.into_iter().next() else {
        return Err(no_device(none()));
    };
    if kind == DeviceKind::Cpu && !allow_cpu {
        return Err(no_device(format!(
            "no GPU, only {name} (a CPU implementation); {allow} to use it"
        )));
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_come_first_and_cpus_only_when_allowed() {
        let kinds = |ks: &[DeviceKind]| -> Vec<(DeviceKind, String, usize)> {
            ks.iter()
                .enumerate()
                .map(|(i, &k)| (k, format!("d{i}"), i))
                .collect()
        };
        let none = || "nothing".to_string();
        let all = kinds(&[
            DeviceKind::Cpu,
            DeviceKind::IntegratedGpu,
            DeviceKind::DiscreteGpu,
        ]);
        assert_eq!(choose(all, false, "t", none, "allow").unwrap(), 2);
        let cpu = kinds(&[DeviceKind::Cpu]);
        assert_eq!(choose(cpu.clone(), true, "t", none, "allow").unwrap(), 0);
        let err = choose(cpu, false, "t", none, "allow")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("only d0 (a CPU implementation); allow"),
            "{err}"
        );
        let err = choose(kinds(&[]), true, "t", none, "allow").unwrap_err();
        assert!(err.to_string().contains("nothing"));
    }
}
