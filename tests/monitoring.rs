//! What Prometheus sees: `/metrics` checked by `promtool` (Debian's `prometheus` package) in the
//! Prometheus text format and scraped as OpenMetrics by a real Prometheus server; the shipped
//! alerts checked and unit-tested with `promtool`; every metric and label the dashboard and the
//! alerts query found in a live scrape, with the target labels a ServiceMonitor adds. And the
//! log a served review leaves, read back as JSON.

#[path = "support/promql.rs"]
mod promql;
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use layerlink::admission::fixtures;
use promql::{labels_in, metrics_in};
use serde_json::Value;
use support::{Registry, image, webhook::Webhook};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `promtool args…` with `stdin`; its exit status and output.
fn promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool on PATH (Debian package prometheus; hack/test-deps.sh installs it)");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

async fn scrape(webhook: &Webhook, accept: Option<&str>) -> (String, String) {
    layerlink::install_crypto_provider();
    let mut request = reqwest::Client::new().get(format!("http://{}/metrics", webhook.http));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    (content_type, response.text().await.unwrap())
}

fn families(exposition: &str) -> BTreeSet<String> {
    exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_every_family_is_listed_from_start_up() {
    let webhook = Webhook::start("");
    let (content_type, at_start) = scrape(&webhook, None).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let (ok, lint) = promtool(&["check", "metrics"], &at_start);
    assert!(ok, "promtool check metrics at start-up:\n{lint}\n{at_start}");
    for line in [
        "# TYPE layerlink_admission_requests_total counter",
        "# TYPE layerlink_admission_duration_seconds histogram",
        "# TYPE layerlink_audit_findings_total counter",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_start_time_seconds gauge",
    ] {
        assert!(at_start.lines().any(|l| l == line), "no {line:?} before any review:\n{at_start}");
    }
    let version = format!("layerlink_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(at_start.lines().any(|l| l == version), "{at_start}");

    // Reviews of every kind of answer add samples, never a family.
    let unreachable = fixtures::with_images("pod-create-simple.json", |_| "127.0.0.1:1/team/app:v1".into());
    for path in ["/mutate?timeout=2s", "/audit?timeout=2s", "/validate"] {
        webhook.review(path, &unreachable).await;
    }
    webhook.post("/mutate", b"not a review".to_vec()).await;
    for accept in [None, Some("text/plain"), Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")] {
        let (content_type, text) = scrape(&webhook, accept).await;
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{accept:?}: {content_type}");
        let (ok, lint) = promtool(&["check", "metrics"], &text);
        assert!(ok, "promtool check metrics ({accept:?}):\n{lint}\n{text}");
        assert_eq!(families(&text), families(&at_start), "families appeared after start-up");
        assert!(text.contains("layerlink_audit_findings_total{resource_namespace=\"fixtures\""), "{text}");
    }

    // What Prometheus 2.x asks for: OpenMetrics, ending in `# EOF`, with the same families.
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (content_type, open_metrics) = scrape(&webhook, Some(prometheus)).await;
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    assert!(open_metrics.ends_with("# EOF\n"), "{open_metrics}");
    assert!(open_metrics.lines().any(|l| l == "# TYPE layerlink_admission_requests counter"), "{open_metrics}");
    assert_eq!(families(&open_metrics).len(), families(&at_start).len(), "{open_metrics}");
}

/// The PrometheusRule's `spec` (its `groups`), as the rule file promtool reads; without the
/// annotations when `annotations` is false (a unit test then compares labels only).
fn rule_groups(dir: &Path, annotations: bool) -> PathBuf {
    let text = std::fs::read_to_string(repo("manifests/monitoring/prometheusrule.yaml")).unwrap();
    let rule: Value = serde_saphyr::from_str(&text).expect("prometheusrule.yaml is YAML");
    let mut spec = rule["spec"].clone();
    if !annotations {
        for group in spec["groups"].as_array_mut().unwrap() {
            for rule in group["rules"].as_array_mut().unwrap() {
                rule.as_object_mut().unwrap().remove("annotations");
            }
        }
    }
    let file = dir.join("layerlink.rules.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    file
}

#[test]
fn alerts_pass_promtool_check_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rule_groups(dir.path(), true);
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()], "");
    assert!(ok, "promtool check rules:\n{out}");
}

/// `/validate` denials are the policy working: they fire no alert. Reviews layerlink cannot read,
/// and `/mutate` denials of images it could not pin (`resolve.onError: deny`), do.
#[test]
fn validate_denials_are_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rule_groups(dir.path(), false);
    let series = |path: &str, result: &str, per_minute: u32| {
        format!(
            "      - series: 'layerlink_admission_requests_total{{job=\"layerlink\",path=\"{path}\",kind=\"Pod\",result=\"{result}\"}}'\n        values: '0+{per_minute}x40'\n"
        )
    };
    // One case: the series, then for each alert the `path` it fires for (None: silent).
    let case = |series: &[String], firing: [(&str, Option<&str>); 2]| {
        let mut text = format!("  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n", series.concat());
        for (alert, path) in firing {
            let expected = match path {
                Some(path) => format!("[{{ exp_labels: {{ severity: warning, path: {path} }} }}]"),
                None => "[]".into(),
            };
            text.push_str(&format!("      - {{ eval_time: 30m, alertname: {alert}, exp_alerts: {expected} }}\n"));
        }
        text
    };
    let policy_at_work = case(
        &[series("validate", "denied", 60), series("validate", "allowed", 10), series("enforce", "patched", 60)],
        [("LayerlinkInvalidReviews", None), ("LayerlinkDenyingUnpinnable", None)],
    );
    let broken = case(
        &[series("enforce", "denied", 30), series("enforce", "patched", 30), series("audit", "invalid", 5)],
        [("LayerlinkInvalidReviews", Some("audit")), ("LayerlinkDenyingUnpinnable", Some("enforce"))],
    );
    let tests =
        format!("rule_files: ['{}']\nevaluation_interval: 1m\ntests:\n{policy_at_work}{broken}", rules.display());
    let file = dir.path().join("tests.yaml");
    std::fs::write(&file, &tests).unwrap();
    let (ok, out) = promtool(&["test", "rules", file.to_str().unwrap()], "");
    assert!(ok, "promtool test rules:\n{out}\n{tests}");
}

/// A Prometheus server (Debian's `prometheus`) scraping one target every second, as a
/// ServiceMonitor would: job `layerlink`, the target's `namespace` label, `honor_labels: false`.
struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: layerlink\n    static_configs:\n      - targets: ['{target}']\n        labels: {{ namespace: layerlink-system }}\n"
            ),
        )
        .unwrap();
        let address = format!("127.0.0.1:{}", support::webhook::free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus on PATH (Debian package prometheus; hack/test-deps.sh installs it)");
        Prometheus { child, dir, url: format!("http://{address}") }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The result vector of an instant query (empty while the server is starting).
    async fn query(&self, promql: &str) -> Vec<Value> {
        let response =
            reqwest::Client::new().get(format!("{}/api/v1/query", self.url)).query(&[("query", promql)]).send().await;
        let Ok(response) = response else { return Vec::new() };
        let body: Value = response.json().await.unwrap_or_default();
        assert_ne!(body["status"], "error", "{promql}: {body}");
        body["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The scrape target as Prometheus reports it (health and last error).
    async fn target(&self) -> Value {
        let url = format!("{}/api/v1/targets", self.url);
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        body["data"]["activeTargets"][0].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every PromQL expression of the alerts and the dashboard, by where it comes from.
fn shipped_queries() -> BTreeMap<String, String> {
    let mut queries = BTreeMap::new();
    let text = std::fs::read_to_string(repo("manifests/monitoring/prometheusrule.yaml")).unwrap();
    let rule: Value = serde_saphyr::from_str(&text).unwrap();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            queries.insert(format!("alert {}", rule["alert"]), rule["expr"].as_str().unwrap().to_string());
        }
    }
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("manifests/monitoring/grafana-dashboard.json")).unwrap())
            .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "5m").replace("$job", ".*");
            queries.insert(format!("panel {} {}", panel["title"], target["refId"]), expr);
        }
    }
    queries
}

/// A real Prometheus scrapes `/metrics` (it asks for OpenMetrics) after reviews that touch every
/// family the dashboard and alerts use; each metric and label they query is there, under its own
/// name (no `exported_` label from a clash with the target's labels).
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_every_metric_and_label_the_dashboard_and_alerts_query() {
    let mut registry = Registry::start();
    registry.push("team/app", "v1", &image("monitoring"));
    let host = registry.host();
    let webhook = Webhook::start(&format!(
        "registries: [{{ host: '{host}', plainHttp: true }}]\ncache: {{ ttl: 50ms, staleIfError: 1h }}\nresolve: {{ connectTimeout: 500ms }}\n"
    ));
    let review = fixtures::with_images("pod-create-simple.json", |_| format!("{host}/team/app:v1"));
    let missing = fixtures::with_images("pod-create-simple.json", |_| format!("{host}/team/missing:v1"));
    webhook.review("/mutate?timeout=10s", &review).await;
    webhook.review("/audit?timeout=10s", &missing).await;
    webhook.review("/validate", &review).await;
    registry.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stale = webhook.review("/mutate?timeout=10s", &review).await;
    assert!(stale.to_string().contains("from cache"), "served stale: {stale}");

    let prometheus = Prometheus::start(webhook.http);
    let deadline = Instant::now() + Duration::from_secs(60);
    while prometheus.query("layerlink_stale_served_total").await.is_empty() {
        if Instant::now() > deadline {
            panic!("no scrape in 60s; target {}\n{}", prometheus.target().await, prometheus.log());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let target = prometheus.target().await;
    assert_eq!(target["health"], "up", "{target}");

    let mut absent = Vec::new();
    for (source, expr) in shipped_queries() {
        for metric in metrics_in(&expr) {
            if prometheus.query(&metric).await.is_empty() {
                absent.push(format!("{source}: {metric}"));
            }
            for label in labels_in(&expr) {
                if prometheus.query(&format!("{metric}{{{label}!=\"\"}}")).await.is_empty() {
                    absent.push(format!("{source}: {metric} has no label {label}"));
                }
            }
        }
    }
    assert!(absent.is_empty(), "not in the scrape:\n{}", absent.join("\n"));
    let exported = prometheus.query("{__name__=~\"layerlink_.+\", exported_namespace!=\"\"}").await;
    assert!(exported.is_empty(), "a label clashes with the target's: {exported:?}");
    let namespaces = prometheus.query("layerlink_audit_findings_total{resource_namespace=\"fixtures\"}").await;
    assert_eq!(namespaces.len(), 1, "{namespaces:?}");
}

/// The server's JSON log lines whose `uid` is `uid`.
fn lines_of(log: &str, uid: &str) -> Vec<Value> {
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .filter(|l| l["uid"] == uid)
        .collect()
}

/// Each review leaves one JSON line with real arrays and objects, its owner and duration; a
/// registry lookup it starts carries its uid; a `/validate` refusal is logged too.
#[tokio::test(flavor = "multi_thread")]
async fn review_log_lines_are_structured_json() {
    let registry = Registry::start();
    registry.push("team/app", "v1", &image("logs"));
    let host = registry.host();
    let webhook = Webhook::start(&format!("registries: [{{ host: '{host}', plainHttp: true }}]\n"));
    let mut review = fixtures::json("pod-create-from-replicaset.json");
    let containers = &mut review["request"]["object"]["spec"]["containers"];
    containers[0]["image"] = format!("{host}/team/app:v1").into();
    let mut missing = containers[0].clone();
    missing["name"] = "sidecar".into();
    missing["image"] = format!("{host}/team/missing:v1").into();
    containers.as_array_mut().unwrap().push(missing);
    let uid = review["request"]["uid"].as_str().unwrap().to_string();
    webhook.review("/mutate?timeout=10s", &review).await;
    let mut denied = review.clone();
    denied["request"]["uid"] = "validate-uid".into();
    assert_eq!(webhook.review("/validate", &denied).await["allowed"], false);

    let log = webhook.log_when(|log| log.contains("validate-uid"));
    let lines = lines_of(&log, &uid);
    let review_line = lines.iter().find(|l| l["message"] == "review").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(review_line["decision"], "patched", "{review_line}");
    assert_eq!(review_line["owner"], serde_json::json!({"kind": "ReplicaSet", "name": "frontend"}), "{review_line}");
    assert_eq!(review_line["generate_name"], "frontend-", "{review_line}");
    assert!(review_line["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{review_line}");
    let pins = review_line["pins"].as_object().unwrap_or_else(|| panic!("pins is not an object: {review_line}"));
    assert!(pins[&format!("{host}/team/app:v1")].as_str().unwrap().contains("@sha256:"), "{review_line}");
    let problems = review_line["problems"].as_object().unwrap_or_else(|| panic!("problems: {review_line}"));
    assert_eq!(problems.keys().collect::<Vec<_>>(), [&format!("{host}/team/missing:v1")], "{review_line}");
    assert!(
        lines.iter().any(|l| l["message"] == "lookup failed" && l["image"] == format!("{host}/team/missing:v1")),
        "no lookup failed line with the review's uid:\n{log}"
    );

    let refused = lines_of(&log, "validate-uid");
    let refused = refused.iter().find(|l| l["message"] == "review").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(refused["decision"], "denied", "{refused}");
    assert_eq!(refused["object"], "fixtures/frontend-*", "{refused}");
    assert_eq!(
        refused["unpinned"],
        serde_json::json!({"php": format!("{host}/team/app:v1"), "sidecar": format!("{host}/team/missing:v1")}),
        "{refused}"
    );
}
