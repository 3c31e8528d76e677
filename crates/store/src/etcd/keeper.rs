//! The thread that keeps an etcd lease alive (the leadership's), and how it tells the store the
//! lease is gone.

use std::io::BufRead as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::number;

/// Keeps a lease alive until stopped.
#[derive(Debug)]
pub(super) struct Keeper {
    pub(super) lease: String,
    pub(super) stop: Arc<AtomicBool>,
    /// Set by the keeper when etcd says the lease is gone.
    pub(super) lost: Arc<AtomicBool>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // A keeper that panicked has nothing left to stop.
            let _joined = t.join();
        }
    }
}

/// What the lease keeper needs: a member to ask, the lease, how often.
pub(super) struct KeepAlive {
    pub(super) endpoints: Vec<String>,
    pub(super) http: ureq::Agent,
    pub(super) lease: String,
    pub(super) every: Duration,
    pub(super) ttl: Duration,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) lost: Arc<AtomicBool>,
}

impl KeepAlive {
    /// Renews the lease every `every` until stopped; gives up when etcd says the lease is gone (its
    /// writes fail from then on, which is what tells the controller).
    pub(super) fn run(&self) {
        let mut next = Instant::now();
        let mut renewed = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            if Instant::now() >= next {
                match self.renew() {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(lease = %self.lease, "the leadership's lease is gone");
                        self.lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(lease = %self.lease, error = %e, "renewing the leadership's lease");
                        // Unrenewed for a whole TTL, the lease has run out in etcd's eyes (or is
                        // about to): this controller must not take itself for the leader any more.
                        if renewed.elapsed() >= self.ttl {
                            self.lost.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
                next = Instant::now() + self.every;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One renewal on the first member that answers: whether the lease still lives. The gateway
    /// answers a stream; its first line is the renewal.
    fn renew(&self) -> Result<bool, String> {
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            let url = format!("{endpoint}/v3/lease/keepalive");
            match self.http.post(&url).send_json(json!({ "ID": self.lease })) {
                Ok(mut resp) => {
                    let mut line = String::new();
                    std::io::BufReader::new(resp.body_mut().as_reader())
                        .read_line(&mut line)
                        .map_err(|e| format!("{url}: {e}"))?;
                    let answer: Value =
                        serde_json::from_str(&line).map_err(|e| format!("{url}: {e}: {line}"))?;
                    return Ok(number(&answer["result"]["TTL"]) > 0);
                }
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
        Err(failures.join("; "))
    }
}
