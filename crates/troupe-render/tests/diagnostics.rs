//! The exact reports a user sees for the two commonest template mistakes (and an
//! undefined name in a `when`-style expression): rendered as the terminal shows them,
//! without colour, 100 columns wide.

mod common;

use miette::{GraphicalReportHandler, GraphicalTheme};
use troupe_render::{RenderError, Renderer};

fn report(err: &RenderError) -> String {
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, err)
        .unwrap();
    out
}

/// Template paths are absolute; show them relative to the repository.
fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap();
    s.add_filter(
        &regex_escape(&common::templates_dir().display().to_string()),
        "[repo]/templates",
    );
    s.add_filter(
        &regex_escape(&format!("{}/", env!("CARGO_MANIFEST_DIR"))),
        "[crate]/",
    );
    s.add_filter(&regex_escape(&root.display().to_string()), "[repo]");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn undefined_variable_in_a_template() {
    let r = common::renderer();
    let (_, mut ctx) = common::seed_contexts().remove(0);
    // The operator forgot to set the etcd version.
    let mut vars = ctx.vars().clone();
    vars.shift_remove("etcd_version");
    ctx = troupe_render::Context::new(vars)
        .with_groups(ctx.groups().clone())
        .with_hostvars(ctx.hostvars().clone());
    let err = r.render_file("etcd.yaml.j2", &ctx).unwrap_err();
    settings().bind(|| insta::assert_snapshot!(report(&err)));
}

#[test]
fn undefined_variable_in_an_imported_template() {
    let r = common::renderer();
    let (_, ctx) = common::seed_contexts().remove(0);
    let mut vars = ctx.vars().clone();
    vars.shift_remove("address");
    let ctx = troupe_render::Context::new(vars)
        .with_groups(ctx.groups().clone())
        .with_hostvars(ctx.hostvars().clone());
    let err = r.render_file("etcd.runit.j2", &ctx).unwrap_err();
    settings().bind(|| insta::assert_snapshot!(report(&err)));
}

#[test]
fn syntax_error_in_a_template() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/templates");
    let r = Renderer::new(vec![fixtures, common::templates_dir()]);
    let (_, ctx) = common::seed_contexts().remove(0);
    let err = r.render_file("etcd-peers.conf.j2", &ctx).unwrap_err();
    settings().bind(|| insta::assert_snapshot!(report(&err)));
}

#[test]
fn undefined_variable_in_an_expression() {
    let r = common::renderer();
    let (_, ctx) = common::seed_contexts().remove(0);
    let err = r
        .is_true("groups.etcd | length >= etcd_min_members", &ctx)
        .unwrap_err();
    settings().bind(|| insta::assert_snapshot!(report(&err)));
}

#[test]
fn missing_template() {
    // Relative dirs keep the message (and so its line wrapping) independent of where
    // the repository is checked out.
    let r = Renderer::new(vec!["playbooks/templates".into(), "templates".into()]);
    let err = r
        .render_file("etcd.yml.j2", &troupe_render::Context::default())
        .unwrap_err();
    insta::assert_snapshot!(report(&err));
}
