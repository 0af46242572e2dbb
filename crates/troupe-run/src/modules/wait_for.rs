//! `wait-for`: block a host's play until a port opens (or closes), a path appears (or
//! goes away), or a command succeeds, as the host sees it. Ports are probed through the
//! connection's tunnel, so nothing (no `nc`) is needed on the host. Waiting changes
//! nothing, so the task reports `ok`; in `--check` it only says what it would wait for.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use crate::connection::Cmd;
use crate::module::{Change, Check, Module, Outcome, TaskCx, TaskError};

pub struct WaitFor;

const STATES: &[&str] = &["present", "absent"];

static SPEC: ModuleSpec = ModuleSpec {
    name: "wait-for",
    summary: "Wait until a port is open, a path exists, or a command succeeds on the host",
    doc: "Exactly one of `port` (`HOST:PORT` as seen from the host, e.g. `127.0.0.1:2379`), `path` \
or `command` (run with `sh -c`). `state=present` (the default) waits for the port to accept \
connections / the path to exist / the command to exit 0; `state=absent` for the opposite (not \
for `command`). The condition is checked every `interval` after an initial `delay`; the task fails \
after `timeout`. Reports `ok`, since waiting changes nothing. Registered result: `elapsed` (seconds).",
    args: &[
        ArgSpec::new(
            "port",
            ArgKind::String,
            "`HOST:PORT` to connect to from the host.",
        ),
        ArgSpec {
            stat: true,
            ..ArgSpec::new("path", ArgKind::Path, "A path on the host.")
        },
        ArgSpec::new(
            "command",
            ArgKind::String,
            "A script for `sh -c` that must exit 0.",
        ),
        ArgSpec {
            default: Some(ArgDefault::Str("present")),
            ..ArgSpec::new(
                "state",
                ArgKind::Enum(STATES),
                "Wait for the thing to be there, or gone.",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Duration(Duration::from_secs(60))),
            ..ArgSpec::new(
                "timeout",
                ArgKind::Duration,
                "Give up (and fail) after this long.",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Duration(Duration::ZERO)),
            ..ArgSpec::new(
                "delay",
                ArgKind::Duration,
                "Wait this long before the first check.",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Duration(Duration::from_millis(500))),
            ..ArgSpec::new("interval", ArgKind::Duration, "Time between checks.")
        },
    ],
    one_of: &[&["port", "path", "command"]],
    example: r#"task "etcd answers" {
    wait-for port="127.0.0.1:2379" timeout="30s"
}"#,
};

#[derive(Debug, Clone)]
pub enum Target {
    Port(String, u16),
    Path(String),
    Command(String),
}

#[derive(Debug, Clone)]
pub struct WaitSpec {
    pub target: Target,
    pub present: bool,
    pub timeout: Duration,
    pub delay: Duration,
    pub interval: Duration,
}

impl WaitSpec {
    fn describe(&self) -> String {
        match (&self.target, self.present) {
            (Target::Port(h, p), true) => format!("port {h}:{p} open"),
            (Target::Port(h, p), false) => format!("port {h}:{p} closed"),
            (Target::Path(p), true) => format!("{p} to exist"),
            (Target::Path(p), false) => format!("{p} to be gone"),
            (Target::Command(c), _) => format!("`{}` to succeed", super::command::one_line(c, 60)),
        }
    }
}

async fn probe(spec: &WaitSpec, cx: &TaskCx<'_>) -> Result<bool, TaskError> {
    let there = match &spec.target {
        Target::Port(host, port) => cx.conn.tunnel(host, *port).await.is_ok(),
        Target::Path(path) => cx.conn.stat(path).await?.is_some(),
        Target::Command(script) => cx.conn.exec(&Cmd::script(script.clone())).await?.success(),
    };
    Ok(there == spec.present)
}

#[async_trait]
impl Module for WaitFor {
    type Spec = WaitSpec;
    type Plan = ();

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<WaitSpec, TaskError> {
        let target = match (a.opt_str("port")?, a.opt_str("path")?, a.opt_str("command")?) {
            (Some(p), None, None) => {
                let (host, port) = p
                    .rsplit_once(':')
                    .ok_or_else(|| TaskError::bad_arg("port", format!("expected HOST:PORT, got {p:?}")))?;
                let port = port
                    .parse()
                    .map_err(|_| TaskError::bad_arg("port", format!("{port:?} is not a port number")))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                Target::Port(
                    if host.is_empty() {
                        "127.0.0.1".into()
                    } else {
                        host.into()
                    },
                    port,
                )
            }
            (None, Some(p), None) => Target::Path(p),
            (None, None, Some(c)) => Target::Command(c),
            _ => {
                return Err(TaskError::bad_arg(
                    "port",
                    "give exactly one of `port`, `path` or `command`",
                ));
            }
        };
        let present = a.word("state")? == "present";
        if !present && matches!(target, Target::Command(_)) {
            return Err(TaskError::bad_arg(
                "state",
                "`state=absent` does not apply to `command`",
            ));
        }
        Ok(WaitSpec {
            target,
            present,
            timeout: a.duration("timeout")?,
            delay: a.duration("delay")?,
            interval: a.duration("interval")?.max(Duration::from_millis(50)),
        })
    }

    async fn check(&self, spec: &WaitSpec, cx: &TaskCx<'_>) -> Result<Check<()>, TaskError> {
        if spec.delay.is_zero() && probe(spec, cx).await? {
            return Ok(Check::Unchanged(Outcome::ok(json!({"elapsed": 0.0}))));
        }
        Ok(Check::Change(Change::new(
            (),
            format!("wait for {}", spec.describe()),
        )))
    }

    async fn apply(&self, spec: &WaitSpec, _plan: (), cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        let start = Instant::now();
        tokio::time::sleep(spec.delay).await;
        loop {
            if probe(spec, cx).await? {
                let mut outcome = Outcome::ok(json!({"elapsed": start.elapsed().as_secs_f64()}));
                outcome.msg = Some(format!(
                    "{} after {:.1}s",
                    spec.describe(),
                    start.elapsed().as_secs_f64()
                ));
                return Ok(outcome);
            }
            if start.elapsed() >= spec.timeout {
                return Err(TaskError::failed_help(
                    format!(
                        "timed out after {:?} waiting for {}",
                        spec.timeout,
                        spec.describe()
                    ),
                    "check the service's log on the host, or raise `timeout`",
                ));
            }
            tokio::time::sleep(spec.interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{FakeHost, args, decode};

    #[tokio::test]
    async fn open_port_is_ok_without_waiting() {
        let host = FakeHost::new();
        host.open_port("127.0.0.1", 2379);
        let out = host
            .run(&WaitFor, args(r#"{"port": "127.0.0.1:2379"}"#))
            .await
            .unwrap();
        assert!(!out.changed);
    }

    #[tokio::test]
    async fn closed_port_times_out() {
        let host = FakeHost::new();
        let err = host
            .run(
                &WaitFor,
                args(r#"{"port": "127.0.0.1:2379", "timeout": "120ms", "interval": "50ms"}"#),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn absent_path_waits_for_removal() {
        let host = FakeHost::new();
        let out = host
            .run(&WaitFor, args(r#"{"path": "/run/lock", "state": "absent"}"#))
            .await
            .unwrap();
        assert!(!out.changed);
    }

    #[test]
    fn needs_exactly_one_target() {
        assert!(decode(&WaitFor, r#"{"path": "/a", "port": "x:1"}"#).is_err());
        assert!(decode(&WaitFor, r#"{"port": "nocolon"}"#).is_err());
        assert!(decode(&WaitFor, r#"{"command": "true", "state": "absent"}"#).is_err());
    }
}
