//! The signals that stop a process (the facade's server and the standalone simulator alike), and
//! SIGHUP, which asks for a reload and never stops one.

/// Completes on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Watches SIGHUP for the process's life, from now: a reload request must never be fatal, and
/// without a handler SIGHUP's default action ends the process at once, calls in flight lost. Each
/// one is logged with what it reloads (`reloads`: the files that watch SIGHUP themselves), until
/// `stop`. The task, to spawn when serving starts.
pub fn watch_hangups(
    reloads: String,
    stop: tokio_util::sync::CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let hangups = signal(SignalKind::hangup());
    if let Err(error) = &hangups {
        tracing::warn!(%error, "cannot watch SIGHUP: sending it would stop the process");
    }
    async move {
        let Ok(mut hangups) = hangups else { return };
        while let Some(Some(())) = stop.run_until_cancelled(hangups.recv()).await {
            tracing::info!(reloads = %reloads, "SIGHUP received");
        }
    }
}
