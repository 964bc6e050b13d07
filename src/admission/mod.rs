//! AdmissionReview in and out: decoding, the per-mode decision, the response.

pub mod fixtures;
pub mod handler;
pub mod object;
pub mod review;
pub mod sticky;

pub use handler::{Edges, handle};
