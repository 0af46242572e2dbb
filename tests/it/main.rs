//! The end-to-end tests, one binary: each module tests one subject against the lab
//! (`troupe_tests::Lab`), `run_util` holds the helpers that run the `troupe` binary.

mod bad_input;
mod conn_faults;
mod connection;
mod etcd;
mod etcd_lab;
mod host_keys;
mod hung_hosts;
mod lab;
mod max_sessions;
mod pki;
mod private_material;
mod quoting;
mod run_basic;
mod run_errors;
mod run_expressions;
mod run_flow;
mod run_interrupt;
mod run_masking;
mod run_output;
mod run_secrets;
mod run_util;
