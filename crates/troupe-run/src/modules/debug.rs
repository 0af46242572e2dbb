//! `debug`: print a message or a variable for each host, the quickest way to see what
//! a registered result or a templated value really is. Never touches the host.

use async_trait::async_trait;
use serde_json::json;
use troupe_dsl::registry::{ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use crate::module::{Check, Module, Outcome, TaskCx, TaskError};

pub struct Debug;

static SPEC: ModuleSpec = ModuleSpec {
    name: "debug",
    summary: "Print a message or the value of a variable",
    doc: "`msg` prints a (templated) message; `var` evaluates an expression, typically a variable \
name such as `etcd_members` or `result.stdout_lines`, and prints its value as JSON. Always `ok`, \
never contacts the host. Values of `no-log` tasks are masked like every other output.",
    args: &[
        ArgSpec {
            positional: true,
            ..ArgSpec::new("msg", ArgKind::String, "The message to print.")
        },
        ArgSpec::new(
            "var",
            ArgKind::String,
            "An expression (without braces) whose value is printed.",
        ),
    ],
    one_of: &[&["msg", "var"]],
    example: r#"task "Show the members" {
    debug var="members.stdout_lines"
}"#,
};

#[derive(Debug, Clone)]
pub enum DebugSpec {
    Msg(String),
    Var(String),
}

#[async_trait]
impl Module for Debug {
    type Spec = DebugSpec;
    type Plan = ();

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<DebugSpec, TaskError> {
        match (a.opt_str("msg")?, a.opt_str("var")?) {
            (Some(m), None) => Ok(DebugSpec::Msg(m)),
            (None, Some(v)) => Ok(DebugSpec::Var(v)),
            _ => Err(TaskError::bad_arg("msg", "give exactly one of `msg` or `var`")),
        }
    }

    async fn check(&self, spec: &DebugSpec, cx: &TaskCx<'_>) -> Result<Check<()>, TaskError> {
        let (data, msg) = match spec {
            DebugSpec::Msg(m) => (json!({"msg": m}), m.clone()),
            DebugSpec::Var(expr) => {
                let value = (cx.eval)(expr)?;
                let shown = match &value {
                    serde_json::Value::String(s) => s.clone(),
                    other => serde_json::to_string(other).unwrap_or_default(),
                };
                (json!({ expr.clone(): value }), format!("{expr} = {shown}"))
            }
        };
        let mut outcome = Outcome::ok(data);
        outcome.msg = Some(msg);
        Ok(Check::Unchanged(outcome))
    }

    async fn apply(&self, _spec: &DebugSpec, _plan: (), _cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        Err(TaskError::failed("internal: debug never plans a change"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{FakeHost, args};

    #[tokio::test]
    async fn prints_without_commands() {
        let host = FakeHost::new();
        let out = host.run(&Debug, args(r#"{"msg": "hi"}"#)).await.unwrap();
        assert_eq!(out.msg.as_deref(), Some("hi"));
        let out = host.run(&Debug, args(r#"{"var": "x"}"#)).await.unwrap();
        assert_eq!(out.msg.as_deref(), Some(r#"x = {"expr":"x"}"#));
        assert!(host.commands().is_empty());
    }
}
