//! `layerlink audit`: lists the running Pods and workloads (the kinds of `kinds::ALL` that run
//! pods: Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs,
//! ReplicationControllers) whose images are not pinned,
//! and what each would be pinned to, as a table or `-o json`. Read-only: it only lists objects
//! (with the kubeconfig's identity) and asks registries for digests with the webhook's engine and
//! config (`exclude.namespaces`, `exclude.images` and, with `allowPodOptOut`, the skip
//! annotation apply as in the webhook). Pull secrets are not read, so private images need
//! `registries[].credentialsFile` in the config.
//!
//! Pods and the workloads that own them are both listed; the OWNER column (the first
//! ownerReference) tells them apart.

use std::sync::Arc;

use futures::future::join_all;
use serde::Serialize;
use serde_json::Value;

use crate::{
    Engine, Error,
    engine::{Deadline, Plan},
    kinds,
    policy::skip_reason,
    registry::auth::Keychain,
    sites,
};

/// One unpinned image of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// `Kind/name` of the first ownerReference.
    pub owner: Option<String>,
    pub container: String,
    pub image: String,
    /// The pinned reference, when the image resolved.
    pub would_pin_to: Option<String>,
    /// Why it cannot be pinned, when it did not.
    pub reason: Option<String>,
}

/// Every object of the kinds that run pods ([`kinds::ALL`]) in `namespace` (or all namespaces)
/// as (kind, object), and a note for each kind that could not be listed (not served by this
/// cluster, or forbidden).
pub async fn list_objects(
    client: &kube::Client,
    namespace: Option<&str>,
    page_size: u32,
) -> Result<(Vec<(&'static str, Value)>, Vec<String>), Error> {
    let mut objects = Vec::new();
    let mut skipped = Vec::new();
    for kind in kinds::ALL.iter().filter(|k| k.runs_pods) {
        match list(client, kind, namespace, page_size).await? {
            Ok(items) => objects.extend(items.into_iter().map(|item| (kind.kind, item))),
            Err(note) => skipped.push(format!("{}: {note}; skipped", kind.kind)),
        }
    }
    Ok((objects, skipped))
}

/// All objects of one kind, page by page: Ok(Err(note)) when the cluster does not serve the kind
/// (404, e.g. batch/v1 CronJob before 1.21) or refuses to list it (403).
async fn list(
    client: &kube::Client,
    kind: &kinds::Kind,
    namespace: Option<&str>,
    page_size: u32,
) -> Result<Result<Vec<Value>, String>, Error> {
    use kube::{api::ApiResource, core::DynamicObject};
    let resource = ApiResource {
        group: kind.group.into(),
        version: kind.version.into(),
        api_version: kind.api_version(),
        kind: kind.kind.into(),
        plural: kind.plural.into(),
    };
    let api: kube::Api<DynamicObject> = match namespace {
        Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &resource),
        None => kube::Api::all_with(client.clone(), &resource),
    };
    let mut params = kube::api::ListParams::default().limit(page_size);
    let mut items = Vec::new();
    loop {
        let page = match api.list(&params).await {
            Ok(page) => page,
            Err(kube::Error::Api(status)) if matches!(status.code, 403 | 404) => {
                return Ok(Err(format!("cannot list: {} ({})", status.message, status.code)));
            }
            Err(e) => return Err(Error::kube(format!("listing {}", kind.plural), e)),
        };
        for item in &page.items {
            items.push(
                serde_json::to_value(item)
                    .map_err(|e| Error::Internal(format!("cannot encode a {}: {e}", kind.kind)))?,
            );
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(Ok(items)),
        }
    }
}

/// Resolves the unpinned images of `objects` ((kind, object) as listed) with the engine, one
/// deadline (`resolve.requestTimeout`) for all, and returns one row per unpinned image, sorted by
/// namespace, kind (in [`kinds::ALL`] order) and name. Objects in `exclude.namespaces` (or opted out
/// where allowed) and images in `exclude.images` are left out.
pub async fn audit_objects(engine: &Engine, objects: &[(&str, Value)]) -> Vec<Row> {
    let deadline = Deadline::after(engine.config.resolve.request_timeout);
    let keychain = Arc::new(Keychain::default());
    let wanted: Vec<(&str, &Value, Vec<sites::Site>)> = objects
        .iter()
        .filter_map(|(kind, object)| {
            let shape = sites::shape(kind)?;
            skip_reason(&engine.config, shape, object).is_none().then(|| (*kind, object, sites::find(shape, object)))
        })
        .collect();
    let plans = join_all(wanted.iter().map(|(_, _, sites)| engine.plan(sites.clone(), &keychain, deadline))).await;
    let mut all: Vec<Row> =
        wanted.iter().zip(&plans).flat_map(|((kind, object, _), plan)| rows(kind, object, plan)).collect();
    let kind_rank = |kind: &str| kinds::ALL.iter().position(|k| k.kind == kind).unwrap_or(kinds::ALL.len());
    all.sort_by(|a, b| (&a.namespace, kind_rank(&a.kind), &a.name).cmp(&(&b.namespace, kind_rank(&b.kind), &b.name)));
    all
}

/// The rows of one object: one per image the plan pins or cannot pin, in container order (init,
/// regular, ephemeral). Already pinned and excluded images have none.
pub fn rows(kind: &str, object: &Value, plan: &Plan) -> Vec<Row> {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or("").to_string();
    let owner = object.pointer("/metadata/ownerReferences/0").map(|o| {
        let field = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("?");
        format!("{}/{}", field("kind"), field("name"))
    });
    let row = |site: &sites::Site, would_pin_to: Option<String>, reason: Option<String>| Row {
        namespace: text("/metadata/namespace"),
        kind: kind.to_string(),
        name: text("/metadata/name"),
        owner: owner.clone(),
        container: site.container.clone(),
        image: site.image.clone(),
        would_pin_to,
        reason,
    };
    let mut found: Vec<(ContainerOrder, Row)> = plan
        .pins
        .iter()
        .map(|pin| (container_order(&pin.site.pointer), row(&pin.site, Some(pin.pinned.clone()), None)))
        .chain(
            plan.problems
                .iter()
                .map(|p| (container_order(&p.site.pointer), row(&p.site, None, Some(p.reason.clone())))),
        )
        .collect();
    found.sort_by_key(|(order, _)| *order);
    found.into_iter().map(|(_, row)| row).collect()
}

type ContainerOrder = (usize, usize);

/// (list, index) of a site pointer `…/<list>/<index>/image`, lists in `sites::find` order.
fn container_order(pointer: &str) -> ContainerOrder {
    let mut tokens = pointer.rsplit('/').skip(1);
    let index = tokens.next().and_then(|i| i.parse().ok()).unwrap_or(usize::MAX);
    let list = match tokens.next() {
        Some("initContainers") => 0,
        Some("containers") => 1,
        Some("ephemeralContainers") => 2,
        _ => 3,
    };
    (list, index)
}

const HEADERS: [&str; 6] = ["NAMESPACE", "KIND/NAME", "OWNER", "CONTAINER", "IMAGE", "WOULD PIN TO"];

/// Aligned columns like kubectl's, with a header; a row that cannot be pinned says why in the
/// last column.
pub fn render_table(rows: &[Row]) -> String {
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.namespace.clone(),
                format!("{}/{}", r.kind, r.name),
                r.owner.clone().unwrap_or_else(|| "-".into()),
                r.container.clone(),
                r.image.clone(),
                match (&r.would_pin_to, &r.reason) {
                    (Some(pinned), _) => pinned.clone(),
                    (None, Some(reason)) => format!("cannot pin: {reason}"),
                    (None, None) => "-".into(),
                },
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADERS.map(String::from);
    for row in std::iter::once(&header).chain(&cells) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A JSON array of rows: `namespace`, `kind`, `name`, `owner` (null if none), `container`,
/// `image`, and `wouldPinTo` or `reason` (the other is null).
pub fn render_json(rows: &[Row]) -> String {
    serde_json::to_string_pretty(rows).expect("rows serialize")
}

/// One line for stderr: how many unpinned images, how many would pin.
pub fn summary(rows: &[Row], objects: usize) -> String {
    let pinnable = rows.iter().filter(|r| r.would_pin_to.is_some()).count();
    let owners: std::collections::BTreeSet<(&str, &str, &str)> =
        rows.iter().map(|r| (r.namespace.as_str(), r.kind.as_str(), r.name.as_str())).collect();
    format!(
        "{} unpinned image(s) in {} of {objects} listed object(s): {pinnable} would pin, {} cannot",
        rows.len(),
        owners.len(),
        rows.len() - pinnable
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use crate::{
        engine::{Pin, Problem},
        sites::Site,
    };
    use serde_json::json;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-7d4b9-x2x", "namespace": "shop",
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9", "uid": "u", "controller": true},
                    {"apiVersion": "v1", "kind": "Other", "name": "second", "uid": "v"}
                ]
            },
            "spec": {
                "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                "containers": [
                    {"name": "app", "image": "ghcr.io/org/app:v1"},
                    {"name": "pinned", "image": format!("redis@{D}")},
                    {"name": "gone", "image": "ghcr.io/org/app:nope"}
                ]
            }
        })
    }

    fn plan() -> Plan {
        let object = pod();
        let sites = sites::find(sites::Shape::Pod, &object);
        let pin = |s: &Site| Pin { site: s.clone(), pinned: format!("{}@{D}", s.image), digest: D.into(), stale: None };
        Plan {
            // Out of container order on purpose.
            pins: vec![pin(&sites[1]), pin(&sites[0])],
            problems: vec![Problem {
                site: sites[3].clone(),
                reason: "manifest ghcr.io/org/app:nope not found".into(),
                cause: "not_found",
            }],
            already_pinned: 1,
            excluded: 0,
        }
    }

    #[test]
    fn rows_from_a_pod_and_its_plan() {
        let rows = rows("Pod", &pod(), &plan());
        let summary: Vec<(&str, &str, Option<&str>, Option<&str>)> = rows
            .iter()
            .map(|r| (r.container.as_str(), r.image.as_str(), r.would_pin_to.as_deref(), r.reason.as_deref()))
            .collect();
        let pinned_app = format!("ghcr.io/org/app:v1@{D}");
        let pinned_busybox = format!("busybox:1.36@{D}");
        assert_eq!(
            summary,
            vec![
                ("init", "busybox:1.36", Some(pinned_busybox.as_str()), None),
                ("app", "ghcr.io/org/app:v1", Some(pinned_app.as_str()), None),
                ("gone", "ghcr.io/org/app:nope", None, Some("manifest ghcr.io/org/app:nope not found")),
            ]
        );
        for row in &rows {
            assert_eq!(
                (row.namespace.as_str(), row.kind.as_str(), row.name.as_str()),
                ("shop", "Pod", "web-7d4b9-x2x")
            );
            assert_eq!(row.owner.as_deref(), Some("ReplicaSet/web-7d4b9"));
        }
    }

    #[test]
    fn rows_of_a_workload_without_owner() {
        let deployment = json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}}
        });
        let sites = sites::find(sites::shape("Deployment").unwrap(), &deployment);
        let plan = Plan {
            pins: vec![Pin {
                site: sites[0].clone(),
                pinned: format!("nginx:latest@{D}"),
                digest: D.into(),
                stale: None,
            }],
            ..Plan::default()
        };
        let rows = rows("Deployment", &deployment, &plan);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].owner, None);
        assert_eq!(rows[0].container, "app");
        assert!(super::rows("Deployment", &deployment, &Plan::default()).is_empty());
    }

    #[test]
    fn table_is_aligned_and_says_why() {
        let rows = rows("Pod", &pod(), &plan());
        let table = render_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("NAMESPACE   KIND/NAME           OWNER                  CONTAINER   IMAGE"),
            "{table}"
        );
        assert!(lines[0].ends_with("WOULD PIN TO"));
        let column = lines[0].find("IMAGE").unwrap();
        for line in &lines[1..] {
            assert_eq!(line.find("ghcr.io").or_else(|| line.find("busybox")), Some(column), "{table}");
            assert!(line.starts_with("shop        Pod/web-7d4b9-x2x   ReplicaSet/web-7d4b9   "), "{table}");
        }
        assert!(lines[1].ends_with(&format!("busybox:1.36@{D}")));
        assert!(lines[3].ends_with("cannot pin: manifest ghcr.io/org/app:nope not found"), "{table}");
        let mut no_owner = rows[0].clone();
        no_owner.owner = None;
        assert!(render_table(&[no_owner]).lines().nth(1).unwrap().contains("   -   "));
        assert_eq!(render_table(&[]).trim_end(), "NAMESPACE   KIND/NAME   OWNER   CONTAINER   IMAGE   WOULD PIN TO");
    }

    #[test]
    fn json_has_every_field() {
        let rows = rows("Pod", &pod(), &plan());
        let json: Value = serde_json::from_str(&render_json(&rows)).unwrap();
        assert_eq!(
            json[0],
            json!({
                "namespace": "shop", "kind": "Pod", "name": "web-7d4b9-x2x", "owner": "ReplicaSet/web-7d4b9",
                "container": "init", "image": "busybox:1.36", "wouldPinTo": format!("busybox:1.36@{D}"), "reason": null
            })
        );
        assert_eq!(json[2]["wouldPinTo"], Value::Null);
        assert_eq!(json[2]["reason"], "manifest ghcr.io/org/app:nope not found");
        assert_eq!(render_json(&[]), "[]");
        assert_eq!(summary(&rows, 5), "3 unpinned image(s) in 1 of 5 listed object(s): 2 would pin, 1 cannot");
    }

    #[test]
    fn container_order_follows_sites() {
        assert!(container_order("/spec/initContainers/3/image") < container_order("/spec/containers/0/image"));
        assert!(container_order("/spec/containers/2/image") < container_order("/spec/containers/10/image"));
        assert!(
            container_order("/spec/template/spec/containers/9/image")
                < container_order("/spec/ephemeralContainers/0/image")
        );
    }

    /// Exclusions and already pinned images give no rows, without asking any registry.
    #[tokio::test]
    async fn excluded_and_pinned_objects_have_no_rows() {
        crate::install_crypto_provider();
        let engine = Engine::new(
            Config::parse("exclude: {namespaces: [kube-system, infra], images: [\"ghcr.io/org/*\"]}").unwrap(),
        )
        .unwrap();
        let in_infra = json!({"metadata": {"name": "a", "namespace": "infra"},
            "spec": {"containers": [{"name": "c", "image": "unresolvable.invalid/x:1"}]}});
        let excluded_image = json!({"metadata": {"name": "b", "namespace": "shop"},
            "spec": {"containers": [{"name": "c", "image": "ghcr.io/org/app:v1"}]}});
        let pinned = json!({"metadata": {"name": "c", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": format!("redis@{D}")}]}}}});
        let config_map = json!({"metadata": {"name": "d", "namespace": "shop"}, "data": {"image": "x:1"}});
        let objects = [("Pod", in_infra), ("Pod", excluded_image), ("Deployment", pinned), ("ConfigMap", config_map)];
        assert_eq!(audit_objects(&engine, &objects).await, vec![]);
    }
}
