//! Running many admin calls at once under a limit: the one helper the doctor
//! and the collector share, so a cluster is never asked more than the limit
//! allows, whoever asks.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

/// Run `futures` with at most `limiter`'s permits at once; results in input order.
pub async fn join_limited<F, T>(
    limiter: &Arc<Semaphore>,
    futures: impl Iterator<Item = F>,
) -> Vec<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures
        .map(|future| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let _permit = limiter.acquire_owned().await;
                future.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(value) => out.push(value),
            // Tasks only panic on bugs; surface them rather than invent a value.
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn never_more_than_the_limit_and_results_in_order() {
        let limiter = Arc::new(Semaphore::new(3));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let results = join_limited(
            &limiter,
            (0..20).map(|i| {
                let (running, peak) = (running.clone(), peak.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    i
                }
            }),
        )
        .await;
        assert_eq!(results, (0..20).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }
}
