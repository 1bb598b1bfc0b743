//! Singleflight: concurrent requests for one key share one run of the work that answers
//! it.
//!
//! The first caller for a key starts the work as its own task, so that it finishes (and
//! its result is stored) even if that caller goes away; every caller, the first
//! included, waits for the result. The key is released when the work ends, so a caller
//! arriving after that starts a new run (which usually finds the stored result).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// Each run's result (`None` until it ends), by key.
type Running<T> = Arc<Mutex<HashMap<Vec<u8>, watch::Receiver<Option<T>>>>>;

/// The runs in flight, by key.
#[derive(Debug)]
pub struct Flights<T> {
    running: Running<T>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self {
            running: Arc::default(),
        }
    }
}

/// How a caller got its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// It started the run.
    Led,
    /// It waited on a run another caller started.
    Waited,
}

/// The run ended without a result (its task panicked or the runtime is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared upstream request was abandoned")]
pub struct Abandoned;

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// The result of `work` for `key`, run once for all concurrent callers.
    pub async fn run<F, Fut>(&self, key: Vec<u8>, work: F) -> (Result<T, Abandoned>, Joined)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (mut result, joined) = {
            let mut running = self.running.lock();
            if let Some(result) = running.get(&key) {
                (result.clone(), Joined::Waited)
            } else {
                let (tx, rx) = watch::channel(None);
                running.insert(key.clone(), rx.clone());
                let release = Release {
                    running: self.running.clone(),
                    key,
                };
                let fut = work();
                tokio::spawn(async move {
                    let value = fut.await;
                    // Released before the result is sent: a caller that sees the result
                    // and asks again starts a new run rather than joining this one.
                    drop(release);
                    let _ = tx.send(Some(value));
                });
                (rx, Joined::Led)
            }
        };
        let value = match result.wait_for(Option::is_some).await {
            Ok(value) => value.clone().ok_or(Abandoned),
            Err(_) => Err(Abandoned),
        };
        (value, joined)
    }

    /// Runs in flight now.
    pub fn len(&self) -> usize {
        self.running.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes a run's key when the run ends, however it ends (a panic included).
struct Release<T> {
    running: Running<T>,
    key: Vec<u8>,
}

impl<T> Drop for Release<T> {
    fn drop(&mut self) {
        self.running.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn fails() -> u8 {
        panic!("the work failed")
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_run_and_later_ones_start_another() {
        let flights = Arc::new(Flights::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for _ in 0..100 {
            let (flights, runs) = (flights.clone(), runs.clone());
            callers.push(tokio::spawn(async move {
                flights
                    .run(b"k".to_vec(), move || async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 1
                    })
                    .await
            }));
        }
        let mut led = 0;
        for caller in callers {
            let (value, joined) = caller.await.expect("caller");
            assert_eq!(value, Ok(1));
            led += usize::from(joined == Joined::Led);
        }
        assert_eq!(led, 1);
        assert!(flights.is_empty());
        let runs2 = runs.clone();
        let (again, joined) = flights
            .run(b"k".to_vec(), move || async move {
                runs2.fetch_add(1, Ordering::SeqCst) + 1
            })
            .await;
        assert_eq!((again, joined), (Ok(2), Joined::Led));
    }

    #[tokio::test]
    async fn the_run_finishes_when_its_first_caller_goes_away_and_a_panic_releases_the_key() {
        let flights = Arc::new(Flights::<u8>::default());
        let first = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(b"k".to_vec(), || async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        7
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        let (value, joined) = flights.run(b"k".to_vec(), || async { 9 }).await;
        assert_eq!((value, joined), (Ok(7), Joined::Waited));
        let (value, _) = flights.run(b"p".to_vec(), || async { fails() }).await;
        assert_eq!(value, Err(Abandoned));
        assert!(flights.is_empty());
    }
}
