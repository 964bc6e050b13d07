use serde_json::json;

use super::*;
use crate::engine::{Pin, Problem};

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn owner(kind: &str, name: &str, uid: &str) -> Value {
    let api_version = if kind == "Job" || kind == "CronJob" { "batch/v1" } else { "apps/v1" };
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": true})
}

fn object(namespace: &str, name: &str, uid: &str, owner: Option<Value>, images: &[&str]) -> Value {
    let containers: Vec<Value> =
        images.iter().enumerate().map(|(i, image)| json!({"name": format!("c{i}"), "image": image})).collect();
    json!({
        "metadata": {"name": name, "namespace": namespace, "uid": uid,
            "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
        "spec": {"containers": containers}
    })
}

fn collect(objects: &[(&str, Value)]) -> Vec<(Workload, Vec<sites::Site>, usize)> {
    let config = Config::parse("exclude: {namespaces: [infra]}").unwrap();
    let mut collector = Collector::default();
    for (kind, object) in objects {
        collector.add(&config, kind, object);
    }
    collector.finish()
}

/// Pods count under their top-level workload whatever order they are listed in; the same images
/// are planned once per workload; excluded namespaces and other kinds are left out.
#[test]
fn pods_are_grouped_under_their_workload() {
    let objects = [
        ("Pod", object("shop", "web-1-a", "p1", Some(owner("ReplicaSet", "web-1", "rs1")), &["nginx:1.25"])),
        ("Pod", object("shop", "web-1-b", "p2", Some(owner("ReplicaSet", "web-1", "rs1")), &["nginx:1.25"])),
        ("Pod", object("shop", "nightly-1-x", "p3", Some(owner("Job", "nightly-1", "j1")), &["busybox"])),
        ("Pod", object("shop", "db-0", "p4", Some(owner("StatefulSet", "db", "ss1")), &["redis:7"])),
        ("Pod", object("shop", "lonely", "p5", None, &["alpine:3"])),
        ("Pod", object("shop", "own-rs-x", "p6", Some(owner("ReplicaSet", "own-rs", "rs2")), &["alpine:3"])),
        ("Pod", object("infra", "hidden", "p7", None, &["alpine:3"])),
        ("ReplicaSet", object("shop", "web-1", "rs1", Some(owner("Deployment", "web", "d1")), &[])),
        ("ReplicaSet", object("shop", "own-rs", "rs2", None, &[])),
        ("Job", object("shop", "nightly-1", "j1", Some(owner("CronJob", "nightly", "cj1")), &[])),
        ("Deployment", object("shop", "web", "d1", None, &["nginx:1.25"])),
    ];
    let groups = collect(&objects);
    let summary: Vec<(String, String, String, usize)> = groups
        .iter()
        .map(|(w, sites, pods)| (format!("{}/{}", w.kind, w.name), w.uid.clone(), sites[0].image.clone(), *pods))
        .collect();
    let expect = |w: &str, uid: &str, image: &str, pods| (w.to_string(), uid.to_string(), image.to_string(), pods);
    assert_eq!(
        summary,
        vec![
            expect("CronJob/nightly", "cj1", "busybox", 1),
            expect("Deployment/web", "d1", "nginx:1.25", 2),
            expect("Pod/lonely", "p5", "alpine:3", 1),
            expect("ReplicaSet/own-rs", "rs2", "alpine:3", 1),
            expect("StatefulSet/db", "ss1", "redis:7", 1),
        ]
    );
    assert_eq!(groups[1].0.api_version, "apps/v1");
    assert_eq!(groups[2].0.api_version, "v1");
}

fn workload(namespace: &str, kind: &str, name: &str) -> Workload {
    Workload {
        namespace: namespace.into(),
        kind: kind.into(),
        name: name.into(),
        api_version: "apps/v1".into(),
        uid: format!("uid-{name}"),
    }
}

fn site(image: &str) -> sites::Site {
    sites::Site { pointer: "/spec/containers/0/image".into(), image: image.into(), container: "app".into() }
}

fn pin(image: &str, stale: Option<&str>) -> Pin {
    Pin { site: site(image), pinned: format!("{image}@{D}"), digest: D.into(), stale: stale.map(Into::into) }
}

fn problem(image: &str, cause: &'static str) -> Problem {
    Problem { site: site(image), reason: format!("{image}: {cause}"), cause }
}

fn results(report: &Value) -> Vec<(String, String, String, String)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (r["resources"][0]["name"].as_str().unwrap().to_string(), s("rule"), s("result"), s("message"))
        })
        .collect()
}

#[test]
fn results_per_workload_and_rule() {
    let workloads = vec![
        (workload("shop", "Deployment", "web"), Plan { pins: vec![pin("nginx:1.25", None)], ..Plan::default() }, 3),
        (workload("shop", "StatefulSet", "db"), Plan { already_pinned: 2, ..Plan::default() }, 1),
        (
            workload("shop", "DaemonSet", "agent"),
            Plan {
                pins: vec![pin("agent:2", None)],
                problems: vec![problem("agent-init:9", "not_found")],
                ..Plan::default()
            },
            2,
        ),
        (
            workload("shop", "Deployment", "api"),
            Plan { problems: vec![problem("api:1", "timeout")], ..Plan::default() },
            1,
        ),
        (
            workload("shop", "Deployment", "cached"),
            Plan { pins: vec![pin("c:1", Some("registry down"))], ..Plan::default() },
            1,
        ),
        (workload("shop", "Deployment", "excluded-only"), Plan { excluded: 1, ..Plan::default() }, 1),
    ];
    let reports = build(&workloads, &["shop".into(), "empty".into()], 1_700_000_000);
    assert_eq!(reports.len(), 2);
    let (empty, shop) = (&reports[0], &reports[1]);
    assert_eq!(empty["metadata"]["namespace"], "empty");
    assert_eq!(empty["results"], json!([]));
    assert_eq!(empty["summary"], json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}));

    assert_eq!(shop["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(shop["kind"], "PolicyReport");
    assert_eq!(shop["metadata"]["name"], REPORT_NAME);
    assert_eq!(shop["metadata"]["namespace"], "shop");
    let got = results(shop);
    let row = |name: &str, rule: &str, result: &str, message: String| {
        (name.to_string(), rule.to_string(), result.to_string(), message)
    };
    assert_eq!(
        got,
        vec![
            row(
                "agent",
                RULE_PINNED,
                "fail",
                format!(
                    "not pinned by digest: agent:2 would pin to agent:2@{D}; agent-init:9 cannot be pinned (see image-resolvable)"
                )
            ),
            row("agent", RULE_RESOLVABLE, "fail", "cannot resolve agent-init:9: agent-init:9: not_found".into()),
            row(
                "api",
                RULE_PINNED,
                "fail",
                "not pinned by digest: api:1 cannot be pinned (see image-resolvable)".into()
            ),
            row("api", RULE_RESOLVABLE, "error", "cannot resolve api:1: api:1: timeout".into()),
            row("cached", RULE_PINNED, "fail", format!("not pinned by digest: c:1 would pin to c:1@{D}")),
            row("cached", RULE_RESOLVABLE, "warn", "resolved from the cache only: c:1 (registry down)".into()),
            row("web", RULE_PINNED, "fail", format!("not pinned by digest: nginx:1.25 would pin to nginx:1.25@{D}")),
            row("web", RULE_RESOLVABLE, "pass", "every unpinned image resolves to a digest".into()),
            row("db", RULE_PINNED, "pass", "every image is pinned by digest".into()),
        ]
    );
    assert_eq!(shop["summary"], json!({"pass": 2, "fail": 5, "warn": 1, "error": 1, "skip": 0}));
    let first = &shop["results"][0];
    assert_eq!(first["policy"], "layerlink");
    assert_eq!(first["source"], "layerlink");
    assert_eq!(first["scored"], true);
    assert_eq!(first["timestamp"], json!({"seconds": 1_700_000_000, "nanos": 0}));
    assert_eq!(first["properties"]["pods"], "2");
    assert_eq!(
        first["resources"],
        json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "namespace": "shop", "uid": "uid-agent"}])
    );
}

/// Pods of one workload with different images (a rollout in progress) give one result that
/// names each image once.
#[test]
fn one_result_for_every_pod_of_a_workload() {
    let web = workload("shop", "Deployment", "web");
    let workloads = vec![
        (web.clone(), Plan { pins: vec![pin("nginx:1.25", None)], ..Plan::default() }, 2),
        (web.clone(), Plan { pins: vec![pin("nginx:1.25", None), pin("nginx:1.26", None)], ..Plan::default() }, 1),
        (web, Plan { already_pinned: 1, ..Plan::default() }, 1),
    ];
    let report = &build(&workloads, &[], 0)[0];
    let got = results(report);
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].3,
        format!("not pinned by digest: nginx:1.25 would pin to nginx:1.25@{D}; nginx:1.26 would pin to nginx:1.26@{D}")
    );
    assert_eq!(report["results"][0]["properties"]["pods"], "4");
}

/// Past the size limit the passes go first, the summary still counts everything, and an
/// annotation says what was left out.
#[test]
fn a_report_over_its_size_keeps_failures_and_says_so() {
    let long = "x".repeat(4000);
    let mut workloads = Vec::new();
    for i in 0..1000 {
        // Long and short messages in turn: what is kept must still be the first in order.
        let path = if i % 2 == 0 { long.as_str() } else { "short" };
        let plan = Plan { pins: vec![pin(&format!("registry.example/{path}/app{i}:1"), None)], ..Plan::default() };
        workloads.push((workload("big", "Deployment", &format!("fail-{i:04}")), plan, 1));
    }
    for i in 0..500 {
        workloads.push((
            workload("big", "Deployment", &format!("pass-{i:04}")),
            Plan { already_pinned: 1, ..Plan::default() },
            1,
        ));
    }
    let report = &build(&workloads, &[], 0)[0];
    let size = serde_json::to_vec(report).unwrap().len();
    assert!(size <= MAX_REPORT_BYTES, "{size}");
    let kept = report["results"].as_array().unwrap();
    assert!(kept.len() > 300, "{}", kept.len());
    // Messages are bounded, and every failure is kept before any pass.
    assert!(kept.iter().all(|r| r["message"].as_str().unwrap().chars().count() <= MAX_MESSAGE_CHARS + 1));
    assert!(kept.iter().all(|r| r["result"] == "fail"), "a pass kept while failures were left out");
    let names: Vec<String> = kept.iter().map(|r| r["resources"][0]["name"].as_str().unwrap().to_string()).collect();
    let first: Vec<String> = (0..kept.len()).map(|i| format!("fail-{i:04}")).collect();
    assert_eq!(names, first, "the kept results are the first ones, not whatever still fits");
    assert_eq!(report["summary"]["fail"], 1000);
    assert_eq!(report["summary"]["pass"], 1500);
    let note = report["metadata"]["annotations"][TRUNCATED_ANNOTATION].as_str().unwrap();
    assert!(note.starts_with(&format!("{} of 2500 results left out", 2500 - kept.len())), "{note}");

    let small = &build(&workloads[1000..], &[], 0)[0];
    assert_eq!(small["results"].as_array().unwrap().len(), 500);
    assert!(small["metadata"].get("annotations").is_none());
}
