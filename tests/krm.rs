//! `layerlink mutate` as a KRM function against a real registry: the real binary reads a
//! `ResourceList` (fixtures in tests/fixtures/krm/), pins its items' images keeping comments,
//! order and annotations, writes a result per problem located by resource, field and file, and
//! exits as the KRM Functions Specification asks (0, or 1 with the list still written when a
//! result is an error).

mod support;

use serde_json::Value;
use support::{
    Registry,
    cli::{Run, layerlink},
    image,
};

/// The images the fixtures name: placeholder, repository, tag.
const IMAGES: [(&str, &str, &str); 2] = [("app", "team/app", "v1"), ("sidecar", "team/sidecar", "2.0")];

/// A registry with the images the fixtures name.
struct Setup {
    _registry: Registry,
    host: String,
    digests: Vec<(&'static str, String)>,
}

impl Setup {
    fn new() -> Setup {
        let registry = Registry::start();
        let digests = IMAGES
            .iter()
            .map(|(name, repository, tag)| (*name, registry.push(repository, tag, &image(name)).digest))
            .collect();
        Setup { host: registry.host(), _registry: registry, digests }
    }

    /// A fixture with `<host>` and `<NAME-digest>` filled in.
    fn fixture(&self, name: &str) -> String {
        let path = format!("{}/tests/fixtures/krm/{name}", env!("CARGO_MANIFEST_DIR"));
        let mut text = std::fs::read_to_string(&path).unwrap().replace("<host>", &self.host);
        for (name, digest) in &self.digests {
            text = text.replace(&format!("<{name}-digest>"), digest);
        }
        assert!(!text.contains('<'), "unfilled placeholder in {path}");
        text
    }
}

fn function(stdin: &str, extra: &[&str]) -> Run {
    let mut args = vec!["mutate"];
    args.extend_from_slice(extra);
    layerlink(&args, Some(stdin))
}

fn results(run: &Run) -> Vec<Value> {
    let list: Value = serde_saphyr::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    list.get("results").and_then(Value::as_array).cloned().unwrap_or_default()
}

#[test]
fn pins_items_and_keeps_comments_order_and_annotations() {
    let setup = Setup::new();
    let input = setup.fixture("pin.input.yaml");
    let expected = setup.fixture("pin.expected.yaml");
    assert_eq!(expected.matches("@sha256:").count(), 3);

    // Detected from the input, with --krm, and from a file: the same list comes back, changed
    // only where the images were pinned.
    for extra in [&[][..], &["--krm"], &["-f", "-"]] {
        let run = function(&input, extra);
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        assert_eq!(run.stdout, expected, "stderr: {}", run.stderr);
    }
    // Idempotent: a pinned list goes through unchanged.
    let again = function(&expected, &[]);
    assert_eq!((again.code, again.stdout), (Some(0), expected));
}

#[test]
fn problems_become_results_and_fail_the_function() {
    let setup = Setup::new();
    let input = setup.fixture("problems.input.yaml");
    let run = function(&input, &[]);
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    // Written all the same, with what could be pinned pinned and results appended.
    assert_eq!(run.stdout, setup.fixture("problems.expected.yaml"), "stderr: {}", run.stderr);

    let found = results(&run);
    assert_eq!(found.len(), 2, "{found:?}");
    let (missing, aliased) = (&found[0], &found[1]);
    assert_eq!(missing["severity"], "error");
    assert_eq!(
        missing["resourceRef"],
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "apps"})
    );
    assert_eq!(missing["field"]["path"], "spec.template.spec.containers[1].image");
    assert_eq!(missing["field"]["currentValue"], format!("{}/team/app:nope", setup.host));
    assert_eq!(missing["file"], serde_json::json!({"path": "apps/web.yaml", "index": 1}));
    assert!(missing["message"].as_str().unwrap().contains("not found"), "{missing}");
    assert_eq!(aliased["severity"], "error");
    assert_eq!(aliased["resourceRef"]["name"], "aliased");
    assert_eq!(aliased["file"], serde_json::json!({"path": "pod.yaml"}));
    assert!(aliased["message"].as_str().unwrap().contains("alias"), "{aliased}");

    // allowUnresolved (the flag or the functionConfig) makes the unresolved image a warning; the
    // alias that cannot be rewritten stays an error.
    let run = function(&input, &["--allow-unresolved"]);
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    let severities: Vec<Value> = results(&run).iter().map(|r| r["severity"].clone()).collect();
    assert_eq!(severities, ["warning", "error"]);
    let only_missing = input.replace("image: *img", &format!("image: busybox@sha256:{}", "0".repeat(64)));
    let allowed = only_missing.replace("  data:\n", "  data:\n    allowUnresolved: \"true\"\n");
    let run = function(&allowed, &[]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let severities: Vec<Value> = results(&run).iter().map(|r| r["severity"].clone()).collect();
    assert_eq!(severities, ["warning"]);
}

/// `list` with its functionConfig replaced by `function_config` (YAML indented by two).
fn with_function_config(list: &str, function_config: &str) -> String {
    let head = &list[..list.find("functionConfig:").unwrap()];
    format!("{head}functionConfig:\n{function_config}")
}

#[test]
fn a_function_config_that_cannot_be_used_changes_nothing() {
    let setup = Setup::new();
    let input = setup.fixture("pin.input.yaml");
    const PINNER: &str = "  apiVersion: layerlink.io/v1alpha1\n  kind: ImagePinner\n";
    for (function_config, why) in [
        (format!("{PINNER}  confg: {{}}\n"), "unknown field \"confg\""),
        ("  apiVersion: v1\n  kind: Secret\n".into(), "must be a v1 ConfigMap or a layerlink.io/v1alpha1 ImagePinner"),
        (format!("{PINNER}  config: {{registries: [{{host: x, plainHttp: maybe}}]}}\n"), "functionConfig: config"),
        (format!("{PINNER}  configFile: /nonexistent/layerlink.yaml\n"), "/nonexistent/layerlink.yaml"),
        (format!("{PINNER}  configFile: a.yaml\n  config: {{}}\n"), "not both"),
        (format!("{PINNER}  allowUnresolved: \"yes\"\n"), "wrong type"),
        (
            "  apiVersion: v1\n  kind: ConfigMap\n  data: {allowUnresolved: \"maybe\"}\n".into(),
            "not \"true\" or \"false\"",
        ),
    ] {
        let broken = with_function_config(&input, &function_config);
        let run = function(&broken, &[]);
        assert_eq!(run.code, Some(1), "{function_config}: {}", run.stderr);
        assert!(run.stdout.starts_with(&broken), "{function_config}: the list is written unchanged");
        let results = results(&run);
        assert_eq!(results.len(), 1, "{function_config}: {results:?}");
        assert_eq!(results[0]["severity"], "error");
        assert!(results[0]["message"].as_str().unwrap().contains(why), "{function_config}: {}", results[0]);
    }
    // --config beside a functionConfig that gives a config is refused, not silently overridden.
    let run = function(&input, &["--config", "/dev/null"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(results(&run)[0]["message"].as_str().unwrap().contains("both"), "{}", run.stdout);
}

#[test]
fn input_that_is_not_a_resource_list() {
    for (input, why) in [
        ("apiVersion: v1\nkind: Pod\n", "not a config.kubernetes.io/v1 ResourceList"),
        ("apiVersion: config.kubernetes.io/v1\nkind: ResourceList\nitems: [\n", "not valid YAML"),
        ("apiVersion: config.kubernetes.io/v1\nkind: ResourceList\nitems: [1]\n", "not a list of objects"),
        ("kind: ResourceList\napiVersion: config.kubernetes.io/v1\n---\nkind: Pod\n", "one YAML document"),
    ] {
        let run = function(input, &["--krm"]);
        assert_eq!(run.code, Some(1), "{input}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{input}");
        assert!(run.stderr.contains(why), "{input}: {}", run.stderr);
    }
    // An empty list is a list: it comes back as it was.
    let empty = "apiVersion: config.kubernetes.io/v1\nkind: ResourceList\nitems: []\n";
    let run = function(empty, &[]);
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), empty), "{}", run.stderr);
}
