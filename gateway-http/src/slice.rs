//! A short EEVDF time slice for the connection worker threads (Linux ≥ 6.12).
//!
//! A worker woken by a socket often finds its CPU running another thread of the machine (the
//! load generator, an upstream, the SQLite writer). EEVDF lets the running thread finish its
//! slice first (about 0.75 ms × (1 + log2 CPUs) by default), and the request waits that long.
//! A worker asking for a short slice (`sched_setattr`'s `sched_runtime`, honoured for normal
//! threads since Linux 6.12) gets an earlier deadline and is picked sooner; it runs in short
//! bursts anyway. Older kernels ignore the value. Unprivileged.

/// Environment variable: the workers' slice in µs (default [`DEFAULT_SLICE_US`]; `0` leaves
/// the kernel's default; the kernel clamps to 100..=100000).
pub const SLICE_ENV: &str = "BOOCONTROL_WORKER_SLICE_US";

/// Default worker slice, µs.
pub const DEFAULT_SLICE_US: u64 = 100;

/// Environment variable: the slice in µs of the main runtime's threads when connections are
/// served by worker threads (default [`DEFAULT_MAIN_SLICE_US`]; `0` leaves the kernel's
/// default).
pub const MAIN_SLICE_ENV: &str = "BOOCONTROL_MAIN_SLICE_US";

/// Default slice of the main runtime's threads in worker mode, µs.
///
/// With workers serving every connection, the main runtime runs background work only: the
/// control plane's connectors (a followed llama-swap host sends about five events per proxied
/// request), health and inventory polls, the telemetry batch writer. A long slice keeps their
/// CPU share but lets any thread woken next to them (a proxy worker, and on a shared machine a
/// load generator or an upstream, whose slices are shorter) preempt them at once.
pub const DEFAULT_MAIN_SLICE_US: u64 = 20_000;

/// The main runtime's slice from [`MAIN_SLICE_ENV`] (`None` for `0`), or an error naming the
/// variable.
pub fn main_slice_from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<u64>, String> {
    us_from_env(get, MAIN_SLICE_ENV, DEFAULT_MAIN_SLICE_US)
}

/// The slice from [`SLICE_ENV`] (`None` for `0`), or an error naming the variable.
pub fn slice_from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<u64>, String> {
    us_from_env(get, SLICE_ENV, DEFAULT_SLICE_US)
}

/// A slice in µs from variable `name` (unset or empty: `default`; `0`: `None`).
fn us_from_env(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
) -> Result<Option<u64>, String> {
    match get(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(Some(default)),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(n) if n <= 100_000 => Ok(Some(n)),
            _ => Err(format!(
                "{name}: expected microseconds 0..=100000, got {v:?}"
            )),
        },
    }
}

/// `se.slice` (ns) of the calling thread, where the kernel shows it (`/proc/thread-self/sched`).
#[cfg(test)]
pub(crate) fn current_thread_slice() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/sched")
        .ok()?
        .lines()
        .find(|l| l.starts_with("se.slice"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// Asks for a `us` µs slice for the calling thread; false where the kernel refused.
pub fn set_current_thread_slice(us: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        let mut attr = match uapi::sched_getattr(0, 0) {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "sched_getattr failed; worker slice unchanged");
                return false;
            }
        };
        attr.sched_runtime = us.saturating_mul(1000);
        match uapi::sched_setattr(0, &attr, 0) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "sched_setattr failed; worker slice unchanged");
                false
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = us;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_value_is_checked_and_named_in_errors() {
        let none = |_: &str| None;
        assert_eq!(slice_from_env(&none), Ok(Some(DEFAULT_SLICE_US)));
        let zero = |_: &str| Some("0".to_string());
        assert_eq!(slice_from_env(&zero), Ok(None));
        let ok = |_: &str| Some(" 250 ".to_string());
        assert_eq!(slice_from_env(&ok), Ok(Some(250)));
        for bad in ["-1", "fast", "100001"] {
            let get = |_: &str| Some(bad.to_string());
            let e = slice_from_env(&get).unwrap_err();
            assert!(e.contains(SLICE_ENV) && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_main_slice_value_is_checked_and_named_in_errors() {
        let none = |_: &str| None;
        assert_eq!(main_slice_from_env(&none), Ok(Some(DEFAULT_MAIN_SLICE_US)));
        let zero = |k: &str| (k == MAIN_SLICE_ENV).then(|| "0".to_string());
        assert_eq!(main_slice_from_env(&zero), Ok(None));
        for bad in ["-5", "long", "100001"] {
            let get = |k: &str| (k == MAIN_SLICE_ENV).then(|| bad.to_string());
            let e = main_slice_from_env(&get).unwrap_err();
            assert!(e.contains(MAIN_SLICE_ENV) && e.contains(bad), "{e}");
        }
    }

    /// On a kernel with custom slices (6.12+) the thread's `se.slice` shows the value.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_gets_the_slice_it_asks_for_where_the_kernel_supports_it() {
        std::thread::spawn(|| {
            let slice = current_thread_slice;
            let Some(before) = slice() else {
                eprintln!("no se.slice in /proc/thread-self/sched: kernel without EEVDF slices");
                return;
            };
            assert!(set_current_thread_slice(250));
            let after = slice().unwrap();
            if after == before {
                eprintln!("kernel ignores custom slices (before 6.12): se.slice {before}");
            } else {
                assert_eq!(after, 250_000, "se.slice in ns");
            }
        })
        .join()
        .unwrap();
    }
}
