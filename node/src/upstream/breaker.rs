//! A circuit breaker per upstream: after `failureThreshold` failures in a row the
//! upstream is not called for `openFor`, and requests that need it fail at once (502,
//! or stale if allowed). Then one request probes it: a success closes the circuit, a
//! failure opens it again.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; everyone else fails fast until it answers.
    Probing,
}

/// Refused: the circuit is open for this much longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub retry_in: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a request may go to the upstream now.
    pub fn admit(&self) -> Result<(), Open> {
        let mut state = self.state.lock();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = State::Probing;
                    Ok(())
                } else {
                    Err(Open {
                        retry_in: until - now,
                    })
                }
            }
            State::Probing => Err(Open {
                retry_in: Duration::ZERO,
            }),
        }
    }

    pub fn succeeded(&self) {
        *self.state.lock() = State::Closed { failures: 0 };
    }

    pub fn failed(&self) {
        let mut state = self.state.lock();
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::Open { .. } | State::Probing => self.threshold,
        };
        *state = if failures >= self.threshold {
            State::Open {
                until: Instant::now() + self.open_for,
            }
        } else {
            State::Closed { failures }
        };
    }

    /// Whether requests are refused now (open or probing).
    pub fn is_open(&self) -> bool {
        !matches!(*self.state.lock(), State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_probes_once_and_closes_on_success() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        breaker.failed();
        breaker.failed();
        assert!(breaker.admit().is_ok(), "two failures of three");
        breaker.succeeded();
        breaker.failed();
        breaker.failed();
        assert!(breaker.admit().is_ok(), "a success resets the count");
        breaker.failed();
        let open = breaker.admit().expect_err("open");
        assert_eq!(open.retry_in, Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(breaker.admit().is_ok(), "the probe");
        assert!(breaker.admit().is_err(), "only one probe");
        breaker.failed();
        assert!(breaker.admit().is_err(), "a failed probe opens it again");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(breaker.admit().is_ok());
        breaker.succeeded();
        assert!(breaker.admit().is_ok() && !breaker.is_open());
    }
}
