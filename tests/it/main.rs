
mod connection;
mod etcd;
mod pki;
mod run_basic;
mod run_errors;
mod run_flow;
mod run_util;
