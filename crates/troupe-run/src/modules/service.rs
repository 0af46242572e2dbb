//! `service`: start, stop, restart, reload and enable long-running services under
//! systemd, or under runit where there is no systemd (the lab, containers). One command
//! reads the manager, state and enablement; one more applies the plan and, for runit,
//! waits until the supervisor reports the service running, so the next task can rely
//! on it.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use crate::connection::Cmd;
use crate::connection::shell::{quote, quote_argv};
use crate::module::{Change, Check, Module, Outcome, TaskCx, TaskError};

pub struct Service;

const STATES: &[&str] = &["started", "stopped", "restarted", "reloaded"];
const MANAGERS: &[&str] = &["auto", "systemd", "runit"];

static SPEC: ModuleSpec = ModuleSpec {
    name: "service",
    summary: "Start, stop, restart, reload or enable a service (systemd or runit)",
    doc: "`manager=auto` uses systemd when `/run/systemd/system` exists, else runit when `sv` is \
installed. Under runit a service is a folder `SV-DIR/NAME` (with its `run` script) linked into \
`SERVICE-DIR/NAME`; enabling creates the link, and every action waits (up to `timeout`) until \
`sv` reports the requested state. `restarted` and `reloaded` always report a change (use them in \
handlers); `started`/`stopped`/`enabled` change only what differs. Registered result: `name`, \
`manager`, `state`, `enabled`, `status`.",
    args: &[
        ArgSpec {
            required: true,
            positional: true,
            ..ArgSpec::new("name", ArgKind::String, "Service (unit) name.")
        },
        ArgSpec::new(
            "state",
            ArgKind::Enum(STATES),
            "Desired state; absent leaves the state alone.",
        ),
        ArgSpec::new(
            "enabled",
            ArgKind::Bool,
            "Whether the service starts at boot (runit: is linked into the service dir).",
        ),
        ArgSpec {
            default: Some(ArgDefault::Str("auto")),
            ..ArgSpec::new("manager", ArgKind::Enum(MANAGERS), "Service manager to use.")
        },
        ArgSpec {
            default: Some(ArgDefault::Bool(false)),
            ..ArgSpec::new(
                "daemon-reload",
                ArgKind::Bool,
                "systemd: run `systemctl daemon-reload` before acting (after a unit file changed).",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Duration(Duration::from_secs(30))),
            ..ArgSpec::new(
                "timeout",
                ArgKind::Duration,
                "How long to wait for the service to reach the state.",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Str("/etc/sv")),
            ..ArgSpec::new("sv-dir", ArgKind::Path, "runit: where service definitions live.")
        },
        ArgSpec {
            default: Some(ArgDefault::Str("/etc/service")),
            ..ArgSpec::new(
                "service-dir",
                ArgKind::Path,
                "runit: the folder runsvdir watches.",
            )
        },
    ],
    one_of: &[],
    example: r#"handler "restart etcd" {
    service "etcd" state="restarted" enabled=#true
}"#,
};

#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub state: Option<String>,
    pub enabled: Option<bool>,
    pub manager: String,
    pub daemon_reload: bool,
    pub timeout: Duration,
    pub sv_dir: String,
    pub service_dir: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Runit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    DaemonReload,
    Enable,
    Disable,
    Start,
    Stop,
    Restart,
    Reload,
}

pub struct Plan {
    manager: Manager,
    actions: Vec<Action>,
    /// The service was not defined when checked.
    undefined: bool,
}

/// What the check command learned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub manager: Option<Manager>,
    pub exists: bool,
    pub running: bool,
    pub enabled: bool,
    pub status: String,
}

impl ServiceSpec {
    fn sv_path(&self) -> String {
        format!("{}/{}", self.sv_dir.trim_end_matches('/'), self.name)
    }
    fn link_path(&self) -> String {
        format!("{}/{}", self.service_dir.trim_end_matches('/'), self.name)
    }
}

/// One `sh -c` script printing `key=value` lines: manager, exists, enabled, status.
fn probe_script(spec: &ServiceSpec) -> String {
    let n = quote(&spec.name);
    let sv = quote(&spec.sv_path());
    let link = quote(&spec.link_path());
    format!(
        r#"m={m}
if [ "$m" = auto ]; then
  if [ -d /run/systemd/system ]; then m=systemd
  elif command -v sv >/dev/null 2>&1; then m=runit
  else echo manager=none; exit 0; fi
fi
echo manager=$m
if [ "$m" = systemd ]; then
  echo "status=$(systemctl is-active -- {n} 2>/dev/null)"
  echo "enabled=$(systemctl is-enabled -- {n} 2>/dev/null)"
  if systemctl cat -- {n} >/dev/null 2>&1; then echo exists=yes; fi
else
  if [ -d {sv} ]; then echo exists=yes; fi
  if [ -e {link} ]; then echo enabled=enabled; else echo enabled=disabled; fi
  echo "status=$(sv status {link} 2>/dev/null | head -n 1)"
fi
"#,
        m = quote(&spec.manager),
    )
}

pub fn parse_probe(out: &str) -> Observed {
    let mut obs = Observed::default();
    for line in out.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "manager" => {
                obs.manager = match v {
                    "systemd" => Some(Manager::Systemd),
                    "runit" => Some(Manager::Runit),
                    _ => None,
                }
            }
            "exists" => obs.exists = v == "yes",
            "enabled" => obs.enabled = matches!(v, "enabled" | "enabled-runtime" | "static" | "alias"),
            "status" => obs.status = v.to_string(),
            _ => {}
        }
    }
    obs.running = match obs.manager {
        Some(Manager::Systemd) => matches!(obs.status.as_str(), "active" | "reloading" | "activating"),
        Some(Manager::Runit) => obs.status.starts_with("run:"),
        None => false,
    };
    obs
}

/// Decide the actions from what was observed.
pub fn plan(spec: &ServiceSpec, obs: &Observed) -> Result<Vec<Action>, TaskError> {
    let manager = obs.manager.ok_or_else(|| {
        TaskError::failed_help(
            format!("no service manager found for {}", spec.name),
            "the host has neither systemd (/run/systemd/system) nor runit (`sv`); install runit or set `manager`",
        )
    })?;
    if !obs.exists {
        // Not defined (yet): nothing to stop or disable; anything else is planned as
        // for a stopped, disabled service, and `apply` insists that by then an earlier
        // task defined it (in `--check` that task only said it would).
        let wants_up = matches!(spec.state.as_deref(), Some("started" | "restarted" | "reloaded"))
            || spec.enabled == Some(true);
        if !wants_up {
            return Ok(Vec::new());
        }
        let blank = Observed {
            manager: obs.manager,
            exists: true,
            running: false,
            enabled: false,
            status: String::new(),
        };
        return plan(spec, &blank);
    }
    let mut actions = Vec::new();
    let needs_running = matches!(spec.state.as_deref(), Some("started" | "restarted" | "reloaded"));
    match (manager, spec.enabled) {
        (Manager::Runit, Some(false)) if needs_running => {
            return Err(TaskError::bad_arg(
                "enabled",
                "under runit a service runs only while enabled (linked)",
            ));
        }
        (_, Some(true)) if !obs.enabled => actions.push(Action::Enable),
        (_, Some(false)) if obs.enabled => actions.push(Action::Disable),
        (Manager::Runit, None) if needs_running && !obs.enabled => actions.push(Action::Enable),
        _ => {}
    }
    match spec.state.as_deref() {
        Some("started") if !obs.running => actions.push(Action::Start),
        Some("stopped") if obs.running && !actions.contains(&Action::Disable) => actions.push(Action::Stop),
        Some("restarted") => actions.push(if obs.running {
            Action::Restart
        } else {
            Action::Start
        }),
        Some("reloaded") => actions.push(if obs.running {
            Action::Reload
        } else {
            Action::Start
        }),
        _ => {}
    }
    if spec.daemon_reload && manager == Manager::Systemd && !actions.is_empty() {
        actions.insert(0, Action::DaemonReload);
    }
    Ok(actions)
}

fn undefined(spec: &ServiceSpec, manager: Manager) -> TaskError {
    let help = match manager {
        Manager::Systemd => format!("install or write the unit file for {} first", spec.name),
        Manager::Runit => format!(
            "create {}/run first (a `template` or `copy` task before this one)",
            spec.sv_path()
        ),
    };
    TaskError::failed_help(format!("service {} is not defined on the host", spec.name), help)
}

/// The actions as one `sh -c` script that stops at the first failure.
fn apply_script(spec: &ServiceSpec, manager: Manager, actions: &[Action]) -> String {
    let secs = spec.timeout.as_secs().max(1).to_string();
    let mut parts: Vec<String> = vec!["set -e".into()];
    let link = spec.link_path();
    for action in actions {
        match manager {
            Manager::Systemd => {
                let verb = match action {
                    Action::DaemonReload => {
                        parts.push("systemctl daemon-reload".into());
                        continue;
                    }
                    Action::Enable => "enable",
                    Action::Disable => "disable",
                    Action::Start => "start",
                    Action::Stop => "stop",
                    Action::Restart => "restart",
                    Action::Reload => "reload",
                };
                parts.push(quote_argv(&["systemctl", verb, "--", &spec.name]));
            }
            Manager::Runit => match action {
                Action::DaemonReload => {}
                Action::Enable => {
                    parts.push(quote_argv(&["ln", "-sfn", &spec.sv_path(), &link]));
                    // runsvdir scans every 5 s; wait for its runsv to answer.
                    let tries = spec.timeout.as_millis() / 100;
                    parts.push(format!(
                        "i=0; until sv status {l} >/dev/null 2>&1; do i=$((i+1)); if [ $i -gt {tries} ]; then printf 'runsvdir did not pick up %s (is runsvdir running on %s?)\\n' {l} {d} >&2; exit 1; fi; sleep 0.1; done",
                        l = quote(&link),
                        d = quote(&spec.service_dir),
                    ));
                }
                Action::Disable => {
                    parts.push(quote_argv(&["sv", "-w", &secs, "-v", "down", &link]) + " >/dev/null || true");
                    parts.push(quote_argv(&["rm", "-f", "--", &link]));
                }
                // Not `sv -v up`: sv checks every 420 ms whether the service came up.
                // Polling every 50 ms saves most of that on every start.
                Action::Start => {
                    let tries = spec.timeout.as_millis() / 50;
                    parts.push(format!(
                        "sv up {l}; i=0; until sv status {l} 2>/dev/null | grep -q '^run: '; do i=$((i+1)); if [ $i -gt {tries} ]; then printf 'timeout: %s\\n' \"$(sv status {l} 2>&1)\" >&2; exit 1; fi; sleep 0.05; done",
                        l = quote(&link),
                    ));
                }
                Action::Stop => parts.push(quote_argv(&["sv", "-w", &secs, "-v", "down", &link])),
                Action::Restart => parts.push(quote_argv(&["sv", "-w", &secs, "-v", "restart", &link])),
                Action::Reload => parts.push(quote_argv(&["sv", "hup", &link])),
            },
        }
    }
    parts.join("\n")
}

fn describe(actions: &[Action], name: &str) -> String {
    let words: Vec<&str> = actions
        .iter()
        .filter(|a| **a != Action::DaemonReload)
        .map(|a| match a {
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Reload => "reload",
            Action::DaemonReload => "",
        })
        .collect();
    format!("{} {name}", words.join(" + "))
}

async fn probe(spec: &ServiceSpec, cx: &TaskCx<'_>) -> Result<Observed, TaskError> {
    let out = cx.conn.exec(&Cmd::script(probe_script(spec)).internal()).await?;
    if !out.success() {
        return Err(TaskError::failed(format!(
            "cannot read the state of {}: {}",
            spec.name,
            out.stderr_str().trim_end()
        )));
    }
    Ok(parse_probe(&out.stdout_str()))
}

fn data(spec: &ServiceSpec, obs: &Observed) -> serde_json::Value {
    json!({
        "name": spec.name,
        "manager": match obs.manager { Some(Manager::Systemd) => "systemd", Some(Manager::Runit) => "runit", None => "none" },
        "state": if obs.running { "started" } else { "stopped" },
        "enabled": obs.enabled,
        "status": obs.status,
    })
}

#[async_trait]
impl Module for Service {
    type Spec = ServiceSpec;
    type Plan = Plan;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<ServiceSpec, TaskError> {
        let state = a.opt_word("state")?.map(String::from);
        let spec = ServiceSpec {
            name: a.str("name")?,
            state,
            enabled: a.opt_bool("enabled")?,
            manager: a.word("manager")?.to_string(),
            daemon_reload: a.bool("daemon-reload")?,
            timeout: a.duration("timeout")?,
            sv_dir: a.str("sv-dir")?,
            service_dir: a.str("service-dir")?,
        };
        if spec.name.is_empty() || spec.name.contains('/') {
            return Err(TaskError::bad_arg("name", "must be a plain service name"));
        }
        if spec.state.is_none() && spec.enabled.is_none() {
            return Err(TaskError::bad_arg("state", "give `state`, `enabled`, or both"));
        }
        Ok(spec)
    }

    async fn check(&self, spec: &ServiceSpec, cx: &TaskCx<'_>) -> Result<Check<Plan>, TaskError> {
        let obs = probe(spec, cx).await?;
        let actions = plan(spec, &obs)?;
        if actions.is_empty() {
            return Ok(Check::Unchanged(Outcome::ok(data(spec, &obs))));
        }
        let mut summary = describe(&actions, &spec.name);
        if !obs.exists {
            summary.push_str(" (not defined yet)");
        }
        let manager = obs.manager.expect("plan() checked the manager");
        Ok(Check::Change(Change::new(
            Plan {
                manager,
                actions,
                undefined: !obs.exists,
            },
            summary,
        )))
    }

    async fn apply(&self, spec: &ServiceSpec, plan: Plan, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        if plan.undefined && !probe(spec, cx).await?.exists {
            return Err(undefined(spec, plan.manager));
        }
        let mut cmd = Cmd::script(apply_script(spec, plan.manager, &plan.actions));
        cmd.timeout = Some(spec.timeout * 2 + Duration::from_secs(10));
        let out = cx.conn.exec(&cmd).await?;
        if !out.success() {
            let detail = format!("{}{}", out.stdout_str(), out.stderr_str());
            return Err(TaskError::failed_help(
                format!(
                    "{} failed: {}",
                    describe(&plan.actions, &spec.name),
                    super::command::tail_lines(detail.trim_end(), 10)
                ),
                match plan.manager {
                    Manager::Systemd => format!("see `journalctl -u {}` on the host", spec.name),
                    Manager::Runit => format!(
                        "see `sv status {}` and the service's log on the host",
                        spec.link_path()
                    ),
                },
            ));
        }
        // The supervisor may report a restart done while its process is still coming
        // back ("down: 0s, normally up, want up"): poll until it runs or time is up.
        let wants_running = matches!(spec.state.as_deref(), Some("started" | "restarted" | "reloaded"));
        let deadline = std::time::Instant::now() + spec.timeout;
        let mut obs = probe(spec, cx).await?;
        while wants_running && !obs.running && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            obs = probe(spec, cx).await?;
        }
        if wants_running && !obs.running {
            return Err(TaskError::failed(format!(
                "{} is not running after {}: {}",
                spec.name,
                describe(&plan.actions, &spec.name),
                obs.status
            )));
        }
        Ok(Outcome::changed(data(spec, &obs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{FakeHost, args, decode};

    fn spec(json: &str) -> ServiceSpec {
        decode(&Service, json).unwrap()
    }

    fn runit(running: bool, enabled: bool) -> Observed {
        Observed {
            manager: Some(Manager::Runit),
            exists: true,
            running,
            enabled,
            status: if running {
                "run: /etc/service/x: (pid 1) 5s".into()
            } else {
                "down: /etc/service/x: 1s".into()
            },
        }
    }

    #[test]
    fn parses_runit_and_systemd_probes() {
        let o = parse_probe(
            "manager=runit\nexists=yes\nenabled=enabled\nstatus=run: /etc/service/etcd: (pid 42) 10s\n",
        );
        assert_eq!(o.manager, Some(Manager::Runit));
        assert!(o.running && o.enabled && o.exists);
        let o = parse_probe("manager=systemd\nstatus=inactive\nenabled=disabled\nexists=yes\n");
        assert_eq!(o.manager, Some(Manager::Systemd));
        assert!(!o.running && !o.enabled);
    }

    #[test]
    fn runit_start_enables_first() {
        let s = spec(r#"{"name": "etcd", "state": "started"}"#);
        assert_eq!(
            plan(&s, &runit(false, false)).unwrap(),
            [Action::Enable, Action::Start]
        );
        assert_eq!(plan(&s, &runit(true, true)).unwrap(), []);
        let s = spec(r#"{"name": "etcd", "state": "restarted"}"#);
        assert_eq!(plan(&s, &runit(true, true)).unwrap(), [Action::Restart]);
        let s = spec(r#"{"name": "etcd", "state": "stopped"}"#);
        assert_eq!(plan(&s, &runit(true, true)).unwrap(), [Action::Stop]);
    }

    #[test]
    fn undefined_service_is_planned_as_stopped() {
        let obs = Observed {
            exists: false,
            ..runit(false, false)
        };
        let s = spec(r#"{"name": "etcd", "state": "started"}"#);
        assert_eq!(plan(&s, &obs).unwrap(), [Action::Enable, Action::Start]);
        let s = spec(r#"{"name": "etcd", "state": "stopped", "enabled": false}"#);
        assert_eq!(plan(&s, &obs).unwrap(), []);
    }

    #[tokio::test]
    async fn undefined_service_fails_at_apply_with_help() {
        let host = FakeHost::new();
        host.answer("sh -c 'm=", 0, "manager=runit\nenabled=disabled\nstatus=\n", "");
        let a = args(r#"{"name": "etcd", "state": "started"}"#);
        let check = host.check(&Service, a.clone()).await.unwrap().unwrap();
        assert_eq!(check.0, "enable + start etcd (not defined yet)");
        let err = host.run(&Service, a).await.unwrap_err();
        assert!(format!("{err:?}").contains("/etc/sv/etcd/run"), "{err:?}");
    }

    #[tokio::test]
    async fn apply_waits_through_sv() {
        let host = FakeHost::new();
        host.answer(
            "sh -c 'm=",
            0,
            "manager=runit\nexists=yes\nenabled=disabled\nstatus=\n",
            "",
        );
        let check = host
            .check(&Service, args(r#"{"name": "etcd", "state": "started"}"#))
            .await
            .unwrap();
        assert_eq!(check.unwrap().0, "enable + start etcd");
        let cmds = host.commands();
        assert_eq!(cmds.len(), 1, "one round trip to check");
    }
}
