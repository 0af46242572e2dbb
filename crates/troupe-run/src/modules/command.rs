//! `command`: run a program with arguments, no shell in between, so nothing in a
//! templated argument can be interpreted as shell syntax. `creates`/`removes` make it
//! idempotent the way an operator's guard would ("only if the file is missing"). The
//! `shell` module shares this code and differs only in passing a script to `sh -c`.

use async_trait::async_trait;
use serde_json::json;
use troupe_dsl::registry::{ArgKind, ArgSpec, ModuleSpec};

use super::args::{self, Reader};
use crate::connection::{Cmd, CmdProgram};
use crate::module::{Change, Check, Module, Outcome, TaskCx, TaskError};

pub struct Command;

/// Arguments shared by `command` and `shell` after the program itself.
pub(crate) const GUARD_ARGS: [ArgSpec; 5] = [
    ArgSpec {
        stat: true,
        ..ArgSpec::new(
            "creates",
            ArgKind::Path,
            "Skip the command when this path exists on the host.",
        )
    },
    ArgSpec {
        stat: true,
        ..ArgSpec::new(
            "removes",
            ArgKind::Path,
            "Run the command only when this path exists on the host.",
        )
    },
    ArgSpec::new("chdir", ArgKind::Path, "Directory to run the command in."),
    ArgSpec::new(
        "env",
        ArgKind::Map,
        "Environment variables to set, as a map (`env { NAME \"value\" }`); names are shell names. The values reach the command through its stdin, read before the command starts, never on a command line that `ps` shows.",
    ),
    ArgSpec::new(
        "stdin",
        ArgKind::String,
        "Text fed to the command's standard input.",
    ),
];

static SPEC: ModuleSpec = ModuleSpec {
    name: "command",
    summary: "Run a program with arguments on the host, without a shell",
    doc: "Runs a program directly (no shell: `$VAR`, `|`, `>` and globs are passed literally). \
Give the command line as the first value (split into words like a shell would, honouring quotes) \
or as an `argv` list. The task reports *changed* whenever the command runs; use `creates`/`removes` \
to make it idempotent, or `changed-when` to judge from the output. A non-zero exit code fails the \
task (see `failed-when`, `ignore-errors`). Registered result: `rc`, `stdout`, `stderr`, \
`stdout_lines`, `cmd`. Only the last 512 KiB of each of stdout and stderr is kept (from a line \
start): a command that prints more registers that tail, and `stdout_dropped_bytes`, \
`stdout_dropped_lines` (and the same for `stderr`) say how much was left out.",
    args: &[
        ArgSpec {
            positional: true,
            ..ArgSpec::new(
                "cmd",
                ArgKind::String,
                "The command line, split into words (quotes honoured).",
            )
        },
        ArgSpec::new(
            "argv",
            ArgKind::List,
            "The program and its arguments as a list, passed exactly.",
        ),
        GUARD_ARGS[0],
        GUARD_ARGS[1],
        GUARD_ARGS[2],
        GUARD_ARGS[3],
        GUARD_ARGS[4],
    ],
    one_of: &[&["cmd", "argv"]],
    example: r#"task "Initialise the data dir" {
    command "/usr/local/bin/init-data --dir /srv/data" creates="/srv/data/.initialised"
}"#,
};

/// The decoded request of `command` and `shell`.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub program: CmdProgram,
    pub creates: Option<String>,
    pub removes: Option<String>,
    pub chdir: Option<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<String>,
}

impl RunSpec {
    pub(crate) fn decode_guards(program: CmdProgram, a: &Reader<'_>) -> Result<Self, TaskError> {
        Ok(RunSpec {
            program,
            creates: a.opt_str("creates")?,
            removes: a.opt_str("removes")?,
            chdir: a.opt_str("chdir")?,
            env: env_vars(a)?,
            stdin: a.opt_str("stdin")?,
        })
    }

    fn display(&self) -> String {
        match &self.program {
            CmdProgram::Argv(argv) => crate::connection::shell::quote_argv(argv),
            CmdProgram::Script(s) => s.clone(),
        }
    }
}

/// `env {}`: names that a shell can `export` (the values reach the command through its
/// stdin, never its command line: see `connection::shell::command_line`).
fn env_vars(a: &Reader<'_>) -> Result<Vec<(String, String)>, TaskError> {
    let env = a.str_map("env")?;
    if let Some((bad, _)) = env
        .iter()
        .find(|(k, _)| !crate::connection::shell::is_env_name(k))
    {
        return Err(TaskError::bad_arg(
            "env",
            format!("`{bad}` is not a variable name: use letters, digits and `_`, not starting with a digit"),
        ));
    }
    Ok(env)
}

/// `creates`/`removes` guards: `Some(reason)` when the command should not run.
pub(crate) async fn guard(spec: &RunSpec, cx: &TaskCx<'_>) -> Result<Option<String>, TaskError> {
    if let Some(path) = &spec.creates {
        if cx.conn.stat(path).await?.is_some() {
            return Ok(Some(format!("skipped, since {path} exists")));
        }
    }
    if let Some(path) = &spec.removes {
        if cx.conn.stat(path).await?.is_none() {
            return Ok(Some(format!("skipped, since {path} does not exist")));
        }
    }
    Ok(None)
}

pub(crate) async fn check_run(spec: &RunSpec, cx: &TaskCx<'_>) -> Result<Check<()>, TaskError> {
    if let Some(reason) = guard(spec, cx).await? {
        let mut outcome = Outcome::ok(
            json!({"rc": 0, "stdout": "", "stderr": "", "stdout_lines": [], "cmd": spec.display(), "skipped_run": true}),
        );
        outcome.msg = Some(reason);
        return Ok(Check::Unchanged(outcome));
    }
    Ok(Check::Change(Change::new(
        (),
        format!("run: {}", one_line(&spec.display(), 100)),
    )))
}

pub(crate) async fn apply_run(spec: &RunSpec, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
    let cmd = Cmd {
        program: spec.program.clone(),
        stdin: spec.stdin.as_ref().map(|s| s.clone().into_bytes()),
        env: spec.env.clone(),
        cwd: spec.chdir.clone(),
        timeout: None,
        // A user's command gets a session of its own: its login shell, its stdin,
        // whatever it leaves running.
        internal: false,
    };
    let out = cx.conn.exec(&cmd).await?;
    let stdout = out.stdout_str();
    let stderr = out.stderr_str();
    let stdout_trimmed = stdout.strip_suffix('\n').unwrap_or(&stdout).to_string();
    let stderr_trimmed = stderr.strip_suffix('\n').unwrap_or(&stderr).to_string();
    let lines: Vec<&str> = stdout_trimmed.lines().collect();
    let mut data = json!({
        "rc": out.exit_code,
        "stdout": stdout_trimmed,
        "stderr": stderr_trimmed,
        "stdout_lines": lines,
        "cmd": spec.display(),
    });
    // Only the tail of a long output reached us (`connection::OUTPUT_TAIL`): say so.
    for (name, dropped) in [("stdout", out.stdout_dropped), ("stderr", out.stderr_dropped)] {
        if dropped.bytes > 0 {
            data[format!("{name}_dropped_bytes")] = json!(dropped.bytes);
            data[format!("{name}_dropped_lines")] = json!(dropped.lines);
        }
    }
    let mut outcome = Outcome::changed(data);
    if !out.success() {
        let tail = tail_lines(&stderr_trimmed, 10);
        outcome.failed = Some(if tail.is_empty() {
            format!("command exited with code {} (no stderr)", out.exit_code)
        } else {
            format!("command exited with code {}; stderr:\n{tail}", out.exit_code)
        });
    }
    Ok(outcome)
}

/// The last `n` lines of `text`, what a user needs to see of a failing command.
pub(crate) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(crate) fn one_line(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    let more = text.lines().nth(1).is_some();
    let mut out: String = first.chars().take(max).collect();
    if more || first.chars().count() > max {
        out.push('…');
    }
    out
}

#[async_trait]
impl Module for Command {
    type Spec = RunSpec;
    type Plan = ();

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<RunSpec, TaskError> {
        let argv = match (a.opt_str("cmd")?, a.opt_str_list("argv")?) {
            (Some(line), None) => args::split_words(&line).map_err(|e| TaskError::bad_arg("cmd", e))?,
            (None, Some(argv)) => argv,
            (Some(_), Some(_)) => {
                return Err(TaskError::bad_arg("cmd", "give either `cmd` or `argv`, not both"));
            }
            (None, None) => return Err(TaskError::bad_arg("cmd", "a command line or `argv` is required")),
        };
        if argv.is_empty() {
            return Err(TaskError::bad_arg("cmd", "the command is empty"));
        }
        RunSpec::decode_guards(CmdProgram::Argv(argv), a)
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
    async fn runs_argv_and_registers_output() {
        let host = FakeHost::new();
        host.answer("echo", 0, "hello\n", "");
        let out = host
            .run(&Command, args(r#"{"cmd": "echo 'a b'"}"#))
            .await
            .unwrap();
        assert!(out.changed);
        assert_eq!(out.data["stdout"], "hello");
        assert_eq!(host.commands(), ["echo 'a b'"]);
    }

    #[tokio::test]
    async fn creates_guard_skips_without_running() {
        let host = FakeHost::new();
        host.put_file("/srv/done", b"");
        let out = host
            .run(
                &Command,
                args(r#"{"cmd": "touch /srv/done", "creates": "/srv/done"}"#),
            )
            .await
            .unwrap();
        assert!(!out.changed);
        assert!(host.commands().is_empty());
    }

    #[tokio::test]
    async fn failure_carries_exit_code_and_stderr_tail() {
        let host = FakeHost::new();
        host.answer("false", 3, "", "line1\nboom\n");
        let out = host.run(&Command, args(r#"{"argv": ["false"]}"#)).await.unwrap();
        let failed = out.failed.unwrap();
        assert!(failed.contains("exited with code 3"), "{failed}");
        assert!(failed.contains("boom"), "{failed}");
        assert_eq!(out.data["rc"], 3);
    }
}
