//! The troupe language: KDL playbooks and inventories decoded into a checked model.
//!
//! This crate reads the files it is given (and the roles and includes they name) and
//! nothing else: no network, no hosts. Every problem becomes a `miette` diagnostic with
//! the file, line and a label on the exact span, and one run reports all of them.

pub mod model;
pub mod registry;
