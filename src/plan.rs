//! What the engine decides for one object's images: the pins, the problems, and the patch that
//! follows. Plain data, shared by the engine, pre-pull, the admission handler and the offline
//! front ends (a leaf: it depends only on `sites` and `patch`).

use std::sync::Arc;

use crate::{patch, sites::Site};

/// An image that will be (or would be) pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub site: Site,
    pub pinned: String,
    pub digest: Arc<str>,
    /// Why a stale cached digest was used, if one was.
    pub stale: Option<String>,
}

/// An image that cannot be pinned, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub site: Site,
    pub reason: String,
    /// Metric label of the cause.
    pub cause: &'static str,
}

/// What the engine found for one object's images.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub pins: Vec<Pin>,
    pub problems: Vec<Problem>,
    pub already_pinned: usize,
    pub excluded: usize,
}

impl Plan {
    /// `replace` ops for every pin, in site order.
    pub fn patch(&self) -> json_patch::Patch {
        json_patch::Patch(self.pins.iter().map(|p| patch::replace(&p.site.pointer, &p.pinned)).collect())
    }
}
