//! Kubernetes client edges: pull secrets, events, the `audit` command. (being written)

pub mod audit;
