//! Strict template rendering for troupe.
//!
//! Tasks carry `{{ templates }}` in their arguments, `when:`-style expressions, and
//! `template` tasks render whole files such as etcd's static-pod manifest. All of it
//! goes through one [`Renderer`]: a minijinja environment where an undefined variable is
//! an error naming the template, line and name (a missing IP must never render as an
//! empty string into a production manifest), nothing is HTML-escaped, and templates,
//! strings and expressions are compiled once and cached because the engine renders per
//! host per task.
//!
//! [`manifest`] edits Kubernetes static-pod manifests line by line, for changes that
//! must leave the rest of an existing file byte for byte as it was.

mod checks;
mod context;
mod data;
mod digest;
mod error;
mod filters;
mod ipaddr;
mod lookup;
pub mod manifest;
mod names;
mod renderer;

pub use context::{Context, Groups, HostVars};
pub use error::RenderError;
pub use lookup::SecretSink;
pub use names::{NameKind, UsedName, used_names};
pub use renderer::{FUEL, Renderer};

/// `quote` as a Rust function: POSIX shell quoting like Python's `shlex.quote`.
pub fn shell_quote(s: &str) -> String {
    filters::shell_quote(s)
}
