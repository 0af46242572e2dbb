//! The arguments every etcd module shares — where etcd is, how to reach it, which TLS
//! files to present — declared once so the five modules cannot drift apart, and the
//! one function that turns them into a live [`Etcd`] connection.

use std::path::Path;
use std::time::Duration;

use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec};

use super::args::Reader;
use crate::etcd::{Dialer, Etcd, Route, TlsPem};
use crate::module::{TaskCx, TaskError};

pub const ENDPOINTS: ArgSpec = ArgSpec {
    required: true,
    ..ArgSpec::new(
        "endpoints",
        ArgKind::List,
        "Client URLs of existing members (`https://10.1.1.201:2379`), tried in order; the first \
that answers is the member through which the cluster is judged.",
    )
};
pub const CA: ArgSpec = ArgSpec::new(
    "ca",
    ArgKind::Path,
    "PEM of the CA that signed etcd's server certificates.",
);
pub const CERT: ArgSpec = ArgSpec::new("cert", ArgKind::Path, "PEM client certificate presented to etcd.");
pub const KEY: ArgSpec = ArgSpec::new("key", ArgKind::Path, "PEM private key of `cert`.");
pub const TLS_FILES: ArgSpec = ArgSpec {
    default: Some(ArgDefault::Str("controller")),
    ..ArgSpec::new(
        "tls-files",
        ArgKind::Enum(&["controller", "host"]),
        "Where `ca`, `cert` and `key` live: on the controller, or fetched from the task's host.",
    )
};
pub const VIA: ArgSpec = ArgSpec {
    default: Some(ArgDefault::Str("direct")),
    ..ArgSpec::new(
        "via",
        ArgKind::Enum(&["direct", "ssh"]),
        "`direct`: the controller connects to the endpoints; `ssh`: through forwarded channels of \
the task host's SSH connection (the endpoints are then as that host sees them).",
    )
};
pub const TIMEOUT: ArgSpec = ArgSpec {
    default: Some(ArgDefault::Duration(Duration::from_secs(60))),
    ..ArgSpec::new(
        "timeout",
        ArgKind::Duration,
        "How long to wait for members to start, catch up or become healthy, and to retry etcd's \
\"unhealthy cluster\" answer.",
    )
};

/// How to reach the cluster, decoded.
#[derive(Debug, Clone)]
pub struct EtcdConn {
    pub endpoints: Vec<String>,
    pub tls: Option<(String, String, String)>,
    pub tls_on_host: bool,
    pub via_ssh: bool,
}

impl EtcdConn {
    pub fn decode(a: &Reader<'_>) -> Result<EtcdConn, TaskError> {
        let endpoints: Vec<String> = a
            .opt_str_list("endpoints")?
            .unwrap_or_default()
            .iter()
            .flat_map(|e| e.split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(TaskError::bad_arg("endpoints", "give at least one client URL"));
        }
        let tls = match (a.opt_str("ca")?, a.opt_str("cert")?, a.opt_str("key")?) {
            (Some(ca), Some(cert), Some(key)) => Some((ca, cert, key)),
            (None, None, None) => None,
            _ => {
                return Err(TaskError::bad_arg(
                    "ca",
                    "give all three of `ca`, `cert` and `key`, or none",
                ));
            }
        };
        if tls.is_none() && endpoints.iter().any(|e| e.starts_with("https://")) {
            return Err(TaskError::bad_arg(
                "ca",
                "https endpoints need `ca`, `cert` and `key`",
            ));
        }
        Ok(EtcdConn {
            endpoints,
            tls,
            tls_on_host: a.word("tls-files")? == "host",
            via_ssh: a.word("via")? == "ssh",
        })
    }

    async fn read(&self, cx: &TaskCx<'_>, arg: &str, path: &str) -> Result<Vec<u8>, TaskError> {
        if self.tls_on_host {
            return cx
                .conn
                .read_file(path)
                .await?
                .ok_or_else(|| TaskError::bad_arg(arg, format!("{path} does not exist on {}", cx.host)));
        }
        // Absolute, or relative to where troupe runs, or found in the search dirs.
        let resolved = if Path::new(path).is_absolute() || Path::new(path).is_file() {
            path.to_string()
        } else {
            cx.find_file("files", path)?.display().to_string()
        };
        cx.controller
            .read_file(&resolved)
            .await?
            .ok_or_else(|| TaskError::bad_arg(arg, format!("{resolved} does not exist on the controller")))
    }

    /// A dialer along the chosen route, with the TLS material loaded.
    pub async fn dialer(&self, cx: &TaskCx<'_>) -> Result<Dialer, TaskError> {
        let tls = match &self.tls {
            Some((ca, cert, key)) => Some(TlsPem {
                ca: self.read(cx, "ca", ca).await?,
                cert: self.read(cx, "cert", cert).await?,
                key: self.read(cx, "key", key).await?,
            }),
            None => None,
        };
        let route = if self.via_ssh {
            Route::Ssh(cx.conn.clone())
        } else {
            Route::Direct
        };
        Ok(Dialer::new(tls, route)?)
    }

    /// Connect through the first endpoint that answers.
    pub async fn connect(&self, cx: &TaskCx<'_>) -> Result<Etcd, TaskError> {
        Ok(Etcd::connect(&self.endpoints, self.dialer(cx).await?).await?)
    }
}

/// `timeout`, given or its default ([`TIMEOUT`]).
pub fn timeout(a: &Reader<'_>) -> Result<Duration, TaskError> {
    a.duration("timeout")
}
