//! The last part of checking, which needs the engine's renderer and search paths: every
//! template file and `copy src` a task names exists, every template parses, and every
//! filter, test and function a template or expression uses exists.
//!
//! Why here and not in the DSL crate: the filters and the folders a task's files are
//! found in belong to the engine (`troupe_render::Renderer`, `executor::search_dirs`).
//! Why at all: minijinja resolves filter names only when it runs them, and the
//! template module reads its file only when the task runs, so a missing template, an
//! Ansible filter troupe lacks (`json_query`) or test (`is finished`) used to fail mid-run,
//! after earlier tasks had changed hosts. `troupe check` and `troupe run` both call
//! [`check`] before any connection is opened (the invariant "nothing touches a host
//! until the whole run has checked").
//!
//! Values only known per host (a `src` that is itself a template) cannot be resolved
//! here; they are still checked when the task renders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde_json::Value;
use thiserror::Error;
use troupe_dsl::model::{Loc, Loop, Play, Playbook, Task};
use troupe_render::{RenderError, Renderer, UsedName};

/// One problem, reported against the task (its span in the playbook).
#[derive(Debug, Error, Diagnostic)]
pub enum Problem {
    #[error("template `{name}` not found")]
    #[diagnostic(
        code(troupe::check::template_not_found),
        help("looked in {looked}; put the file in one of them or fix `src`")
    )]
    TemplateNotFound {
        name: String,
        looked: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("no such template")]
        span: SourceSpan,
    },

    #[error("`copy` source `{name}` not found on the controller")]
    #[diagnostic(
        code(troupe::check::file_not_found),
        help("looked in {looked}; put the file in one of them or fix `src`")
    )]
    FileNotFound {
        name: String,
        looked: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("no such file")]
        span: SourceSpan,
    },

    #[error("{what}: {detail}")]
    #[diagnostic(code(troupe::check::bad_template), help("{help}"))]
    BadTemplate {
        what: String,
        detail: String,
        help: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("used here")]
        span: SourceSpan,
    },

    #[error("{what} uses the unknown {kind} `{name}`")]
    #[diagnostic(
        code(troupe::check::unknown_name),
        help(
            "docs/templates.md lists the filters, tests and functions troupe provides (Ansible's `json_query` and the async tests such as `is finished` are not among them)"
        )
    )]
    UnknownName {
        what: String,
        kind: &'static str,
        name: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("in this {place}")]
        span: SourceSpan,
        place: &'static str,
    },
}

/// Every problem found, under one report.
#[derive(Debug, Error, Diagnostic)]
#[error("{path}: {} found before any host was contacted", count(.problems.len()))]
#[diagnostic(code(troupe::check::invalid))]
pub struct Invalid {
    pub path: String,
    #[related]
    pub problems: Vec<Problem>,
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 problem".into()
    } else {
        format!("{n} problems")
    }
}

/// Checks every task and handler of every play; `Err` holds all problems.
pub fn check(pb: &Playbook) -> Result<(), miette::Report> {
    let mut cx = Checker {
        pb,
        renderers: HashMap::new(),
        problems: Vec::new(),
    };
    for play in &pb.plays {
        for task in play.tasks.iter().chain(&play.handlers) {
            cx.task(play, task);
        }
    }
    if cx.problems.is_empty() {
        Ok(())
    } else {
        Err(miette::Report::new(Invalid {
            path: pb.path.display().to_string(),
            problems: cx.problems,
        }))
    }
}

struct Checker<'a> {
    pb: &'a Playbook,
    /// One renderer per set of search dirs, as the executor builds them.
    renderers: HashMap<Vec<PathBuf>, Arc<Renderer>>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn src(&self, loc: &Loc) -> NamedSource<Arc<str>> {
        self.pb
            .sources
            .named(&loc.file)
            .unwrap_or_else(|| NamedSource::new(loc.file.display().to_string(), Arc::from("")))
    }

    fn task(&mut self, play: &Play, task: &Task) {
        let dirs = crate::executor::search_dirs(play, task);
        let renderer = self
            .renderers
            .entry(dirs.clone())
            .or_insert_with(|| Arc::new(Renderer::new(dirs.iter().map(|d| d.join("templates")).collect())))
            .clone();

        for (name, arg) in &task.args {
            self.value(&renderer, &arg.value, &format!("argument `{name}`"), &arg.loc);
        }
        let exprs = [
            ("`when`", &task.when),
            ("`until`", &task.until),
            ("`changed-when`", &task.changed_when),
            ("`failed-when`", &task.failed_when),
        ];
        for (what, expr) in exprs {
            if let Some(e) = expr {
                self.names(
                    &renderer,
                    &e.src,
                    true,
                    what.to_string(),
                    &e.loc,
                    false,
                    "expression",
                );
            }
        }
        match &task.loop_ {
            Some(Loop::Expr(e)) => self.names(
                &renderer,
                &e.src,
                true,
                "`loop`".into(),
                &e.loc,
                false,
                "expression",
            ),
            Some(Loop::Items(items)) => {
                for item in items {
                    self.value(&renderer, item, "`loop` item", &task.loc);
                }
            }
            None => {}
        }

        let literal = |name: &str| match task.args.get(name) {
            Some(arg) => match &arg.value {
                Value::String(s) if !s.contains("{{") && !s.contains("{%") => {
                    Some((s.clone(), arg.loc.clone()))
                }
                _ => None,
            },
            None => None,
        };
        match task.module.as_str() {
            "template" => {
                if let Some((name, loc)) = literal("src") {
                    self.template_file(&renderer, &name, &loc);
                }
            }
            "copy" => {
                if let Some((name, loc)) = literal("src")
                    && locate(&dirs, "files", &name).is_none()
                {
                    self.problems.push(Problem::FileNotFound {
                        looked: looked(&dirs, "files"),
                        name,
                        src: self.src(&loc),
                        span: loc.span,
                    });
                }
            }
            _ => {}
        }
    }

    /// The template syntax and names in every string of an argument value.
    fn value(&mut self, renderer: &Renderer, v: &Value, what: &str, loc: &Loc) {
        match v {
            Value::String(s) if s.contains("{{") || s.contains("{%") => {
                self.names(renderer, s, false, what.to_string(), loc, false, "argument");
            }
            Value::Array(items) => items.iter().for_each(|i| self.value(renderer, i, what, loc)),
            Value::Object(map) => map.values().for_each(|i| self.value(renderer, i, what, loc)),
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn names(
        &mut self,
        renderer: &Renderer,
        text: &str,
        expr: bool,
        what: String,
        loc: &Loc,
        in_file: bool,
        place: &'static str,
    ) {
        for UsedName { kind, name, offset } in renderer.unknown_names(text, expr) {
            let what = if in_file {
                format!("{what} (line {})", line_of(text, offset))
            } else {
                what.clone()
            };
            self.problems.push(Problem::UnknownName {
                what,
                kind: kind.as_str(),
                name,
                src: self.src(loc),
                span: loc.span,
                place,
            });
        }
    }

    fn template_file(&mut self, renderer: &Renderer, name: &str, loc: &Loc) {
        match renderer.check_file(name) {
            Ok(()) => {}
            Err(RenderError::NotFound { .. }) => {
                self.problems.push(Problem::TemplateNotFound {
                    name: name.to_string(),
                    looked: renderer
                        .search_dirs()
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    src: self.src(loc),
                    span: loc.span,
                });
                return;
            }
            Err(e) => {
                let help = e.help().map(|h| h.to_string()).unwrap_or_default();
                self.problems.push(Problem::BadTemplate {
                    what: format!("template `{name}`"),
                    detail: e.to_string(),
                    help,
                    src: self.src(loc),
                    span: loc.span,
                });
                return;
            }
        }
        let Some(path) = renderer.find_file(name) else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        self.names(
            renderer,
            &text,
            false,
            format!("template `{name}`"),
            loc,
            true,
            "task",
        );
    }
}

/// Where a `src` file of a task is found: under `sub` (`files`) of each search dir,
/// then the dir itself, most specific first; an absolute path is taken as is. The
/// same order as [`crate::module::TaskCx::find_file`].
pub fn locate(dirs: &[PathBuf], sub: &str, rel: &str) -> Option<PathBuf> {
    let path = Path::new(rel);
    if path.is_absolute() {
        return path.is_file().then(|| path.to_path_buf());
    }
    dirs.iter()
        .flat_map(|d| [d.join(sub).join(rel), d.join(rel)])
        .find(|c| c.is_file())
}

fn looked(dirs: &[PathBuf], sub: &str) -> String {
    dirs.iter()
        .map(|d| d.join(sub).display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(play: &str, files: &[(&str, &str)]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let path = dir.path().join("play.kdl");
        std::fs::write(&path, play).unwrap();
        let pb = troupe_dsl::load_playbook(&path, &crate::modules::specs(), &Default::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        match check(&pb) {
            Ok(()) => vec![],
            Err(report) => {
                let invalid = report.downcast_ref::<Invalid>().unwrap();
                invalid.problems.iter().map(|p| p.to_string()).collect()
            }
        }
    }

    #[test]
    fn files_and_names_are_resolved_as_the_task_will() {
        let ok = problems(
            "play \"p\" hosts=all {\n    task \"t\" { template src=\"a.j2\" dest=\"/x\" }\n    task \"c\" { copy src=\"f.txt\" dest=\"/y\" }\n    task \"d\" { debug msg=\"{{ x | default(1) | to_json }}\"; when \"x is defined and range(2) | length > 1\" }\n}\n",
            &[
                ("templates/a.j2", "{{ groups | length }}\n"),
                ("files/f.txt", "hi\n"),
            ],
        );
        assert!(ok.is_empty(), "{ok:?}");
        let bad = problems(
            "play \"p\" hosts=all {\n    task \"t\" { template src=\"a.j2\" dest=\"/x\" }\n    task \"m\" { template src=\"missing.j2\" dest=\"/x\" }\n    task \"s\" { template src=\"syntax.j2\" dest=\"/x\" }\n    task \"c\" { copy src=\"nope.txt\" dest=\"/y\" }\n    task \"l\" { debug msg=\"x\"; loop \"items | json_query(x)\" }\n    handler \"h\" { debug msg=\"{{ lookup('env', 'HOME') }}\" }\n    handler \"q\" { debug msg=\"{{ nolookup('env', 'HOME') }}\" }\n}\n",
            &[
                ("templates/a.j2", "x\n{{ y is finished }}\n"),
                ("templates/syntax.j2", "{% if %}\n"),
            ],
        );
        assert_eq!(bad.len(), 6, "{bad:#?}");
        assert_eq!(
            bad[0],
            "template `a.j2` (line 2) uses the unknown test `finished`"
        );
        assert_eq!(bad[1], "template `missing.j2` not found");
        assert!(
            bad[2].starts_with("template `syntax.j2`: syntax error"),
            "{}",
            bad[2]
        );
        assert_eq!(bad[3], "`copy` source `nope.txt` not found on the controller");
        assert_eq!(bad[4], "`loop` uses the unknown filter `json_query`");
        assert_eq!(bad[5], "argument `msg` uses the unknown function `nolookup`");
    }
}
