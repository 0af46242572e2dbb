//! A small module registry for the checker tests. The real one lives in troupe-run;
//! the DSL crate must not depend on it, and these specs only need to exercise every
//! kind of argument the checker validates.

use troupe_dsl::registry::{ArgKind, ArgSpec, ModuleSpec};

const fn req(a: ArgSpec) -> ArgSpec {
    ArgSpec { required: true, ..a }
}
const fn pos(a: ArgSpec) -> ArgSpec {
    ArgSpec {
        positional: true,
        ..a
    }
}

const OWNERSHIP: [ArgSpec; 3] = [
    ArgSpec::new("mode", ArgKind::Mode, "File mode."),
    ArgSpec::new("owner", ArgKind::String, "Owning user."),
    ArgSpec::new("group", ArgKind::String, "Owning group."),
];

static COMMAND_ARGS: &[ArgSpec] = &[
    req(pos(ArgSpec::new("cmd", ArgKind::String, "The command line."))),
    ArgSpec::new("creates", ArgKind::Path, "Skip when this path exists."),
    ArgSpec::new("removes", ArgKind::Path, "Run only when this path exists."),
    ArgSpec::new("chdir", ArgKind::Path, "Working directory."),
    ArgSpec::new("env", ArgKind::Map, "Environment variables."),
    ArgSpec::new("stdin", ArgKind::String, "Text fed to standard input."),
];

static FILE_ARGS: &[ArgSpec] = &[
    req(pos(ArgSpec::new("path", ArgKind::Path, "The path to manage."))),
    ArgSpec::new(
        "state",
        ArgKind::Enum(&["directory", "file", "absent", "link", "touch"]),
        "What it should be.",
    ),
    OWNERSHIP[0],
    OWNERSHIP[1],
    OWNERSHIP[2],
    ArgSpec::new("src", ArgKind::Path, "Link target."),
];

static COPY_ARGS: &[ArgSpec] = &[
    ArgSpec::new("src", ArgKind::Path, "File to copy, from the files/ folders."),
    ArgSpec::new("content", ArgKind::String, "Literal content."),
    req(ArgSpec::new("dest", ArgKind::Path, "Where to write.")),
    OWNERSHIP[0],
    OWNERSHIP[1],
    OWNERSHIP[2],
];

static TEMPLATE_ARGS: &[ArgSpec] = &[
    req(ArgSpec::new(
        "src",
        ArgKind::Path,
        "Template name, from the templates/ folders.",
    )),
    req(ArgSpec::new("dest", ArgKind::Path, "Where to write.")),
    OWNERSHIP[0],
    OWNERSHIP[1],
    OWNERSHIP[2],
];

static SERVICE_ARGS: &[ArgSpec] = &[
    req(pos(ArgSpec::new("name", ArgKind::String, "Service name."))),
    ArgSpec::new(
        "state",
        ArgKind::Enum(&["started", "stopped", "restarted", "reloaded"]),
        "Wanted state.",
    ),
    ArgSpec::new("enabled", ArgKind::Bool, "Start at boot."),
];

static DEBUG_ARGS: &[ArgSpec] = &[
    pos(ArgSpec::new("msg", ArgKind::String, "Message to print.")),
    ArgSpec::new("var", ArgKind::Any, "Value to print."),
];

static WAIT_ARGS: &[ArgSpec] = &[
    ArgSpec::new("host", ArgKind::String, "Host to connect to."),
    ArgSpec::new("port", ArgKind::Int, "TCP port."),
    ArgSpec::new("path", ArgKind::Path, "File to wait for."),
    ArgSpec::new("timeout", ArgKind::Duration, "Give up after."),
];

static MEMBER_ARGS: &[ArgSpec] = &[
    req(ArgSpec::new("name", ArgKind::String, "Member name.")),
    req(ArgSpec::new("peer-url", ArgKind::String, "Peer URL.")),
    ArgSpec::new("endpoints", ArgKind::List, "Client URLs of running members."),
];

static HEALTH_ARGS: &[ArgSpec] = &[
    req(ArgSpec::new(
        "endpoints",
        ArgKind::List,
        "Client URLs of running members.",
    )),
    ArgSpec::new("ca", ArgKind::Path, "CA certificate."),
    ArgSpec::new("cert", ArgKind::Path, "Client certificate."),
    ArgSpec::new("key", ArgKind::Path, "Client key."),
    ArgSpec::new("timeout", ArgKind::Duration, "Give up after."),
];

const fn module(name: &'static str, args: &'static [ArgSpec]) -> ModuleSpec {
    ModuleSpec {
        name,
        summary: "",
        doc: "",
        args,
        one_of: &[],
        example: "",
    }
}

pub static MODULES: &[ModuleSpec] = &[
    module("command", COMMAND_ARGS),
    module("shell", COMMAND_ARGS),
    module("file", FILE_ARGS),
    ModuleSpec {
        one_of: &[&["src", "content"]],
        ..module("copy", COPY_ARGS)
    },
    module("template", TEMPLATE_ARGS),
    module("service", SERVICE_ARGS),
    module("debug", DEBUG_ARGS),
    module("wait-for", WAIT_ARGS),
    module("etcd-member", MEMBER_ARGS),
    module("etcd-health", HEALTH_ARGS),
];
