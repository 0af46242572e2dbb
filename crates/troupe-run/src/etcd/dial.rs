//! How troupe reaches etcd's client URLs: TLS material, the route (direct, or through
//! the task host's SSH connection), a [`Dialer`] that opens clients and asks for an
//! endpoint's status, and the deadline every request has ([`bounded`]), with etcd's
//! answers put in words ([`describe`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use super::tunnel::Forward;
use super::views::{EndpointStatus, hex_id};
use super::{EtcdError, human};
use crate::connection::Connection;

/// PEM contents of the CA that signed etcd's server certificates, and of the client
/// certificate and key troupe presents.
#[derive(Clone)]
pub struct TlsPem {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl TlsPem {
    /// Reject material that is plainly not PEM before etcd gets a chance to say
    /// "transport error".
    pub fn validate(&self) -> Result<(), EtcdError> {
        let has = |data: &[u8], marker: &str| String::from_utf8_lossy(data).contains(marker);
        if !has(&self.ca, "-----BEGIN CERTIFICATE-----") {
            return Err(EtcdError::Tls {
                detail: "the CA file holds no PEM certificate".into(),
            });
        }
        if !has(&self.cert, "-----BEGIN CERTIFICATE-----") {
            return Err(EtcdError::Tls {
                detail: "the cert file holds no PEM certificate".into(),
            });
        }
        if !has(&self.key, "PRIVATE KEY-----") {
            return Err(EtcdError::Tls {
                detail: "the key file holds no PEM private key".into(),
            });
        }
        Ok(())
    }
}

/// How troupe reaches etcd's client URLs.
#[derive(Clone)]
pub enum Route {
    /// From the controller, as the URLs say.
    Direct,
    /// Through forwarded channels of this host's SSH connection; URLs are as it sees them.
    Ssh(Arc<dyn Connection>),
}

/// Opens clients to etcd URLs along a [`Route`], with TLS, keeping one forwarder per
/// remote address alive for as long as the dialer lives.
pub struct Dialer {
    tls: Option<TlsPem>,
    route: Route,
    forwards: tokio::sync::Mutex<HashMap<(String, u16), Arc<Forward>>>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// A client URL split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

/// Split `https://10.1.1.201:2379` (or `[::1]:2379`, or a bare `host:port`).
pub fn split_url(url: &str) -> Result<UrlParts, String> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        (true, url)
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(stripped) = rest.strip_prefix('[') {
        let (host, after) = stripped.split_once(']').ok_or_else(|| format!("bad URL {url}"))?;
        (host.to_string(), after.strip_prefix(':').unwrap_or(""))
    } else {
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
        (host.to_string(), port)
    };
    let port = if port.is_empty() {
        2379
    } else {
        port.parse::<u16>()
            .map_err(|_| format!("bad port in URL {url}"))?
    };
    if host.is_empty() {
        return Err(format!("no host in URL {url}"));
    }
    Ok(UrlParts { https, host, port })
}

impl Dialer {
    pub fn new(tls: Option<TlsPem>, route: Route) -> Result<Dialer, EtcdError> {
        if let Some(tls) = &tls {
            tls.validate()?;
        }
        Ok(Dialer {
            tls,
            route,
            forwards: tokio::sync::Mutex::new(HashMap::new()),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
        })
    }

    /// A client bound to exactly this URL; `timeout` bounds every request (`None` for
    /// long streams such as snapshots). Connecting is lazy: errors show up on first use.
    pub async fn client(&self, url: &str, timeout: Option<Duration>) -> Result<Client, EtcdError> {
        let parts = split_url(url).map_err(|detail| EtcdError::Unreachable {
            endpoints: url.to_string(),
            detail,
        })?;
        let scheme = if parts.https { "https" } else { "http" };
        let (dial_url, server_name) = match &self.route {
            Route::Direct => (format!("{scheme}://{}", host_port(&parts.host, parts.port)), None),
            Route::Ssh(conn) => {
                let fwd = self.forward(conn, &parts.host, parts.port).await?;
                (
                    format!("{scheme}://127.0.0.1:{}", fwd.local_port),
                    Some(parts.host.clone()),
                )
            }
        };
        let mut options = ConnectOptions::new().with_connect_timeout(self.connect_timeout);
        if let Some(t) = timeout {
            options = options.with_timeout(t);
        }
        if parts.https {
            let mut tls_opts = TlsOptions::new();
            if let Some(tls) = &self.tls {
                tls_opts = tls_opts
                    .ca_certificate(Certificate::from_pem(&tls.ca))
                    .identity(Identity::from_pem(&tls.cert, &tls.key));
            }
            if let Some(name) = server_name {
                tls_opts = tls_opts.domain_name(name);
            }
            options = options.with_tls(tls_opts);
        }
        Client::connect([dial_url.as_str()], Some(options))
            .await
            .map_err(|e| EtcdError::Unreachable {
                endpoints: url.to_string(),
                detail: describe(&e),
            })
    }

    async fn forward(
        &self,
        conn: &Arc<dyn Connection>,
        host: &str,
        port: u16,
    ) -> Result<Arc<Forward>, EtcdError> {
        let mut forwards = self.forwards.lock().await;
        if let Some(f) = forwards.get(&(host.to_string(), port)) {
            return Ok(f.clone());
        }
        let f = Arc::new(Forward::start(conn.clone(), host, port).await?);
        forwards.insert((host.to_string(), port), f.clone());
        Ok(f)
    }

    /// Does anything accept TCP connections at this URL (as the route sees it)?
    pub async fn answers_tcp(&self, url: &str) -> bool {
        let Ok(parts) = split_url(url) else { return false };
        let wait = Duration::from_secs(2);
        match &self.route {
            Route::Direct => matches!(
                tokio::time::timeout(
                    wait,
                    tokio::net::TcpStream::connect(host_port(&parts.host, parts.port))
                )
                .await,
                Ok(Ok(_))
            ),
            Route::Ssh(conn) => {
                matches!(
                    tokio::time::timeout(wait, conn.tunnel(&parts.host, parts.port)).await,
                    Ok(Ok(_))
                )
            }
        }
    }

    /// Status of one member, asked at its own client URL.
    pub async fn status_of(&self, url: &str) -> Result<EndpointStatus, EtcdError> {
        let mut client = self.client(url, Some(self.request_timeout)).await?;
        let st = bounded(self.request_timeout, url, "status", client.status()).await?;
        Ok(EndpointStatus {
            endpoint: url.to_string(),
            member_id: hex_id(st.header().map(|h| h.member_id()).unwrap_or(0)),
            cluster_id: hex_id(st.header().map(|h| h.cluster_id()).unwrap_or(0)),
            version: st.version().to_string(),
            db_size: st.db_size(),
            leader: hex_id(st.leader()),
            raft_index: st.raft_index(),
            raft_term: st.raft_term(),
            raft_applied_index: st.raft_applied_index(),
            is_learner: st.is_learner(),
            errors: st.errors().to_vec(),
        })
    }

    /// Read a key at one member; `serializable` answers from that member's own copy
    /// (proves the data reached it), otherwise the read needs the quorum.
    pub async fn get_from(
        &self,
        url: &str,
        key: &str,
        serializable: bool,
    ) -> Result<Option<Vec<u8>>, EtcdError> {
        let mut client = self.client(url, Some(self.request_timeout)).await?;
        let opts = if serializable {
            Some(GetOptions::new().with_serializable())
        } else {
            None
        };
        let resp = bounded(self.request_timeout, url, "get", client.get(key, opts)).await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Await `fut` for at most `limit`, turning both a timeout and an etcd error into an
/// [`EtcdError::Request`] about `endpoint`.
pub(super) async fn bounded<T>(
    limit: Duration,
    endpoint: &str,
    op: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let unreachable = matches!(e, etcd_client::Error::TransportError(_))
                || matches!(&e, etcd_client::Error::GRpcStatus(s) if format!("{:?}", s.code()) == "Unavailable");
            let detail = describe(&e);
            if unreachable {
                Err(EtcdError::Unreachable {
                    endpoints: endpoint.to_string(),
                    detail,
                })
            } else {
                Err(EtcdError::Request {
                    op: op.to_string(),
                    endpoint: endpoint.to_string(),
                    detail,
                })
            }
        }
        Err(_) => Err(EtcdError::Unreachable {
            endpoints: endpoint.to_string(),
            detail: format!("no answer to `{op}` within {}", human(limit)),
        }),
    }
}

/// etcd's answer in words: the gRPC message without the `etcdserver: ` prefix, or the
/// transport failure with its causes.
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let msg = s.message().trim_start_matches("etcdserver: ").to_string();
            let mut text = if msg.is_empty() {
                format!("{:?}", s.code())
            } else {
                msg
            };
            let mut source = std::error::Error::source(s);
            while let Some(cause) = source {
                let c = cause.to_string();
                if !text.contains(&c) {
                    text.push_str(": ");
                    text.push_str(&c);
                }
                source = cause.source();
            }
            text
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let c = cause.to_string();
                if !text.contains(&c) {
                    text.push_str(": ");
                    text.push_str(&c);
                }
                source = cause.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("https://10.1.1.201:2379").unwrap(),
            UrlParts {
                https: true,
                host: "10.1.1.201".into(),
                port: 2379
            }
        );
        assert_eq!(
            split_url("http://[::1]:22379/").unwrap(),
            UrlParts {
                https: false,
                host: "::1".into(),
                port: 22379
            }
        );
        assert_eq!(split_url("127.0.1.1").unwrap().port, 2379);
        assert!(split_url("https://:2379").is_err());
        assert!(split_url("https://h:99999").is_err());
    }
}
