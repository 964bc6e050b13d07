//! Kubernetes client edges: pull secrets, audit events, controller revisions' pods, the `audit` lister.

pub mod audit;
pub mod events;
pub mod secrets;
pub mod siblings;
