//! troupe-render's integration tests, one binary (one link, one run) with a module per
//! subject; `common` holds the seed's render context they share.

mod ansible;
mod api;
mod common;
mod diagnostics;
mod docs;
mod etcd_real;
mod k8s;
mod lookups;
mod systemd;
mod templates;
