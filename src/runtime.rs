//! The per-process tokio runtime and pooled HTTP client.
//!
//! A tokio runtime created before `fork` is unusable in the child (its
//! worker threads do not exist there), and dropping it hangs. So both live
//! in a [`ProcessLocal`] (src/process.rs): built lazily on first use, never
//! at load time, once per process; a forked child builds its own and leaks
//! the parent's.

use crate::cancel::Cancel;
use crate::error::{Error, ErrorKind, Result};
use crate::process::{self, ProcessLocal};
use std::future::Future;
use std::time::{Duration, Instant};

/// Connecting to the metadata server or IAM should take milliseconds; this
/// only bounds a black-holed address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Keep idle connections for a minute: signBlob traffic is bursty, and a
/// new TLS handshake costs more than the call itself.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const WORKER_THREADS: usize = 2;

struct State {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    /// Never through a proxy: for the metadata server (see [`direct_http`]).
    direct: reqwest::Client,
}

static STATE: ProcessLocal<State> = ProcessLocal::new();

fn build() -> Result<State> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("gcs-signer-worker")
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("could not start the signer's tokio runtime: {e}")))?;
    let client = |builder: reqwest::ClientBuilder| {
        builder
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::internal(format!("could not build the HTTP client: {e}")))
    };
    let http = client(reqwest::Client::builder())?;
    let direct = client(reqwest::Client::builder().no_proxy())?;
    Ok(State {
        runtime,
        http,
        direct,
    })
}

/// This process's runtime and client, built on first use.
fn current() -> Result<&'static State> {
    process::verify();
    STATE.get_or_try_init(|_parent| build())
}

/// The process's pooled keep-alive HTTP client (honours `https_proxy` and
/// friends, for IAM and OAuth behind an egress proxy).
pub fn http() -> Result<reqwest::Client> {
    Ok(current()?.http.clone())
}

/// A client that never uses a proxy, whatever `http_proxy` and `NO_PROXY`
/// say: the metadata server is link-local (or an emulator on loopback), and
/// a proxy would be handed the request for the access token, or answer it.
pub fn direct_http() -> Result<reqwest::Client> {
    Ok(current()?.direct.clone())
}

/// Runs `fut` on this process's runtime in the background. If the runtime
/// cannot be built the future is dropped, and whoever waits for its result
/// sees the dropped channel.
pub fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    if let Ok(state) = current() {
        state.runtime.spawn(fut);
    }
}

/// Blocks the calling OS thread (a Ruby thread without the GVL) until `fut`
/// finishes, `cancel` trips, or `deadline` passes. Safe to call from many
/// threads at once; must not be called from inside the runtime.
pub fn block_on<T>(
    fut: impl Future<Output = Result<T>> + Send,
    cancel: &Cancel,
    deadline: Option<Instant>,
) -> Result<T> {
    if cancel.is_cancelled() {
        return Err(interrupted());
    }
    let started = Instant::now();
    if let Some(d) = deadline {
        if d <= started {
            return Err(timed_out(Duration::ZERO));
        }
    }
    let handle = current()?.runtime.handle();
    handle.block_on(async {
        let expiry = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(interrupted()),
            r = fut => r,
            _ = expiry => Err(timed_out(deadline.map_or(Duration::ZERO, |d| d - started))),
        }
    })
}

fn interrupted() -> Error {
    Error::new(
        ErrorKind::Interrupted,
        "the signer call was interrupted (Timeout, Thread#kill or a signal) before it finished",
    )
}

fn timed_out(budget: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "the signer call did not finish within its {:.1} s deadline (the `timeout:` option); \
             raise `timeout:` if the metadata server or IAM is slow to answer",
            budget.as_secs_f64()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn block_on_returns_the_result() {
        let v = block_on(async { Ok(41 + 1) }, &Cancel::new(), None).unwrap();
        assert_eq!(v, 42);
    }

    #[test]
    fn deadline_ends_a_slow_future_with_timeout() {
        let deadline = Instant::now() + Duration::from_millis(50);
        let err = block_on(
            async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            },
            &Cancel::new(),
            Some(deadline),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(err.message().contains("`timeout:`"), "{}", err.message());
    }

    #[test]
    fn cancel_from_another_thread_interrupts() {
        let cancel = Arc::new(Cancel::new());
        let c2 = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c2.cancel();
        });
        let started = Instant::now();
        let err = block_on(
            async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            },
            &cancel,
            None,
        )
        .unwrap_err();
        t.join().unwrap();
        assert_eq!(err.kind(), ErrorKind::Interrupted);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn many_threads_share_one_runtime() {
        let threads: Vec<_> = (0..16)
            .map(|i| {
                std::thread::spawn(move || {
                    block_on(
                        async move {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            Ok(i)
                        },
                        &Cancel::new(),
                        None,
                    )
                })
            })
            .collect();
        let sum: i32 = threads
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .sum();
        assert_eq!(sum, (0..16).sum::<i32>());
    }
}
