//! One review in, one review out. Never fails: every input, however broken, gets an
//! AdmissionReview back (`invalid` or `deny` with a message a human can act on).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::Instrument;

use super::review::{AdmissionRequest, AdmissionReview, Response, ReviewResponse};
use crate::{
    Engine,
    engine::Plan,
    logs,
    metrics::{AuditLabels, ImageLabels, Kind, PathLabels, RequestLabels},
    policy::{self, Decision, Mode},
    registry::auth::Keychain,
    sites,
};

/// Where audit findings go besides the response (Kubernetes Events, when a client exists).
pub trait Reporter: Send + Sync {
    fn report(&self, request: &AdmissionRequest, plan: &Plan);
}

/// Supplies the credentials for a pod (its pull secrets), when a cluster client exists.
#[async_trait::async_trait]
pub trait Credentials: Send + Sync {
    async fn keychain(&self, request: &AdmissionRequest) -> Arc<Keychain>;
}

/// What the handler needs besides the engine.
#[derive(Clone, Default)]
pub struct Edges {
    pub reporter: Option<Arc<dyn Reporter>>,
    pub credentials: Option<Arc<dyn Credentials>>,
    /// A controller revision's kept digests (sticky pins), when a cluster client exists.
    pub siblings: Option<Arc<dyn super::sticky::SiblingSource>>,
}

const API_VERSION_V1: &str = "admission.k8s.io/v1";

/// Decodes and answers one review. `api_timeout` is the API server's `?timeout=`.
pub async fn handle(
    engine: &Engine,
    edges: &Edges,
    mode: Mode,
    body: &[u8],
    api_timeout: Option<Duration>,
) -> ReviewResponse {
    let started = Instant::now();
    let path = mode.as_str();
    let review: AdmissionReview = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => return invalid(engine, path, "", API_VERSION_V1, format!("body is not an AdmissionReview: {e}")),
    };
    if review.kind != "AdmissionReview" || !review.api_version.starts_with("admission.k8s.io/") {
        let message =
            format!("expected kind AdmissionReview in admission.k8s.io, got {} {}", review.api_version, review.kind);
        return invalid(engine, path, "", API_VERSION_V1, message);
    }
    let Some(request) = review.request else {
        return invalid(engine, path, "", &review.api_version, "the review has no request".into());
    };
    // Every line logged while answering (registry lookups this review starts included) carries
    // the review's uid.
    let span = tracing::warn_span!("review", uid = %request.uid);
    let (response, result) = decide(engine, edges, mode, &request, body, api_timeout, started).instrument(span).await;
    let elapsed = started.elapsed();
    engine.metrics.admission_duration.get_or_create(&PathLabels { path }).observe(elapsed.as_secs_f64());
    engine
        .metrics
        .admission_requests
        .get_or_create(&RequestLabels { path, kind: Kind::of(&request.kind.kind), result })
        .inc();
    response.into_review(&review.api_version)
}

fn invalid(engine: &Engine, path: &'static str, uid: &str, api_version: &str, message: String) -> ReviewResponse {
    tracing::warn!(path, %message, "invalid review");
    engine
        .metrics
        .admission_requests
        .get_or_create(&RequestLabels { path, kind: Kind::Unread, result: "invalid" })
        .inc();
    Response::deny(uid, 400, "BadRequest", format!("layerlink: {message}")).into_review(api_version)
}

async fn decide(
    engine: &Engine,
    edges: &Edges,
    mode: Mode,
    request: &AdmissionRequest,
    body: &[u8],
    api_timeout: Option<Duration>,
    started: Instant,
) -> (Response, &'static str) {
    let uid = request.uid.as_str();
    let shape = match policy::decide(&request.subject(), &engine.config) {
        Decision::Skip(reason) => {
            tracing::debug!(uid, kind = %request.kind.kind, object = %request.object_ref(), %reason, "skipped");
            return (Response::allow(uid), "skipped");
        }
        Decision::Act(shape) => shape,
    };
    // The read-only decoder keeps only the fields of the kinds built in; a declared kind's images
    // may be anywhere, so its objects are read whole.
    let declared = engine.config.workloads.declared_kind(&request.kind.group, &request.kind.kind);
    let whole = declared.map(|_| super::object::whole_objects(body));
    let (object, old_object) = match &whole {
        Some((Some(object), old)) => (object, old.as_ref()),
        _ => {
            (request.object.as_ref().expect("policy acts only on reviews with an object"), request.old_object.as_ref())
        }
    };
    let all = sites::find(shape, object);
    let sites = if request.operation == "UPDATE" { sites::changed(all, old_object) } else { all };
    if mode == Mode::Validate {
        return validate(engine, request, sites, started);
    }
    let deadline = engine.deadline(api_timeout);
    let mut sticky = sticky_lookup(engine, edges, mode, request, shape, object, deadline).await;
    let keychain = match &edges.credentials {
        // Reading pull secrets shares the review's budget; without them the lookup is anonymous.
        Some(credentials) if !sites.is_empty() => {
            match tokio::time::timeout_at(deadline.at.into(), credentials.keychain(request)).await {
                Ok(keychain) => keychain,
                Err(_) => {
                    tracing::warn!(uid, "pull secrets not read within the budget; resolving without them");
                    Arc::default()
                }
            }
        }
        _ => Arc::default(),
    };
    let sites = match &mut sticky {
        Some(sticky) => sticky.split(engine, sites, &keychain),
        None => sites,
    };
    let mut plan = engine.plan(sites, &keychain, deadline).await;
    let behind = match (sticky, &edges.siblings) {
        (Some(sticky), Some(source)) => sticky.finish(engine, &**source, request, mode, &mut plan, &keychain).await,
        _ => Vec::new(),
    };
    record_images(engine, mode, &plan);
    match mode {
        Mode::Enforce => {
            // Pre-pull containers only on a pod's creation: init containers are immutable after.
            let inject = engine.config.prepull.enabled && request.operation == "CREATE" && shape == sites::Shape::Pod;
            // Injection reads the whole pod (volumes, resources, init containers), not just images.
            let whole = if inject { super::object::whole_object(body) } else { None };
            let extra = match &whole {
                Some(pod) => engine.prepull.inject(pod, &plan.pins, &keychain, deadline).await,
                None => Default::default(),
            };
            with_first_warnings(enforce(engine, request, &plan, extra, started), behind)
        }
        Mode::Audit => with_first_warnings(audit(engine, edges, request, &plan, started), behind),
        Mode::Validate => unreachable!("handled above"),
    }
}

/// The pod's revision and what its siblings keep, when sticky pins apply to this review.
async fn sticky_lookup(
    engine: &Engine,
    edges: &Edges,
    mode: Mode,
    request: &AdmissionRequest,
    shape: sites::Shape<'_>,
    object: &serde_json::Value,
    deadline: crate::engine::Deadline,
) -> Option<super::sticky::Sticky> {
    let source = edges.siblings.as_ref()?;
    if !super::sticky::applies(engine.config.pins.sticky, mode, &request.operation, shape) {
        return None;
    }
    let revision = crate::pins::Revision::of(request.namespace.as_deref().unwrap_or(""), object)?;
    Some(super::sticky::Sticky::lookup(engine, &**source, revision, deadline).await)
}

/// `warnings` before the answer's own, within Kubernetes' limits.
fn with_first_warnings(
    (mut response, result): (Response, &'static str),
    warnings: Vec<String>,
) -> (Response, &'static str) {
    if warnings.is_empty() {
        return (response, result);
    }
    let rest = std::mem::take(&mut response.warnings);
    (response.with_warnings(warnings.into_iter().chain(rest).collect()), result)
}

fn enforce(
    engine: &Engine,
    request: &AdmissionRequest,
    plan: &Plan,
    prepull: crate::prepull::Injection,
    started: Instant,
) -> (Response, &'static str) {
    let uid = request.uid.as_str();
    let (response, decision) = enforce_answer(engine, request, plan, prepull);
    let pins: BTreeMap<&str, &str> = plan.pins.iter().map(|p| (p.site.image.as_str(), p.pinned.as_str())).collect();
    tracing::info!(
        uid,
        kind = %request.kind.kind,
        object = %request.object_ref(),
        owner = ?logs::json(&request.owner()),
        generate_name = ?logs::json(&request.generate_name()),
        operation = %request.operation,
        mode = "enforce",
        dry_run = request.is_dry_run(),
        decision,
        pins = ?logs::json(&pins),
        problems = ?logs::json(&problems_by_image(plan)),
        duration_ms = millis(started),
        "review"
    );
    (response, decision)
}

fn enforce_answer(
    engine: &Engine,
    request: &AdmissionRequest,
    plan: &Plan,
    prepull: crate::prepull::Injection,
) -> (Response, &'static str) {
    let uid = request.uid.as_str();
    if !plan.problems.is_empty() && engine.config.resolve.on_error == crate::config::OnError::Deny {
        let problems =
            plan.problems.iter().map(|p| format!("{}: {}", p.site.image, p.reason)).collect::<Vec<_>>().join("; ");
        let message = format!("layerlink: cannot pin {}: {}", plural(plan.problems.len(), "image"), problems);
        return (Response::deny(uid, 403, "Forbidden", message), "denied");
    }
    let mut warnings: Vec<String> =
        plan.problems.iter().map(|p| format!("layerlink: not pinned {}: {}", p.site.image, p.reason)).collect();
    warnings.extend(
        plan.pins.iter().filter_map(|p| {
            p.stale.as_ref().map(|why| format!("layerlink: pinned {} from cache ({why})", p.site.image))
        }),
    );
    let mut patch = plan.patch();
    if !prepull.ops.is_empty() {
        tracing::info!(uid, object = %request.object_ref(), ops = prepull.ops.len(), "pre-pull injected");
    }
    if !prepull.problems.is_empty() {
        engine.metrics.prepull_problems.inc();
        tracing::warn!(
            uid,
            object = %request.object_ref(),
            problems = ?logs::json(&prepull.problems.iter().map(ToString::to_string).collect::<Vec<_>>()),
            "pre-pull left out"
        );
        warnings.extend(prepull.problems.iter().map(|p| format!("layerlink: {p}")));
    }
    patch.0.extend(prepull.ops);
    let result = if patch.0.is_empty() { "unchanged" } else { "patched" };
    (Response::allow(uid).with_patch(&patch).with_warnings(warnings), result)
}

/// Each image that could not be pinned, and why.
fn problems_by_image(plan: &Plan) -> BTreeMap<&str, &str> {
    plan.problems.iter().map(|p| (p.site.image.as_str(), p.reason.as_str())).collect()
}

/// Milliseconds since `started`, to the microsecond.
fn millis(started: Instant) -> f64 {
    started.elapsed().as_micros() as f64 / 1000.0
}

fn audit(
    engine: &Engine,
    edges: &Edges,
    request: &AdmissionRequest,
    plan: &Plan,
    started: Instant,
) -> (Response, &'static str) {
    let uid = request.uid.as_str();
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let mut warnings = Vec::new();
    let mut would_pin = BTreeMap::new();
    let mut unresolved = BTreeMap::new();
    for pin in &plan.pins {
        warnings.push(format!("layerlink audit: would pin {} → {}", pin.site.image, short(&pin.digest)));
        would_pin.insert(pin.site.image.clone(), pin.pinned.clone());
    }
    for problem in &plan.problems {
        warnings.push(format!("layerlink audit: cannot pin {}: {}", problem.site.image, problem.reason));
        unresolved.insert(problem.site.image.clone(), problem.reason.clone());
    }
    for (result, count) in [("would_pin", would_pin.len()), ("unresolved", unresolved.len())] {
        if count > 0 {
            engine
                .metrics
                .audit_findings
                .get_or_create(&AuditLabels { resource_namespace: engine.metrics.namespace_label(namespace), result })
                .inc_by(count as u64);
        }
    }
    tracing::info!(
        uid,
        kind = %request.kind.kind,
        object = %request.object_ref(),
        owner = ?logs::json(&request.owner()),
        generate_name = ?logs::json(&request.generate_name()),
        operation = %request.operation,
        mode = "audit",
        dry_run = request.is_dry_run(),
        decision = "audited",
        would_pin = ?logs::json(&would_pin),
        unresolved = ?logs::json(&unresolved),
        duration_ms = millis(started),
        "review"
    );
    // A dry run must have no side effect (sideEffects: NoneOnDryRun).
    if let Some(reporter) = &edges.reporter
        && !request.is_dry_run()
        && (!plan.pins.is_empty() || !plan.problems.is_empty())
    {
        reporter.report(request, plan);
    }
    let mut response = Response::allow(uid).with_warnings(warnings);
    for (key, map) in [("would-pin", would_pin), ("unresolved", unresolved)] {
        if !map.is_empty() {
            response.audit_annotations.insert(key.into(), serde_json::to_string(&map).expect("strings serialize"));
        }
    }
    (response, "audited")
}

/// `/validate`: refuses images that are not pinned ([`crate::reference::is_pinned`], the rule the
/// ValidatingAdmissionPolicy writes as a pattern), unless `exclude.images` matches them. A
/// refusal is logged (an allowed review only at debug level).
fn validate(
    engine: &Engine,
    request: &AdmissionRequest,
    sites: Vec<sites::Site>,
    started: Instant,
) -> (Response, &'static str) {
    let uid = request.uid.as_str();
    let unpinned: Vec<sites::Site> = sites
        .into_iter()
        .filter(|s| !crate::reference::is_pinned(&s.image))
        .filter(|s| match crate::reference::Reference::parse(&s.image) {
            Ok(r) => !engine.is_excluded(&s.image, &r),
            Err(_) => true,
        })
        .collect();
    if unpinned.is_empty() {
        tracing::debug!(uid, object = %request.object_ref(), mode = "validate", decision = "allowed", "review");
        return (Response::allow(uid), "allowed");
    }
    let by_container: BTreeMap<&str, &str> =
        unpinned.iter().map(|s| (s.container.as_str(), s.image.as_str())).collect();
    tracing::info!(
        uid,
        kind = %request.kind.kind,
        object = %request.object_ref(),
        owner = ?logs::json(&request.owner()),
        generate_name = ?logs::json(&request.generate_name()),
        operation = %request.operation,
        mode = "validate",
        dry_run = request.is_dry_run(),
        decision = "denied",
        unpinned = ?logs::json(&by_container),
        duration_ms = millis(started),
        "review"
    );
    let listed: Vec<String> = unpinned.iter().map(|s| format!("{} ({})", s.image, s.container)).collect();
    let message = format!(
        "layerlink: images must be pinned by digest (image@sha256:… or @sha512:…) in this namespace; unpinned: {}",
        listed.join(", ")
    );
    (Response::deny(uid, 403, "Forbidden", message), "denied")
}

fn record_images(engine: &Engine, mode: Mode, plan: &Plan) {
    let path = mode.as_str();
    let add = |result: &'static str, n: usize| {
        if n > 0 {
            engine.metrics.images.get_or_create(&ImageLabels { path, result }).inc_by(n as u64);
        }
    };
    let stale = plan.pins.iter().filter(|p| p.stale.is_some()).count();
    add("pinned", plan.pins.len() - stale);
    add("stale", stale);
    add("unresolved", plan.problems.len());
    add("already_pinned", plan.already_pinned);
    add("excluded", plan.excluded);
}

/// `sha256:` and the first 12 hex digits, for warnings that must stay short.
fn short(digest: &str) -> String {
    let cut = "sha256:".len() + 12;
    if digest.len() > cut { format!("{}…", &digest[..cut]) } else { digest.to_string() }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}
