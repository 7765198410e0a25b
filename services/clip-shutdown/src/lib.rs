//! How long-running processes (`clip-retrieval back`, the operator) stop: one [`CancellationToken`], cancelled by
//! SIGTERM or Ctrl-C, or by the process itself (a failed index load). Everything that must stop selects on the
//! token or on a child of it, so there is one mechanism and one place that listens to signals.

pub use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A token cancelled when a signal arrives (spawns the listener: call inside a tokio runtime).
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = signal() => tracing::info!("signal received: shutting down"),
            _ = cancel.cancelled() => {},
        }
        cancel.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancelling_the_token_ends_the_listener_and_reaches_children() {
        let token = on_signal();
        let child = token.child_token();
        assert!(!child.is_cancelled());
        token.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), child.cancelled()).await.expect("child cancelled");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let token = on_signal();
        // Let the listener install its handler before the signal is sent.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let pid = std::process::id();
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
        tokio::time::timeout(std::time::Duration::from_secs(5), token.cancelled()).await.expect("cancelled by SIGTERM");
    }
}
