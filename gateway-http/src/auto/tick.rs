//! One shared tick for `auto:*` attempts that watch their model's load state.
//!
//! An attempt waiting for its first byte looks at its model's live state now and then: a
//! llama-swap host that starts loading the model suspends the first-byte budget (see
//! `Failover::on_model_loading`). A timer per attempt did that before, and it cost a syscall per
//! request: tokio wakes its own driver (an `eventfd` write and a spurious `epoll_wait`) whenever
//! a timer is armed sooner than every other one, which a 50 ms poll nearly always is.
//!
//! Here one task ticks for every waiting attempt of the router ([`StateTick::subscribe`] gives
//! a [`tokio::sync::watch::Receiver`] that changes on each tick). The task goes dormant after
//! [`IDLE_TICKS`] ticks with nobody subscribed (an idle gateway does not wake 20 times a
//! second) and is woken by the next subscriber; when its runtime goes away, the next subscriber
//! starts a new one on its own runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::SeqCst, fence};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Ticks with nobody subscribed before the ticker goes dormant.
pub const IDLE_TICKS: u32 = 20;

const NONE: u8 = 0;
const RUNNING: u8 = 1;
const DORMANT: u8 = 2;

/// A shared periodic tick (see the module docs).
#[derive(Debug)]
pub struct StateTick {
    period: Duration,
    tx: watch::Sender<u64>,
    state: AtomicU8,
    wake: Notify,
}

impl StateTick {
    /// A tick every `period`.
    pub fn new(period: Duration) -> Arc<Self> {
        Arc::new(Self {
            period,
            tx: watch::Sender::new(0),
            state: AtomicU8::new(NONE),
            wake: Notify::new(),
        })
    }

    /// A receiver whose `changed()` resolves at the next tick. Starts or wakes the ticker when
    /// needed (on the current tokio runtime); outside a runtime the receiver never changes.
    pub fn subscribe(self: &Arc<Self>) -> watch::Receiver<u64> {
        let rx = self.tx.subscribe();
        // The subscription is counted before the state is read; a ticker going dormant stores
        // its state before it reads the count (both fenced): one of the two sees the other.
        fence(SeqCst);
        match self.state.load(SeqCst) {
            RUNNING => {}
            DORMANT => {
                if self.cas(DORMANT, RUNNING) {
                    self.wake.notify_one();
                }
            }
            _ => {
                if let Ok(rt) = tokio::runtime::Handle::try_current()
                    && self.cas(NONE, RUNNING)
                {
                    rt.spawn(ticker(self.clone()));
                }
            }
        }
        rx
    }

    /// Ticks sent so far.
    pub fn ticks(&self) -> u64 {
        *self.tx.borrow()
    }

    /// Whether the ticker task is currently sleeping for lack of subscribers.
    pub fn is_dormant(&self) -> bool {
        self.state.load(SeqCst) == DORMANT
    }

    fn cas(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, SeqCst, SeqCst)
            .is_ok()
    }
}

/// Marks the ticker gone when its task ends (its runtime shut down): the next subscriber
/// starts another.
struct Gone(Arc<StateTick>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.state.store(NONE, SeqCst);
    }
}

async fn ticker(t: Arc<StateTick>) {
    let gone = Gone(t);
    let t = &gone.0;
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + t.period, t.period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle = 0;
    loop {
        every.tick().await;
        t.tx.send_modify(|n| *n += 1);
        if t.tx.receiver_count() > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        // Sleep until a subscriber wakes us. The waiter is registered before the state says
        // dormant, so a subscriber's `notify_one` cannot be missed; a subscriber that came
        // in between saw `RUNNING` and counts as a receiver, checked after the store.
        let woken = t.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        t.state.store(DORMANT, SeqCst);
        fence(SeqCst);
        if t.tx.receiver_count() == 0 || !t.cas(DORMANT, RUNNING) {
            woken.await;
        }
        idle = 0;
        every.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_ticks_and_an_idle_ticker_sleeps_until_the_next_one() {
        let t = StateTick::new(Duration::from_millis(5));
        let mut rx = t.subscribe();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("a tick")
            .unwrap();
        assert!(t.ticks() >= 1);
        drop(rx);
        // Nobody listens: after IDLE_TICKS ticks the ticker sleeps and stops counting.
        let mut slept = false;
        for _ in 0..500 {
            if t.is_dormant() {
                slept = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(slept, "the ticker went dormant");
        let before = t.ticks();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(t.ticks(), before, "a dormant ticker does not tick");
        // The next subscriber wakes it.
        let mut rx = t.subscribe();
        assert!(!t.is_dormant());
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("ticks again after a wake")
            .unwrap();
    }

    #[test]
    fn a_ticker_whose_runtime_ended_is_restarted_by_the_next_subscriber() {
        let t = StateTick::new(Duration::from_millis(5));
        for _ in 0..2 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut rx = t.subscribe();
                tokio::time::timeout(Duration::from_secs(5), rx.changed())
                    .await
                    .expect("ticks on this runtime")
                    .unwrap();
            });
            drop(rt);
        }
    }

    #[test]
    fn outside_a_runtime_subscribing_does_not_panic() {
        let t = StateTick::new(Duration::from_millis(5));
        let rx = t.subscribe();
        assert_eq!(*rx.borrow(), 0);
    }
}
