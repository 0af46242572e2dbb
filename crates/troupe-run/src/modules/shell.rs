//! `shell`: like `command`, but the text is a script for `sh -c`, for when pipes,
//! redirections or `&&` are wanted. Kept a separate module so that choosing a shell
//! (and its quoting hazards) is visible in the playbook.

use async_trait::async_trait;
use troupe_dsl::registry::{ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use super::command::{GUARD_ARGS, RunSpec, apply_run, check_run};
use crate::connection::CmdProgram;
use crate::module::{Check, Module, Outcome, TaskCx, TaskError};

pub struct Shell;

static SPEC: ModuleSpec = ModuleSpec {
    name: "shell",
    summary: "Run a script with `sh -c` on the host",
    doc: "Runs the text through `sh -c`, so pipes, redirections, `&&` and variables work. Prefer \
`command` when no shell feature is needed: templated values inside a script are shell syntax. \
Same guards and registered result as `command`; reports *changed* whenever it runs.",
    args: &[
        ArgSpec {
            positional: true,
            required: true,
            ..ArgSpec::new("cmd", ArgKind::String, "The script given to `sh -c`.")
        },
        GUARD_ARGS[0],
        GUARD_ARGS[1],
        GUARD_ARGS[2],
        GUARD_ARGS[3],
        GUARD_ARGS[4],
    ],
    one_of: &[],
    example: r#"task "Snapshot etcd" {
    shell "etcdctl snapshot save /var/backups/etcd.db && ls -l /var/backups" chdir="/var/backups"
}"#,
};

#[async_trait]
impl Module for Shell {
    type Spec = RunSpec;
    type Plan = ();

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<RunSpec, TaskError> {
        let script = a.str("cmd")?;
        if script.trim().is_empty() {
            return Err(TaskError::bad_arg("cmd", "the script is empty"));
        }
        RunSpec::decode_guards(CmdProgram::Script(script), a)
    }

    async fn check(&self, spec: &RunSpec, cx: &TaskCx<'_>) -> Result<Check<()>, TaskError> {
        check_run(spec, cx).await
    }

    async fn apply(&self, spec: &RunSpec, _plan: (), cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        apply_run(spec, cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{FakeHost, args};

    #[tokio::test]
    async fn script_goes_through_sh_c_with_env_and_cwd() {
        let host = FakeHost::new();
        let out = host
            .run(
                &Shell,
                args(r#"{"cmd": "echo $A | wc -c", "env": {"A": "x y"}, "chdir": "/tmp"}"#),
            )
            .await
            .unwrap();
        assert!(out.changed);
        assert_eq!(
            host.commands(),
            [
                "cd /tmp && IFS= read -r troupe_v && troupe_v=$(printf \"$troupe_v.\") && \
              export A=\"${troupe_v%.}\" && unset troupe_v && sh -c 'echo $A | wc -c'"
            ]
        );
        // the value is not on the command line (the host reads it on stdin)
        assert!(!host.commands()[0].contains("x y"));
    }
}
