//! The report writer of `serve` (`reports.policyReports: true`). Every replica runs it; only the
//! lease holder ([`super::lease`]) lists and writes, the others keep serving admissions.
//!
//! It is fed from two sides: every `reports.scanInterval` it scans every reported namespace, and
//! audit-mode admissions (never dry runs: the handler does not report them) mark their namespace,
//! which is rescanned in the next batch ([`BATCH`]). Marking is an insert into a bounded set: no
//! I/O on the admission path. A rescan lists what the API server has, so a pod another webhook
//! refused never shows up. A report is written only when what it says changed (compared with the
//! stored one, timestamps left out), with server-side apply (field manager `layerlink`), at most
//! [`WRITES_PER_SECOND`].

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::{
    Api,
    api::{ApiResource, Patch, PatchParams},
    core::DynamicObject,
};
use serde_json::Value;

use super::{lease::Leader, scan};
use crate::{
    Engine, Error,
    admission::{handler::Reporter, review::AdmissionRequest},
    engine::Plan,
};

/// How often the namespaces marked by admissions are rescanned.
pub const BATCH: Duration = Duration::from_secs(2);
/// Report writes per second at most (a burst of one): a cluster of a thousand namespaces is
/// rewritten in under four minutes, and the API server never sees a flood.
pub const WRITES_PER_SECOND: u32 = 5;
/// Namespaces marked and not yet rescanned, at most; past it marks wait for the next scan.
pub const MAX_MARKED: usize = 10_000;
/// The field manager of every write.
pub const FIELD_MANAGER: &str = "layerlink";

pub struct Writer {
    engine: Arc<Engine>,
    client: kube::Client,
    leader: Arc<Leader>,
    marked: Mutex<BTreeSet<String>>,
}

impl Writer {
    pub fn new(engine: Arc<Engine>, client: kube::Client, leader: Arc<Leader>) -> Arc<Self> {
        Arc::new(Writer { engine, client, leader, marked: Mutex::default() })
    }

    /// Scans and writes for ever; does nothing while another replica leads.
    pub async fn run(self: Arc<Self>) {
        let mut next_scan = Instant::now();
        let mut last_write = Instant::now() - Duration::from_secs(1);
        let mut ticks = tokio::time::interval(BATCH);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !self.leader.is_leading() {
                // On taking over, the new leader scans everything at once.
                self.marked.lock().unwrap().clear();
                next_scan = Instant::now();
                continue;
            }
            let full = Instant::now() >= next_scan;
            let marked = std::mem::take(&mut *self.marked.lock().unwrap());
            if !full && marked.is_empty() {
                continue;
            }
            let namespaces = match scan::namespaces(&self.engine, &self.client).await {
                Ok(all) if full => all,
                Ok(all) => all.into_iter().filter(|n| marked.contains(n)).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "reports: cannot list namespaces");
                    continue;
                }
            };
            if full {
                next_scan = Instant::now() + self.engine.config.reports.scan_interval;
            }
            let started = Instant::now();
            let (mut written, mut requests) = (0, 1);
            for namespace in &namespaces {
                match self.rescan(namespace, &mut last_write).await {
                    Ok((wrote, listed)) => {
                        written += usize::from(wrote);
                        requests += listed + 1 + usize::from(wrote);
                    }
                    Err(e) => tracing::warn!(namespace, error = %e, "reports: namespace not reported"),
                }
                if !self.leader.is_leading() {
                    break;
                }
            }
            tracing::info!(
                full,
                namespaces = namespaces.len(),
                written,
                requests,
                seconds = started.elapsed().as_secs_f64(),
                "reports: scan"
            );
        }
    }

    /// Scans one namespace and writes its report unless the stored one says the same;
    /// (written, list requests made).
    async fn rescan(&self, namespace: &str, last_write: &mut Instant) -> Result<(bool, usize), Error> {
        let scanned = scan::namespace(&self.engine, &self.client, namespace).await?;
        let report = super::build(&scanned.workloads, &[namespace.to_string()], super::now()).remove(0);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &resource());
        let stored = api
            .get_opt(super::REPORT_NAME)
            .await
            .map_err(|e| Error::kube(format!("reading the PolicyReport in {namespace}"), e))?;
        if stored.and_then(|s| serde_json::to_value(s).ok()).is_some_and(|s| same(&s, &report)) {
            return Ok((false, scanned.requests));
        }
        let gap = Duration::from_secs(1) / WRITES_PER_SECOND;
        tokio::time::sleep_until((*last_write + gap).into()).await;
        // The lease may have been lost while listing: a replica that no longer leads never writes.
        if !self.leader.is_leading() {
            return Ok((false, scanned.requests));
        }
        *last_write = Instant::now();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(super::REPORT_NAME, &params, &Patch::Apply(&report))
            .await
            .map_err(|e| Error::kube(format!("writing the PolicyReport in {namespace}"), e))?;
        Ok((true, scanned.requests))
    }
}

/// Audit-mode admissions mark their namespace for the next batch.
impl Reporter for Writer {
    fn report(&self, request: &AdmissionRequest, _plan: &Plan) {
        let Some(namespace) = request.namespace.as_deref() else { return };
        let mut marked = self.marked.lock().unwrap();
        if marked.len() < MAX_MARKED {
            marked.insert(namespace.to_string());
        }
    }
}

/// Several reporters as one (audit Events and reports).
pub struct Fanout(pub Vec<Arc<dyn Reporter>>);

impl Reporter for Fanout {
    fn report(&self, request: &AdmissionRequest, plan: &Plan) {
        for reporter in &self.0 {
            reporter.report(request, plan);
        }
    }
}

/// The PolicyReport resource (`wgpolicyk8s.io/v1alpha2`, `policyreports`).
pub fn resource() -> ApiResource {
    ApiResource {
        group: "wgpolicyk8s.io".into(),
        version: "v1alpha2".into(),
        api_version: "wgpolicyk8s.io/v1alpha2".into(),
        kind: "PolicyReport".into(),
        plural: "policyreports".into(),
    }
}

/// Whether `stored` says what `built` says: the same results (timestamps left out), summary
/// and annotations.
pub fn same(stored: &Value, built: &Value) -> bool {
    let results = |report: &Value| -> Vec<Value> {
        let mut results = report["results"].as_array().cloned().unwrap_or_default();
        for result in &mut results {
            if let Some(r) = result.as_object_mut() {
                r.remove("timestamp");
            }
        }
        results
    };
    let annotation = |report: &Value| report["metadata"]["annotations"][super::TRUNCATED_ANNOTATION].clone();
    results(stored) == results(built)
        && stored["summary"] == built["summary"]
        && annotation(stored) == annotation(built)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(result: &str, seconds: i64) -> Value {
        json!({
            "metadata": {"name": "layerlink", "resourceVersion": seconds.to_string()},
            "summary": {"pass": 1, "fail": 0},
            "results": [{"rule": "images-pinned", "result": result, "timestamp": {"seconds": seconds, "nanos": 0}}],
        })
    }

    #[test]
    fn a_report_that_says_the_same_is_not_rewritten() {
        assert!(same(&report("pass", 1), &report("pass", 2)));
        assert!(!same(&report("pass", 1), &report("fail", 1)));
        let mut summary = report("pass", 1);
        summary["summary"]["fail"] = json!(1);
        assert!(!same(&summary, &report("pass", 1)));
        let mut truncated = report("pass", 1);
        truncated["metadata"]["annotations"] = json!({ (crate::reports::TRUNCATED_ANNOTATION): "1 of 2 left out" });
        assert!(!same(&truncated, &report("pass", 1)));
        assert!(!same(&json!({}), &report("pass", 1)));
    }
}
