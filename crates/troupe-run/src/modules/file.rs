//! `file`: make a path be a directory, an existing file, a symlink, or absent, with a
//! mode and owner. One `stat` decides the plan; applying it is one command line of
//! `mkdir`/`ln`/`chmod`/`chown` steps, so a change costs one more round trip, never more.

use async_trait::async_trait;
use serde_json::json;
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::{Choice, Reader, choice};
use super::attrs;
use crate::connection::shell::quote_argv;
use crate::connection::{FileKind, FileStat};
use crate::module::{Change, Check, Module, Outcome, TaskCx, TaskError};

pub struct File;

static SPEC: ModuleSpec = ModuleSpec {
    name: "file",
    summary: "Make a path a directory, file or symlink with a mode and owner, or remove it",
    doc: "`state=directory` creates the directory and its parents; `file` requires the file to \
exist and sets its attributes; `touch` creates an empty file when missing (it does not update \
the modification time of an existing one, so it stays idempotent); `link` makes `path` a symlink \
to `src`; `absent` removes the path (recursively for a directory). `mode`, `owner` and `group` \
apply to the path itself (not recursively).",
    args: &[
        ArgSpec {
            required: true,
            positional: true,
            stat: true,
            ..ArgSpec::new("path", ArgKind::Path, "The path on the host.")
        },
        ArgSpec {
            default: Some(ArgDefault::Str(State::File.name())),
            ..ArgSpec::new("state", ArgKind::Enum(State::NAMES), "What the path must be.")
        },
        ArgSpec::new("mode", ArgKind::Mode, "Permission bits, e.g. 0o750."),
        ArgSpec::new("owner", ArgKind::String, "Owning user name."),
        ArgSpec::new("group", ArgKind::String, "Owning group name."),
        ArgSpec::new("src", ArgKind::Path, "Target of the symlink (`state=link`)."),
    ],
    one_of: &[],
    example: r#"task "PKI directory" {
    file "/etc/kubernetes/pki/etcd" state="directory" mode=0o700 owner="root"
}"#,
};

choice! {
    /// What `state=` asks the path to be.
    pub enum State {
        Directory = "directory",
        File = "file",
        Absent = "absent",
        Link = "link",
        Touch = "touch",
    }
}

#[derive(Debug, Clone)]
pub struct FileSpec {
    pub path: String,
    pub state: State,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub src: Option<String>,
}

/// The steps of a change, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Mkdir,
    Touch,
    Link { replace: bool },
    Remove,
    Chmod(u32),
    Chown(String),
}

#[async_trait]
impl Module for File {
    type Spec = FileSpec;
    type Plan = Vec<Step>;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<FileSpec, TaskError> {
        let spec = FileSpec {
            path: a.str("path")?,
            state: a.choice("state")?,
            mode: a.opt_mode("mode")?,
            owner: a.opt_str("owner")?,
            group: a.opt_str("group")?,
            src: a.opt_str("src")?,
        };
        if spec.path.is_empty() {
            return Err(TaskError::bad_arg("path", "is empty"));
        }
        if spec.state == State::Absent && spec.path.trim_end_matches('/').is_empty() {
            return Err(TaskError::bad_arg("path", "refusing to remove /"));
        }
        if spec.state == State::Link && spec.src.is_none() {
            return Err(TaskError::bad_arg(
                "src",
                "`state=link` needs `src`, the link target",
            ));
        }
        Ok(spec)
    }

    async fn check(&self, spec: &FileSpec, cx: &TaskCx<'_>) -> Result<Check<Vec<Step>>, TaskError> {
        let stat = cx.conn.stat(&spec.path).await?;
        let (steps, what) = plan(spec, stat.as_ref())?;
        if steps.is_empty() {
            return Ok(Check::Unchanged(Outcome::ok(result(spec, stat.as_ref()))));
        }
        // A removal or a link replacing a directory changes what lies below the path.
        Ok(Check::Change(
            Change::new(steps, format!("{what} {}", spec.path)).touching(spec.path.clone(), true),
        ))
    }

    async fn apply(&self, spec: &FileSpec, steps: Vec<Step>, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        attrs::run(cx.conn, &script(spec, &steps), |stderr| {
            TaskError::failed(format!(
                "could not change {}: {}",
                spec.path,
                super::command::tail_lines(stderr, 5)
            ))
        })
        .await?;
        Ok(Outcome::changed(
            json!({"path": spec.path, "state": spec.state.name()}),
        ))
    }
}

fn result(spec: &FileSpec, stat: Option<&FileStat>) -> serde_json::Value {
    match stat {
        Some(st) => json!({
            "path": spec.path,
            "state": spec.state.name(),
            "mode": format!("{:04o}", st.mode & 0o7777),
            "owner": st.owner,
            "group": st.group,
            "size": st.size,
        }),
        None => json!({"path": spec.path, "state": spec.state.name()}),
    }
}

/// Decide the steps from what is there; also a word for the summary.
pub fn plan(spec: &FileSpec, stat: Option<&FileStat>) -> Result<(Vec<Step>, &'static str), TaskError> {
    let mut steps = Vec::new();
    let mut what = "update";
    let kind = stat.map(|s| s.kind);
    match spec.state {
        State::Absent => {
            if stat.is_some() {
                return Ok((vec![Step::Remove], "remove"));
            }
            return Ok((steps, ""));
        }
        State::Directory => match kind {
            None => {
                steps.push(Step::Mkdir);
                what = "create directory";
            }
            Some(FileKind::Directory) => {}
            Some(_) => {
                return Err(TaskError::failed_help(
                    format!("{} exists and is not a directory", spec.path),
                    "remove it first (a `file state=absent` task) if it should be replaced",
                ));
            }
        },
        State::File => match kind {
            None => {
                return Err(TaskError::failed_help(
                    format!("{} does not exist", spec.path),
                    "use `state=touch` to create an empty file, or `copy`/`template` to write one",
                ));
            }
            Some(FileKind::File) => {}
            Some(_) => {
                return Err(TaskError::failed(format!(
                    "{} exists and is not a regular file",
                    spec.path
                )));
            }
        },
        State::Touch => match kind {
            None => {
                steps.push(Step::Touch);
                what = "create file";
            }
            Some(FileKind::File) => {}
            Some(_) => {
                return Err(TaskError::failed(format!(
                    "{} exists and is not a regular file",
                    spec.path
                )));
            }
        },
        State::Link => {
            let src = spec.src.as_deref().unwrap_or_default();
            match (kind, stat.and_then(|s| s.link_target.as_deref())) {
                (None, _) => {
                    steps.push(Step::Link { replace: false });
                    what = "create link";
                }
                (Some(FileKind::Symlink), Some(target)) if target == src => {}
                (Some(FileKind::Symlink), _) => {
                    steps.push(Step::Link { replace: true });
                    what = "repoint link";
                }
                (Some(FileKind::Directory), _) => {
                    return Err(TaskError::failed(format!(
                        "{} is a directory, refusing to replace it with a link",
                        spec.path
                    )));
                }
                (Some(_), _) => {
                    steps.push(Step::Link { replace: true });
                    what = "replace with link";
                }
            }
            // A link's own mode is meaningless on Linux; ownership is set with chown -h.
            if let Some(owner) = owner_spec(spec, stat.filter(|s| s.kind == FileKind::Symlink)) {
                steps.push(Step::Chown(owner));
            }
            return Ok((steps, what));
        }
    }
    let existing = stat.filter(|s| s.kind != FileKind::Symlink);
    if let Some(mode) = spec.mode {
        if existing.is_none_or(|s| s.mode & 0o7777 != mode) {
            steps.push(Step::Chmod(mode));
        }
    }
    if let Some(owner) = owner_spec(spec, existing) {
        steps.push(Step::Chown(owner));
    }
    Ok((steps, what))
}

/// `user:group` (or `user` / `:group`) when they differ from what the stat shows.
fn owner_spec(spec: &FileSpec, stat: Option<&FileStat>) -> Option<String> {
    let owner = spec
        .owner
        .as_ref()
        .filter(|o| stat.is_none_or(|s| &s.owner != *o));
    let group = spec
        .group
        .as_ref()
        .filter(|g| stat.is_none_or(|s| &s.group != *g));
    attrs::owner_group(owner.map(String::as_str), group.map(String::as_str))
}

/// The whole change as the steps of one command line for `sh -c`.
pub fn script(spec: &FileSpec, steps: &[Step]) -> Vec<String> {
    let p = spec.path.as_str();
    // A new directory gets its mode from `mkdir -m`: one program less on the host.
    let (mkdir_mode, steps): (Option<u32>, Vec<&Step>) = match steps {
        [Step::Mkdir, Step::Chmod(mode), rest @ ..] => {
            (Some(*mode), std::iter::once(&Step::Mkdir).chain(rest).collect())
        }
        _ => (None, steps.iter().collect()),
    };
    steps
        .into_iter()
        .map(|step| match step {
            Step::Mkdir => attrs::mkdir(p, mkdir_mode),
            Step::Touch => quote_argv(&["touch", "--", p]),
            Step::Remove => quote_argv(&["rm", "-rf", "--", p]),
            Step::Link { replace } => {
                let src = spec.src.as_deref().unwrap_or_default();
                if *replace {
                    quote_argv(&["ln", "-sfn", "--", src, p])
                } else {
                    quote_argv(&["ln", "-s", "--", src, p])
                }
            }
            Step::Chmod(mode) => attrs::chmod(p, *mode),
            Step::Chown(owner) => attrs::chown(p, owner, spec.state == State::Link),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{FakeHost, args, decode};

    #[tokio::test]
    async fn creates_a_directory_with_mode_in_one_command() {
        let host = FakeHost::new();
        let out = host
            .run(
                &File,
                args(r#"{"path": "/srv/a b", "state": "directory", "mode": 448}"#),
            )
            .await
            .unwrap();
        assert!(out.changed);
        assert_eq!(
            host.commands(),
            ["sh -c 'mkdir -p -m 0700 -- '\\''/srv/a b'\\'''"]
        );
    }

    #[tokio::test]
    async fn existing_directory_with_right_mode_is_unchanged() {
        let host = FakeHost::new();
        host.put_dir("/srv/x");
        let check = host
            .check(
                &File,
                args(r#"{"path": "/srv/x", "state": "directory", "mode": "0755"}"#),
            )
            .await
            .unwrap();
        assert_eq!(check, None);
        let check = host
            .check(
                &File,
                args(r#"{"path": "/srv/x", "state": "directory", "mode": "0700"}"#),
            )
            .await
            .unwrap();
        assert_eq!(check.unwrap().0, "update /srv/x");
        assert!(host.commands().is_empty(), "check never runs commands");
    }

    #[tokio::test]
    async fn absent_removes_only_when_present() {
        let host = FakeHost::new();
        assert_eq!(
            host.check(&File, args(r#"{"path": "/srv/gone", "state": "absent"}"#))
                .await
                .unwrap(),
            None
        );
        host.put_file("/srv/gone", b"x");
        assert_eq!(
            host.check(&File, args(r#"{"path": "/srv/gone", "state": "absent"}"#))
                .await
                .unwrap()
                .unwrap()
                .0,
            "remove /srv/gone"
        );
    }

    #[tokio::test]
    async fn state_file_on_missing_path_fails_with_help() {
        let host = FakeHost::new();
        let err = host.run(&File, args(r#"{"path": "/nope"}"#)).await.unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn link_requires_src() {
        assert!(decode(&File, r#"{"path": "/l", "state": "link"}"#).is_err());
        assert!(decode(&File, r#"{"path": "/", "state": "absent"}"#).is_err());
    }

    #[test]
    fn state_reads_the_default_and_refuses_unknown_words() {
        assert_eq!(decode(&File, r#"{"path": "/x"}"#).unwrap().state, State::File);
        assert_eq!(
            decode(&File, r#"{"path": "/x", "state": "touch"}"#)
                .unwrap()
                .state,
            State::Touch
        );
        let err = decode(&File, r#"{"path": "/x", "state": "dir"}"#).unwrap_err();
        assert!(
            err.to_string().contains("expected one of directory, file"),
            "{err}"
        );
    }
}
