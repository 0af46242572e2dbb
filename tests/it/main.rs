
mod connection;
mod etcd;
mod etcd_lab;
mod pki;
mod run_basic;
mod run_errors;
mod run_flow;
mod run_secrets;
mod run_util;
