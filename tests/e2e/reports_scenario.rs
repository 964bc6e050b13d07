//! PolicyReports written by `layerlink serve` (`reports.policyReports`) into the real API server,
//! with the CRD of `manifests/components/policyreport`.
//!
//! Wired into tests/e2e.rs as a child module, like `install_scenario`.

use std::{path::Path, time::Duration};

use serde_json::Value;

use super::{Ctx, Kind, MODE, ensure, expect_eq, pod, wait_for, workload};

const NS: &str = "s19-reports";
/// The namespace label the test's `reports.namespaceSelector` selects, so that the namespaces
/// of other scenarios are not reported.
const SELECT: &str = "e2e.layerlink.io/reports";
const LEASE_NAMESPACE: &str = "default";
/// Long enough for a scan (5 s apart), a batch (2 s) and a write.
const REPORTED: Duration = Duration::from_secs(40);
/// A lease (15 s) must expire before another replica takes it, then it scans at once.
const TAKEOVER: Duration = Duration::from_secs(60);

/// 19. The CRD installed; two layerlinks with `reports.policyReports` share one Lease. The one
///     that serves the webhook leads: an audit namespace's unpinned bare pod and a Deployment's
///     pods are fail results (under the Deployment, once) naming the digest they would pin to,
///     a pinned pod a pass; a server-side dry run leaves the report as it was; pinning the
///     Deployment's template turns its result to pass on a later scan. The other replica
///     writes nothing until the leader stops, then takes the lease and reports a pod created
///     after.
pub fn policy_reports(ctx: &mut Ctx) -> Result<(), String> {
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/components/policyreport/crd.yaml");
    ctx.kubectl.ok(&["apply", "-f", crd.to_str().unwrap()], None)?;
    ctx.kubectl
        .ok(&["wait", "--for=condition=established", "--timeout=30s", "crd/policyreports.wgpolicyk8s.io"], None)?;
    let config = format!("reports: {{ policyReports: true, scanInterval: 5s, namespaceSelector: \"{SELECT}=on\" }}\n");
    ctx.layerlink = ctx.start_layerlink("allow", &config, None);
    ctx.install(vec![ctx.standard()])?;
    ctx.namespace(NS, &[(MODE, "audit"), (SELECT, "on")])?;

    let (app, init) = (ctx.img("team/app:v1"), ctx.img("team/init:v1"));
    let (pinned_app, pinned_init) = (ctx.pinned("team/app", "v1"), ctx.pinned("team/init", "v1"));
    ctx.kubectl.create(&pod(NS, "bare", &[], &[("app", app.clone())]))?;
    ctx.kubectl.create(&pod(NS, "pinned", &[], &[("app", pinned_app.clone())]))?;
    ctx.kubectl.create(&workload(Kind::Deployment, NS, "web", 2, &[("init", init)], &[("app", app.clone())]))?;
    ctx.wait_pods(Kind::Deployment, NS, "web", 2)?;

    let report = wait_report(ctx, REPORTED, |r| {
        // Both of the Deployment's pods: a rescan can run between the two admissions.
        pinned_result(r, "Deployment", "web").is_some_and(|web| web["properties"]["pods"] == "2")
            && pinned_result(r, "Pod", "bare").is_some()
            && pinned_result(r, "Pod", "pinned").is_some()
    })?;
    let bare = pinned_result(&report, "Pod", "bare").unwrap();
    expect_eq("bare pod", &bare["result"], &"fail".into())?;
    let message = bare["message"].as_str().unwrap_or("");
    ensure(message.contains(&format!("{app} would pin to {pinned_app}")), format!("bare pod's message: {message}"))?;
    for (key, want) in [("policy", "layerlink"), ("source", "layerlink")] {
        expect_eq(key, &bare[key], &want.into())?;
    }
    expect_eq("scored", &bare["scored"], &true.into())?;
    expect_eq("resource namespace", &bare["resources"][0]["namespace"], &NS.into())?;

    let web = pinned_result(&report, "Deployment", "web").unwrap();
    expect_eq("Deployment", &web["result"], &"fail".into())?;
    let message = web["message"].as_str().unwrap_or("");
    for pinned in [&pinned_app, &pinned_init] {
        ensure(message.contains(pinned.as_str()), format!("Deployment's message lacks {pinned}: {message}"))?;
    }
    expect_eq("pods of the Deployment", &web["properties"]["pods"], &"2".into())?;
    expect_eq("pinned pod", &pinned_result(&report, "Pod", "pinned").unwrap()["result"], &"pass".into())?;
    let subjects: Vec<String> = results(&report).iter().map(subject).collect();
    ensure(
        !subjects.iter().any(|s| s.starts_with("ReplicaSet/") || s.starts_with("Pod/web-")),
        format!("the Deployment's pods are reported apart from it: {subjects:?}"),
    )?;
    let summary = &report["summary"];
    ensure(summary["fail"].as_u64() >= Some(2) && summary["pass"].as_u64() >= Some(1), format!("summary: {summary}"))?;

    // A server-side dry run: nothing stored, so nothing reported and the report not rewritten.
    let version = report["metadata"]["resourceVersion"].clone();
    let dry = pod(NS, "dry", &[], &[("app", ctx.img("team/sidecar:v1"))]);
    ctx.kubectl.ok(&["create", "--dry-run=server", "-f", "-"], Some(&dry.to_string()))?;
    std::thread::sleep(Duration::from_secs(12));
    let after_dry = get_report(ctx).ok_or("the report is gone")?;
    expect_eq("resourceVersion after a dry run", &after_dry["metadata"]["resourceVersion"], &version)?;
    ensure(!after_dry.to_string().contains("sidecar"), format!("the dry run is reported: {after_dry}"))?;

    // Pinning the template: a new ReplicaSet's pods run pinned images, the old pods are gone.
    let set = [format!("app={pinned_app}"), format!("init={pinned_init}")];
    ctx.kubectl.ok(&["-n", NS, "set", "image", "deployment/web", &set[0], &set[1]], None)?;
    wait_report(ctx, REPORTED, |r| pinned_result(r, "Deployment", "web").is_some_and(|w| w["result"] == "pass"))?;

    // One lease, two replicas: the first leads and writes, the second waits.
    let first = ctx.layerlink.pid();
    expect_holder(ctx, first)?;
    let mut second = ctx.start_layerlink("allow", &config, None);
    std::thread::sleep(Duration::from_secs(8));
    expect_holder(ctx, first)?;
    let log = second.log();
    ensure(
        !log.contains("reports: leading") && !log.contains("reports: scan"),
        format!("the second replica leads or writes:\n{}", super::tail(&log, 10)),
    )?;
    ensure(ctx.layerlink.log().contains("reports: scan"), "the leader's log has no scan".to_string())?;

    // The leader stops (no hand-over): the second takes the lease once it has expired.
    ctx.layerlink.stop();
    ctx.kubectl.create(&pod(NS, "after", &[], &[("app", app)]))?;
    let report = wait_report(ctx, TAKEOVER, |r| pinned_result(r, "Pod", "after").is_some())
        .map_err(|e| format!("{e}; second replica's log:\n{}", super::tail(&second.log(), 10)))?;
    expect_eq("pod created after", &pinned_result(&report, "Pod", "after").unwrap()["result"], &"fail".into())?;
    expect_holder(ctx, second.pid())?;
    ensure(second.log().contains("reports: leading"), "the second replica never logged leading".to_string())?;
    second.stop();
    Ok(())
}

fn get_report(ctx: &Ctx) -> Option<Value> {
    ctx.kubectl.get("policyreport", NS, "layerlink").ok()
}

/// Waits for the report to satisfy `done`; the error shows the last one seen.
fn wait_report(ctx: &Ctx, timeout: Duration, done: impl Fn(&Value) -> bool) -> Result<Value, String> {
    let mut last = None;
    wait_for(timeout, || {
        let report = get_report(ctx)?;
        let ok = done(&report);
        last = Some(report.clone());
        ok.then_some(report)
    })
    .ok_or_else(|| {
        let seen: Vec<String> = last.as_ref().map(results).unwrap_or_default().iter().map(describe).collect();
        format!("no such report within {timeout:?}; results: {seen:?}")
    })
}

fn results(report: &Value) -> Vec<Value> {
    report["results"].as_array().cloned().unwrap_or_default()
}

/// `Kind/name` of a result's resource.
fn subject(result: &Value) -> String {
    let resource = &result["resources"][0];
    format!("{}/{}", resource["kind"].as_str().unwrap_or("?"), resource["name"].as_str().unwrap_or("?"))
}

fn describe(result: &Value) -> String {
    format!(
        "{} {} {}",
        subject(result),
        result["rule"].as_str().unwrap_or("?"),
        result["result"].as_str().unwrap_or("?")
    )
}

/// The `images-pinned` result of one workload or pod.
fn pinned_result(report: &Value, kind: &str, name: &str) -> Option<Value> {
    results(report).into_iter().find(|r| r["rule"] == "images-pinned" && subject(r) == format!("{kind}/{name}"))
}

/// The Lease is held by the layerlink process `pid` (identities are `host_pid_suffix`).
fn expect_holder(ctx: &Ctx, pid: u32) -> Result<(), String> {
    let lease = ctx.kubectl.get("lease", LEASE_NAMESPACE, "layerlink-reports")?;
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or("");
    ensure(holder.contains(&format!("_{pid}_")), format!("lease held by {holder:?}, not process {pid}"))
}
