//! Shared-base pre-pull. (being written)

pub mod daemonset;
pub mod layers;
