//! Kubernetes client edges: pull secrets, audit events, the `audit` command.

pub mod audit;
pub mod events;
pub mod secrets;
