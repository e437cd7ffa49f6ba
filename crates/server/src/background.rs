//! Tasks that run beside a service's gRPC server (its metrics endpoint, upkeep loops) and stop
//! with it: aborted and awaited, so that nothing they hold outlives the service.

use std::future::Future;
use std::time::Duration;

use prometheus::Registry;
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Runs `tick` now and then every `period`; a tick that overruns skips the ones it missed.
    pub fn every<F, Fut>(&mut self, period: Duration, mut tick: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        self.spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                tick().await;
            }
        });
    }

    /// Serves `registry` on `GET /metrics` at `addr`, when there is one; the bind error is
    /// returned at once.
    pub async fn metrics(&mut self, addr: Option<&str>, registry: Registry) -> anyhow::Result<()> {
        if let Some(addr) = addr {
            self.tasks.push(crate::metrics::spawn(addr, registry).await?);
        }
        Ok(())
    }

    /// Stops every task and waits until each has let go of what it held.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn ticks_run_until_stopped_and_release_what_they_hold() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(());
        let mut background = Background::new();
        let (t, h) = (ticks.clone(), held.clone());
        background.every(Duration::from_millis(10), move || {
            let (t, _h) = (t.clone(), h.clone());
            async move {
                t.fetch_add(1, Ordering::Relaxed);
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        background.stop().await;
        let after_stop = ticks.load(Ordering::Relaxed);
        assert!(after_stop >= 2, "{after_stop} ticks");
        assert_eq!(Arc::strong_count(&held), 1, "the stopped task dropped its handle");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ticks.load(Ordering::Relaxed), after_stop, "no tick after stop");
    }
}
