//! `template`: render a minijinja template with the host's variables on the controller,
//! then put the result on the host exactly as `copy` would (checksum compare, atomic
//! write, diff). Rendering never needs the host, which is what lets `troupe render`
//! preview a template task offline.

use async_trait::async_trait;
use troupe_dsl::registry::{ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use super::copy::{BACKUP_ARG, DEST_ARGS, DestSpec, PutPlan, apply_put, check_put};
use crate::module::{Check, Module, Outcome, TaskCx, TaskError};

pub struct Template;

static SPEC: ModuleSpec = ModuleSpec {
    name: "template",
    summary: "Render a template with the host's variables and put it on the host",
    doc: "`src` names a template in the `templates/` folder of the task's role, then of the \
playbook, then the top-level `templates/`. Rendering is strict: an undefined variable fails \
the task with the template file and line. The result is written like `copy` does (compared by \
checksum on the host, atomic, with mode and owner). Registered result: `dest`, `checksum`, `size`.",
    args: &[
        ArgSpec {
            required: true,
            positional: true,
            ..ArgSpec::new(
                "src",
                ArgKind::Path,
                "Template name, under a `templates/` folder.",
            )
        },
        DEST_ARGS[0],
        DEST_ARGS[1],
        DEST_ARGS[2],
        DEST_ARGS[3],
        BACKUP_ARG,
    ],
    one_of: &[],
    example: r#"task "etcd manifest" {
    template "etcd.yaml.j2" dest="/etc/kubernetes/manifests/etcd.yaml" mode=0o600
}"#,
};

#[derive(Debug, Clone)]
pub struct TemplateSpec {
    pub src: String,
    pub dest: DestSpec,
}

#[async_trait]
impl Module for Template {
    type Spec = TemplateSpec;
    type Plan = PutPlan;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<TemplateSpec, TaskError> {
        Ok(TemplateSpec {
            src: a.str("src")?,
            dest: DestSpec::decode(a)?,
        })
    }

    async fn check(&self, spec: &TemplateSpec, cx: &TaskCx<'_>) -> Result<Check<PutPlan>, TaskError> {
        let text = (cx.render)(&spec.src)?;
        check_put(&spec.dest, text.into_bytes(), cx).await
    }

    async fn apply(&self, spec: &TemplateSpec, plan: PutPlan, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        apply_put(&spec.dest, plan, cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{FakeHost, args};

    #[tokio::test]
    async fn renders_then_writes_once() {
        let host = FakeHost::new();
        let a = args(r#"{"src": "motd.j2", "dest": "/etc/motd"}"#);
        assert!(host.run(&Template, a.clone()).await.unwrap().changed);
        assert_eq!(host.file("/etc/motd").unwrap().content, b"rendered motd.j2\n");
        assert!(!host.run(&Template, a).await.unwrap().changed);
    }
}
