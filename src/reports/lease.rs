//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's defaults: a lease lasts
//! [`LEASE_DURATION`], the leader renews every [`RETRY_PERIOD`] and stops leading when it has not
//! renewed for [`RENEW_DEADLINE`]; the others try every [`RETRY_PERIOD`] and take the lease once
//! it has gone unrenewed for a whole [`LEASE_DURATION`] of their own clocks (a holder's clock is
//! never trusted). Updates carry the resourceVersion read, so two candidates never both win.
//!
//! [`Leader::is_leading`] is true only within [`RENEW_DEADLINE`] of the last renewal, shorter
//! than the lease: a leader cut off from the API server stops writing before anyone else can
//! take over.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// The Lease's name, in layerlink's own namespace.
pub const LEASE_NAME: &str = "layerlink-reports";

/// One candidate: its identity and when it last renewed the lease as leader.
pub struct Leader {
    pub identity: String,
    renewed: Mutex<Option<Instant>>,
}

impl Leader {
    pub fn new(identity: String) -> Arc<Self> {
        Arc::new(Leader { identity, renewed: Mutex::new(None) })
    }

    /// Whether this replica may write now.
    pub fn is_leading(&self) -> bool {
        self.renewed.lock().unwrap().is_some_and(|at| at.elapsed() < RENEW_DEADLINE)
    }

    /// Tries to acquire or renew every [`RETRY_PERIOD`], for ever.
    pub async fn run(self: Arc<Self>, client: kube::Client, namespace: String) {
        let api: Api<Lease> = Api::namespaced(client, &namespace);
        let mut observed = Observed::default();
        let mut ticks = tokio::time::interval(RETRY_PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let was_leading = self.is_leading();
            // The renewal counts from before the request: the lease may have been written at once.
            let attempt = Instant::now();
            match self.try_acquire_or_renew(&api, &mut observed).await {
                Ok(true) => {
                    *self.renewed.lock().unwrap() = Some(attempt);
                    if !was_leading {
                        tracing::info!(identity = %self.identity, lease = LEASE_NAME, namespace, "reports: leading");
                    }
                }
                // Another replica holds it: stop at once.
                Ok(false) => *self.renewed.lock().unwrap() = None,
                Err(e) => tracing::warn!(error = %e, lease = LEASE_NAME, "reports: cannot renew the lease"),
            }
            if was_leading && !self.is_leading() {
                tracing::warn!(identity = %self.identity, "reports: lease lost; writes stopped");
            }
        }
    }

    /// One attempt: Ok(true) when this replica holds the lease afterwards.
    async fn try_acquire_or_renew(&self, api: &Api<Lease>, observed: &mut Observed) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return conflict_is_false(api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = lease.metadata.resource_version.clone().unwrap_or_default();
        if observed.record != record {
            *observed = Observed { record, at: Some(Instant::now()) };
        }
        let mine = holder == self.identity;
        let expired = observed.at.is_none_or(|at| at.elapsed() >= LEASE_DURATION);
        if !mine && !holder.is_empty() && !expired {
            return Ok(false);
        }
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        spec.renew_time = Some(now);
        conflict_is_false(api.replace(LEASE_NAME, &PostParams::default(), &lease).await)
    }
}

/// The lease record last seen (its resourceVersion) and when this replica first saw it.
#[derive(Default)]
struct Observed {
    record: String,
    at: Option<Instant>,
}

/// A write another candidate won (409 Conflict, or 409 AlreadyExists on create) is a lost round,
/// not an error.
fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// A candidate's identity: the pod's name (`HOSTNAME`) and a per-process suffix, so two
/// processes on one host never share it.
pub fn identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "layerlink".into());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{host}_{}_{nanos:08x}", std::process::id())
}
