//! The troupe engine: connections, task modules, the executor that runs check → apply
//! per host, the scheduler that fans out over hosts, and the reporters.

pub mod cli;
pub mod connection;
pub mod etcd;
pub mod executor;
pub mod interrupt;
pub mod module;
pub mod modules;
pub mod pki;
pub mod preflight;
pub mod report;
pub mod scheduler;
pub mod statcache;
pub mod vars;
