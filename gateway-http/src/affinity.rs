//! Pinning connection workers to CPUs (thread-per-core), opt-in.
//!
//! With [`crate::GatewayConfig::pin_workers`] (`--pin-workers`) and one worker per CPU
//! ([`crate::default_workers`]), worker `i` is pinned to the `i`-th CPU the process may run on.
//! Its connections, upstream pools and caches then stay on one CPU.
//!
//! It pays when the machine runs little besides the gateway. On a 2-vCPU VM with a light
//! upstream (nginx static, `benches/ab/two_gateways.sh`, both orders): c=64 req/s +20–22 %,
//! c=16 p99 −8 % and −22 %. It costs when a busy local upstream shares the CPUs: a pinned
//! worker cannot leave a CPU the upstream keeps busy. With fleet-sim as the upstream on the same
//! VM (`gateway_load --upstreams sim`, two runs each): tiny completions at c=64 went from 0.70–0.77
//! to 0.56–0.58 of nginx's req/s, and 256-token streams at c=64 from 399–417 to 281–285
//! streams/s. So it is off by default.
//!
//! Pinning only happens when the worker count equals the number of allowed CPUs: with fewer
//! workers (`--workers 1` on a big machine) or more (a container whose CPU quota is below its
//! CPU set), the scheduler keeps placing the threads.

/// Worker `i`'s CPU for `workers` workers when the process may run on `allowed` (ascending):
/// `allowed` itself when there is exactly one worker per allowed CPU, else `None` (no pinning).
pub fn plan(workers: usize, allowed: &[usize]) -> Option<Vec<usize>> {
    (workers > 0 && workers == allowed.len()).then(|| allowed.to_vec())
}

/// The CPUs the calling thread may run on, ascending (`None` where unknown or not Linux).
pub fn allowed_cpus() -> Option<Vec<usize>> {
    #[cfg(target_os = "linux")]
    {
        const BITS: usize = usize::BITS as usize;
        // 4096 CPUs; the kernel refuses a mask shorter than its own (EINVAL).
        let mut mask = [0usize; 4096 / BITS];
        if let Err(e) = uapi::sched_getaffinity(0, &mut mask) {
            tracing::debug!(error = %e, "sched_getaffinity failed; workers not pinned");
            return None;
        }
        Some(
            (0..mask.len() * BITS)
                .filter(|c| mask[c / BITS] >> (c % BITS) & 1 == 1)
                .collect(),
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Pins the calling thread to `cpu`; false where the kernel refused (or not Linux).
pub fn pin_current_thread(cpu: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        const BITS: usize = usize::BITS as usize;
        let mut mask = vec![0usize; cpu / BITS + 1];
        mask[cpu / BITS] |= 1 << (cpu % BITS);
        match uapi::sched_setaffinity(0, &mask) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(cpu, error = %e, "sched_setaffinity failed; worker not pinned");
                false
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_per_allowed_cpu_is_pinned_in_order_and_other_counts_are_not() {
        assert_eq!(plan(2, &[0, 1]), Some(vec![0, 1]));
        // A CPU set with holes (taskset -c 2,5,7): the workers take those CPUs.
        assert_eq!(plan(3, &[2, 5, 7]), Some(vec![2, 5, 7]));
        assert_eq!(plan(1, &[0, 1]), None);
        assert_eq!(plan(4, &[0, 1]), None);
        assert_eq!(plan(0, &[]), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_pinned_to_an_allowed_cpu_may_run_only_there() {
        let allowed = allowed_cpus().expect("sched_getaffinity works on Linux");
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        let seen = std::thread::spawn(move || {
            assert!(pin_current_thread(last));
            allowed_cpus()
        })
        .join()
        .unwrap();
        assert_eq!(seen, Some(vec![last]));
        // The pin was the spawned thread's own: this thread keeps the whole set.
        assert_eq!(allowed_cpus(), Some(allowed));
    }
}
