//! A local TCP port that leads to a `host:port` as a remote host sees it.
//!
//! `etcd-client` (tonic underneath) only knows how to dial TCP addresses, and often
//! the only way to a control-plane node's etcd is its SSH connection. So we listen on
//! `127.0.0.1:0`, and pipe every accepted connection into a fresh
//! [`Connection::tunnel`] channel. TLS still runs end to end between the client and
//! etcd: the forwarder only moves encrypted bytes.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::EtcdError;
use crate::connection::Connection;

/// A running forwarder; dropping it stops accepting (open channels finish on their own).
pub struct Forward {
    pub local_port: u16,
    task: JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Forward {
    /// Listen on a fresh loopback port whose connections reach `target_host:target_port`
    /// through `conn`.
    pub async fn start(
        conn: Arc<dyn Connection>,
        target_host: &str,
        target_port: u16,
    ) -> Result<Forward, EtcdError> {
        let err = |detail: String| EtcdError::Tunnel {
            host: conn.host().to_string(),
            target: format!("{target_host}:{target_port}"),
            detail,
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| err(e.to_string()))?;
        let local_port = listener.local_addr().map_err(|e| err(e.to_string()))?.port();
        let target_host = target_host.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let conn = conn.clone();
                let target_host = target_host.clone();
                tokio::spawn(async move {
                    match conn.tunnel(&target_host, target_port).await {
                        Ok(mut channel) => {
                            let _ = tokio::io::copy_bidirectional(&mut socket, &mut channel).await;
                        }
                        Err(e) => {
                            tracing::warn!(
                                host = conn.host(),
                                target = %format!("{target_host}:{target_port}"),
                                "forwarded channel failed: {e}"
                            );
                        }
                    }
                });
            }
        });
        Ok(Forward { local_port, task })
    }
}
