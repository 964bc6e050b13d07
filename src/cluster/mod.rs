//! Kubernetes client edges: reaching the cluster, pull secrets, audit events, controller revisions' pods, the `audit` lister.

pub mod audit;
pub mod connect;
pub mod events;
pub mod secrets;
pub mod siblings;
