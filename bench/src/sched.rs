//! The lane scheduler: runs jobs (one per target) with fleet-core's [`Lanes`] rule — local
//! hosts serially per host, cloud providers in parallel within a budget, different providers
//! side by side. Jobs on one provider start in the order given.

use std::future::Future;

use boo_fleet_core::{Lane, Lanes};
use futures::stream::{FuturesUnordered, StreamExt};

/// One job for [`run_lanes`].
#[derive(Debug, Clone)]
pub struct LaneJob {
    /// The provider the job runs against.
    pub provider: String,
    /// Its lane.
    pub lane: Lane,
    /// The provider's own cloud budget, if any.
    pub budget: Option<u32>,
}

/// Runs `run(i)` for every job `i`, admitting each through [`Lanes`] (default cloud budget
/// `cloud_budget`). `queued(i)` is called for a job that has to wait. Returns outputs in job
/// order.
pub async fn run_lanes<T, F, Fut>(
    jobs: &[LaneJob],
    cloud_budget: u32,
    mut queued: impl FnMut(usize),
    run: F,
) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T>,
{
    let mut lanes = Lanes::new(cloud_budget);
    let mut pending: Vec<usize> = (0..jobs.len()).collect();
    let mut out: Vec<Option<T>> = (0..jobs.len()).map(|_| None).collect();
    let mut running = FuturesUnordered::new();
    let mut told = vec![false; jobs.len()];
    loop {
        // Start every admissible job, keeping per-provider order.
        let mut blocked: Vec<&str> = Vec::new();
        pending.retain(|&i| {
            let j = &jobs[i];
            if blocked.contains(&j.provider.as_str()) {
                return true;
            }
            if lanes.try_start(&j.provider, j.lane, j.budget) {
                let f = run(i);
                running.push(async move { (i, f.await) });
                false
            } else {
                blocked.push(&j.provider);
                true
            }
        });
        for &i in &pending {
            if !told[i] {
                told[i] = true;
                queued(i);
            }
        }
        match running.next().await {
            Some((i, v)) => {
                lanes.finish(&jobs[i].provider);
                out[i] = Some(v);
            }
            None => break,
        }
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    fn job(p: &str, lane: Lane, budget: Option<u32>) -> LaneJob {
        LaneJob {
            provider: p.into(),
            lane,
            budget,
        }
    }

    /// Runs jobs that each take 20 ms and records, per provider, the peak of jobs at once.
    async fn peaks(jobs: &[LaneJob], budget: u32) -> (Vec<(String, u32)>, u32, Vec<usize>) {
        // (per provider: (now, peak)), total now, total peak
        type Counts = (std::collections::BTreeMap<String, (u32, u32)>, u32, u32);
        let state: Mutex<Counts> = Mutex::new(Default::default());
        let order = Mutex::new(Vec::new());
        let mut queued = Vec::new();
        let out = run_lanes(
            jobs,
            budget,
            |i| queued.push(i),
            |i| {
                let p = jobs[i].provider.clone();
                let state = &state;
                let order = &order;
                async move {
                    {
                        let mut g = state.lock().unwrap();
                        let e = g.0.entry(p.clone()).or_default();
                        e.0 += 1;
                        e.1 = e.1.max(e.0);
                        g.1 += 1;
                        g.2 = g.2.max(g.1);
                    }
                    order.lock().unwrap().push(i);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let mut g = state.lock().unwrap();
                    g.0.get_mut(&p).unwrap().0 -= 1;
                    g.1 -= 1;
                    i * 10
                }
            },
        )
        .await;
        assert_eq!(out, (0..jobs.len()).map(|i| i * 10).collect::<Vec<_>>());
        let g = state.lock().unwrap();
        let per: Vec<(String, u32)> = g.0.iter().map(|(k, v)| (k.clone(), v.1)).collect();
        let _ = order;
        (per, g.2, queued)
    }

    #[tokio::test]
    async fn local_serial_cloud_parallel_within_budget() {
        let jobs = vec![
            job("gpu-a", Lane::Local, None),
            job("gpu-a", Lane::Local, None),
            job("gpu-a", Lane::Local, None),
            job("gpu-b", Lane::Local, None),
            job("openai", Lane::Cloud, Some(2)),
            job("openai", Lane::Cloud, Some(2)),
            job("openai", Lane::Cloud, Some(2)),
            job("anthropic", Lane::Cloud, None),
            job("anthropic", Lane::Cloud, None),
            job("anthropic", Lane::Cloud, None),
        ];
        let (per, total, queued) = peaks(&jobs, 3).await;
        let get = |p: &str| per.iter().find(|(k, _)| k == p).unwrap().1;
        assert_eq!(get("gpu-a"), 1, "local host must run serially");
        assert_eq!(get("gpu-b"), 1);
        assert_eq!(get("openai"), 2, "cloud budget of the provider");
        assert_eq!(get("anthropic"), 3, "default cloud budget");
        // Different providers overlap: gpu-a, gpu-b, 2 openai, 3 anthropic at once.
        assert_eq!(total, 7);
        assert_eq!(queued, vec![1, 2, 6]);
    }

    #[tokio::test]
    async fn per_provider_order_is_kept() {
        let jobs = vec![
            job("h", Lane::Local, None),
            job("h", Lane::Local, None),
            job("h", Lane::Local, None),
        ];
        let order = Mutex::new(Vec::new());
        run_lanes(
            &jobs,
            1,
            |_| {},
            |i| {
                let order = &order;
                async move {
                    order.lock().unwrap().push(i);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
        )
        .await;
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    }
}
