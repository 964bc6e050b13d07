//! `layerlink mutate` as a KRM function (the KRM Functions Specification,
//! `config.kubernetes.io/v1`), so that kustomize (`transformers:` with an exec function) and kpt
//! (`kpt fn eval --exec`, a Kptfile pipeline) can pin images: a `ResourceList` comes in on
//! standard input and one goes out on standard output.
//!
//! # What it reads
//!
//! - `items`: the resources. Pods and workloads among them are pinned exactly as `mutate -f` pins
//!   documents (`mutate_files::document_sites`: pod templates always, the config's exclusions as
//!   the webhook applies them); every other item is left alone.
//! - `functionConfig` (optional), one of:
//!   - a `ConfigMap` whose `data` has `config` (the text of layerlink's config file) or
//!     `configFile` (a path to it), and optionally `allowUnresolved: "true"`;
//!   - a `layerlink.io/v1alpha1` `ImagePinner` with `config` (layerlink's config inline, the keys
//!     of the file `serve` reads) or `configFile`, and optionally `allowUnresolved: true`.
//!
//!   Without one, `--config FILE` or the defaults apply; a functionConfig that sets a config and
//!   `--config` together is refused rather than one silently winning. A relative `configFile` is
//!   read from the function's working directory.
//!
//! # What it writes
//!
//! The input's text with only the image values replaced, by the same text-editing engine as
//! `mutate -f` (`mutate_files::rewrite_document`): the order of items and of their fields, comments,
//! quoting and the orchestrator's annotations (`config.kubernetes.io/path`, `…/index`, …) are kept
//! byte for byte. Then `results`: one per problem, each with `message`, `severity`, `resourceRef`
//! (apiVersion, kind, name, namespace), `field.path` (`spec.containers[0].image`) and `file`
//! (`path` and `index` from the item's `internal.config.kubernetes.io/path` and `…/index`
//! annotations, or their older `config.kubernetes.io/` twins):
//!
//! - an image that cannot be resolved: severity `error`, or `warning` with `allowUnresolved`;
//! - an item whose image cannot be rewritten in place (an alias, a block scalar, a merge key): an
//!   `error`, and that item is left as it is;
//! - a functionConfig that cannot be used: one `error`, and no item is changed.
//!
//! `results` is appended as a block at the end of the list. When the input already carries
//! `results` (from an earlier function), or its top level is a flow mapping (JSON), the list is
//! written out again from its parsed form instead: the items' data is the same, but comments and
//! the input's formatting are not kept.
//!
//! The function fails (exit 1, the caller's business) when any result has severity `error`; the
//! `ResourceList` is written all the same, as the specification asks, so that kpt and kustomize
//! can show its results. A standard input that is not a `ResourceList` is a plain error.

use std::{path::Path, sync::Arc};

use serde::Serialize;
use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser, StructureStyle};

use crate::{
    Config, Engine, Error,
    engine::Deadline,
    mutate_files::{self, Edit},
    plan::Problem,
    registry::auth::Keychain,
};

/// The kind of a function's input and output.
pub const KIND: &str = "ResourceList";
/// The API group of the ResourceList (`config.kubernetes.io/v1`, and the older `v1alpha1`).
pub const GROUP: &str = "config.kubernetes.io/";
/// The API version of layerlink's own functionConfig kind.
pub const CONFIG_API_VERSION: &str = "layerlink.io/v1alpha1";
/// layerlink's own functionConfig kind.
pub const CONFIG_KIND: &str = "ImagePinner";

/// A `ResourceList` as read: its text (one YAML document) and its parsed form.
#[derive(Clone, Debug)]
pub struct ResourceList {
    text: String,
    value: Value,
}

/// What a functionConfig asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionConfig {
    pub config: ConfigSource,
    /// Unresolved images are warnings, not errors.
    pub allow_unresolved: bool,
}

/// Where layerlink's config comes from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ConfigSource {
    /// Not given by the functionConfig.
    #[default]
    None,
    /// The text of a config file.
    Inline(String),
    /// A path to a config file.
    File(String),
}

/// One entry of `results`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultItem {
    pub message: String,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_ref: Option<ResourceRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<Field>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<File>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Field {
    pub path: String,
    pub current_value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct File {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
}

/// What a run produced: the list to print and its results.
#[derive(Clone, Debug)]
pub struct Output {
    pub text: String,
    pub results: Vec<ResultItem>,
}

impl Output {
    /// Whether any result is an error: the function then exits non-zero.
    pub fn failed(&self) -> bool {
        self.results.iter().any(|r| r.severity == Severity::Error)
    }
}

/// Whether `text` is one YAML document of kind `ResourceList` in `config.kubernetes.io`.
pub fn is_resource_list(text: &str) -> bool {
    ResourceList::parse(text).is_ok()
}

impl ResourceList {
    /// Reads a `ResourceList`: one YAML document, `kind: ResourceList` in `config.kubernetes.io`,
    /// `items` a sequence of objects (or absent).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut documents = mutate_files::split_documents(text).into_iter().filter(|c| c.content);
        let (Some(_), None) = (documents.next(), documents.next()) else {
            return Err(Error::Input("a ResourceList is one YAML document".into()));
        };
        let value: Value = serde_saphyr::from_str(text).map_err(|e| {
            Error::Input(format!("not valid YAML: {}", e.to_string().lines().next().unwrap_or_default()))
        })?;
        let kind = value.get("kind").and_then(Value::as_str);
        let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        if kind != Some(KIND) || !api_version.starts_with(GROUP) {
            return Err(Error::Input(format!("not a {GROUP}v1 {KIND}")));
        }
        match value.get("items") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) if items.iter().all(Value::is_object) => {}
            Some(_) => return Err(Error::Input(format!("the {KIND}'s items are not a list of objects"))),
        }
        Ok(ResourceList { text: text.to_string(), value })
    }

    fn items(&self) -> &[Value] {
        self.value.get("items").and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }

    /// What the functionConfig asks for (the default without one).
    pub fn function_config(&self) -> Result<FunctionConfig, String> {
        function_config(self.value.get("functionConfig").unwrap_or(&Value::Null))
    }

    /// The list unchanged, with one error result: for a run that cannot start (an unusable
    /// functionConfig), so that the orchestrator shows why.
    pub fn refused(&self, message: String) -> Output {
        let results =
            vec![ResultItem { message, severity: Severity::Error, resource_ref: None, field: None, file: None }];
        Output { text: self.with_results(self.text.clone(), &results), results }
    }

    /// Pins the images of the items; unresolved images get `unresolved` as their severity.
    /// All lookups share one deadline, `resolve.requestTimeout` from now, as `mutate -f`.
    pub async fn mutate(&self, engine: &Engine, unresolved: Severity) -> Result<Output, Error> {
        let deadline = Deadline::after(engine.config.resolve.request_timeout);
        let keychain = Arc::new(Keychain::default());
        // Per item: its sites, or why it cannot be rewritten in place (found before asking any
        // registry, and then nothing of it is looked up).
        let mut refused = Vec::with_capacity(self.items().len());
        let mut wanted = Vec::with_capacity(self.items().len());
        for (index, item) in self.items().iter().enumerate() {
            let mut sites = mutate_files::document_sites(item, &engine.config);
            for site in &mut sites {
                site.pointer = format!("/items/{index}{}", site.pointer);
            }
            let in_place = mutate_files::check_in_place(&self.text, &mutate_files::pending_edits(engine, &sites));
            refused
                .push(in_place.err().map(|why| item_result(item, format!("not pinned: {why}"), Severity::Error, None)));
            wanted.push(if refused[index].is_some() { Vec::new() } else { sites });
        }
        let plans =
            futures::future::join_all(wanted.into_iter().map(|sites| engine.plan(sites, &keychain, deadline))).await;
        let (mut edits, mut results) = (Vec::new(), Vec::new());
        for (plan, refused) in plans.into_iter().zip(refused) {
            results.extend(refused);
            for pin in plan.pins {
                if let Some(why) = &pin.stale {
                    tracing::warn!(image = %pin.site.image, "pinned from a stale cache entry: {why}");
                }
                edits.push(Edit::new(&pin.site.pointer, &pin.site.image, &pin.pinned));
            }
            results.extend(plan.problems.iter().map(|p| self.problem_result(p, unresolved)));
        }
        let text = if edits.is_empty() {
            self.text.clone()
        } else {
            mutate_files::rewrite_document(&self.text, &edits).map_err(Error::Input)?
        };
        Ok(Output { text: self.with_results(text, &results), results })
    }

    fn problem_result(&self, problem: &Problem, severity: Severity) -> ResultItem {
        let (index, field) = split_pointer(&problem.site.pointer);
        let item = index.and_then(|i| self.items().get(i)).unwrap_or(&Value::Null);
        let message = format!("{} not pinned: {}", problem.site.image, problem.reason);
        let field = Field { path: field_path(field), current_value: problem.site.image.clone() };
        item_result(item, message, severity, Some(field))
    }

    /// `text` (this list, maybe with its images pinned) with `results` added.
    fn with_results(&self, text: String, results: &[ResultItem]) -> String {
        if results.is_empty() {
            return text;
        }
        match block_root_without_results(&text) {
            Some(true) => append_results(text, results),
            _ => self.rewritten_with_results(&text, results),
        }
    }

    /// The fallback: the list written out from its parsed form, with the results after any it
    /// already had.
    fn rewritten_with_results(&self, text: &str, results: &[ResultItem]) -> String {
        let mut value: Value = serde_saphyr::from_str(text).unwrap_or_else(|_| self.value.clone());
        let mut all = match value.get("results") {
            Some(Value::Array(earlier)) => earlier.clone(),
            _ => Vec::new(),
        };
        all.extend(results.iter().map(|r| serde_json::to_value(r).expect("results serialize")));
        value["results"] = Value::Array(all);
        serde_saphyr::to_string(&value).expect("a parsed value serializes")
    }
}

/// The functionConfig's request; `Value::Null` (none) is the default.
fn function_config(value: &Value) -> Result<FunctionConfig, String> {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let (fields, strings) = match (api_version, kind) {
        _ if value.is_null() => return Ok(FunctionConfig::default()),
        ("v1", "ConfigMap") => (value.get("data"), true),
        (CONFIG_API_VERSION, CONFIG_KIND) => (Some(value), false),
        _ => {
            return Err(format!(
                "functionConfig must be a v1 ConfigMap or a {CONFIG_API_VERSION} {CONFIG_KIND}, not {api_version} {kind}"
            ));
        }
    };
    let empty = serde_json::Map::new();
    let fields = match fields {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(fields)) => fields,
        Some(_) => return Err("functionConfig: data is not a mapping".into()),
    };
    let mut out = FunctionConfig::default();
    for (key, field) in fields {
        match (key.as_str(), field) {
            ("apiVersion" | "kind" | "metadata", _) if !strings => {}
            ("config", Value::String(text)) if strings => {
                out.config = set(&out.config, ConfigSource::Inline(text.clone()))?
            }
            ("config", Value::Object(_)) if !strings => {
                let text = serde_json::to_string(field).expect("a parsed value serializes");
                out.config = set(&out.config, ConfigSource::Inline(text))?;
            }
            ("configFile", Value::String(path)) => out.config = set(&out.config, ConfigSource::File(path.clone()))?,
            ("allowUnresolved", Value::Bool(allow)) if !strings => out.allow_unresolved = *allow,
            ("allowUnresolved", Value::String(allow)) if strings => {
                out.allow_unresolved = match allow.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(format!("functionConfig: allowUnresolved is {allow:?}, not \"true\" or \"false\""));
                    }
                };
            }
            ("config" | "configFile" | "allowUnresolved", _) => {
                let what = if strings {
                    "a string"
                } else {
                    "config a mapping, configFile a string, allowUnresolved a boolean"
                };
                return Err(format!("functionConfig: {key} has the wrong type ({what})"));
            }
            _ => return Err(format!("functionConfig: unknown field {key:?} (config, configFile, allowUnresolved)")),
        }
    }
    Ok(out)
}

fn set(current: &ConfigSource, new: ConfigSource) -> Result<ConfigSource, String> {
    match current {
        ConfigSource::None => Ok(new),
        _ => Err("functionConfig: give config or configFile, not both".into()),
    }
}

impl FunctionConfig {
    /// layerlink's config: the functionConfig's, else `flag` (`--config`), else the defaults.
    pub fn load(&self, flag: Option<&Path>) -> Result<Config, String> {
        let config = match (&self.config, flag) {
            (ConfigSource::None, None) => Config::parse(""),
            (ConfigSource::None, Some(path)) => Config::load(path),
            (_, Some(_)) => return Err("both the functionConfig and --config give a config; give one".into()),
            (ConfigSource::Inline(text), None) => Config::parse(text),
            (ConfigSource::File(path), None) => Config::load(Path::new(path)),
        };
        config.map_err(|e| format!("functionConfig: {e}"))
    }
}

/// A result about one item, located by its reference and its file annotations.
fn item_result(item: &Value, message: String, severity: Severity, field: Option<Field>) -> ResultItem {
    let text = |pointer: &str| item.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    let annotation = |name: &str| {
        let annotations = item.pointer("/metadata/annotations")?;
        [format!("internal.{name}"), name.to_string()]
            .iter()
            .find_map(|key| annotations.get(key.as_str()).and_then(Value::as_str))
    };
    let resource_ref = item.is_object().then(|| ResourceRef {
        api_version: text("/apiVersion"),
        kind: text("/kind"),
        name: text("/metadata/name"),
        namespace: text("/metadata/namespace"),
    });
    let file = annotation("config.kubernetes.io/path").map(|path| File {
        path: path.to_string(),
        index: annotation("config.kubernetes.io/index").and_then(|i| i.parse().ok()),
    });
    ResultItem { message, severity, resource_ref, field, file }
}

/// `/items/3/spec/containers/0/image` → (Some(3), `/spec/containers/0/image`).
fn split_pointer(pointer: &str) -> (Option<usize>, &str) {
    let Some(rest) = pointer.strip_prefix("/items/") else { return (None, pointer) };
    let (index, field) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (index.parse().ok(), field)
}

/// A JSON pointer as the field path KRM results use: `/spec/containers/0/image` →
/// `spec.containers[0].image`.
fn field_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
    }
    path
}

/// Whether the document's top level is a block mapping with no `results` key (Some(true)), or
/// not (Some(false)); None if it does not parse.
fn block_root_without_results(text: &str) -> Option<bool> {
    let mut events = Parser::new_from_str(text).map(|e| e.ok().map(|(event, _)| event));
    // The root node: anything but a block mapping is not appended to.
    loop {
        match events.next()?? {
            Event::MappingStart(StructureStyle::Block, ..) => break,
            event if event.is_node() => return Some(false),
            _ => {}
        }
    }
    // Nodes directly under the root alternate key, value; a collection is one node.
    let (mut depth, mut top_level_nodes) = (1usize, 0usize);
    for event in events {
        match event? {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                top_level_nodes += usize::from(depth == 1);
                depth += 1;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                depth -= 1;
                if depth == 0 {
                    return Some(true);
                }
            }
            Event::Scalar(value, ..) if depth == 1 => {
                if top_level_nodes % 2 == 0 && value == "results" {
                    return Some(false);
                }
                top_level_nodes += 1;
            }
            Event::Alias(..) => top_level_nodes += usize::from(depth == 1),
            _ => {}
        }
    }
    None
}

/// `results:` as a block at the end of a block-mapping document, before a closing `...`.
fn append_results(mut text: String, results: &[ResultItem]) -> String {
    let body = serde_saphyr::to_string(&results).expect("results serialize");
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let block = format!("results:\n{body}").replace('\n', newline);
    // A trailing `...` line (and what follows it) stays last.
    let end = document_end(&text);
    let mut tail = text.split_off(end);
    if !text.is_empty() && !text.ends_with('\n') {
        text.push_str(newline);
    }
    text.push_str(&block);
    if !text.ends_with('\n') {
        text.push_str(newline);
    }
    text.push_str(&std::mem::take(&mut tail));
    text
}

/// Where the document's content ends: the start of a `...` line, or the end of the text.
fn document_end(text: &str) -> usize {
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == "..." || trimmed.starts_with("... ") || trimmed.starts_with("...\t") {
            return start;
        }
        start += line.len();
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> ResourceList {
        ResourceList::parse(text).unwrap()
    }

    const HEAD: &str = "apiVersion: config.kubernetes.io/v1\nkind: ResourceList\n";

    #[test]
    fn field_paths() {
        assert_eq!(field_path("/spec/template/spec/containers/1/image"), "spec.template.spec.containers[1].image");
        assert_eq!(field_path("/items/0/spec/containers/0/image"), "items[0].spec.containers[0].image");
        assert_eq!(field_path("/a~1b/c~0d"), "a/b.c~d");
        assert_eq!(split_pointer("/items/12/spec/containers/0/image"), (Some(12), "/spec/containers/0/image"));
        assert_eq!(split_pointer("/spec"), (None, "/spec"));
    }

    #[test]
    fn results_are_appended_to_a_block_list() {
        let text = format!("# head\n{HEAD}items: []  # none\n# tail\n");
        let out = list(&text).refused("bad".into());
        assert_eq!(out.text, format!("{text}results:\n- message: bad\n  severity: error\n"));
        assert!(out.failed());
        // CRLF, no final newline, a closing `...` that stays last.
        let crlf = format!("{HEAD}items: []").replace('\n', "\r\n");
        assert_eq!(
            list(&crlf).refused("bad".into()).text,
            format!("{crlf}\r\nresults:\r\n- message: bad\r\n  severity: error\r\n")
        );
        let ended = format!("{HEAD}items: []\n...\n");
        assert_eq!(
            list(&ended).refused("bad".into()).text,
            format!("{HEAD}items: []\nresults:\n- message: bad\n  severity: error\n...\n")
        );
        // No results, no change.
        assert_eq!(list(&text).with_results(text.clone(), &[]), text);
    }

    #[test]
    fn results_of_a_flow_list_or_a_list_with_results_rewrite_the_list() {
        assert_eq!(block_root_without_results(&format!("{HEAD}items: []\n")), Some(true));
        // A nested `results` key, or one as a value, is not the list's.
        let nested = format!("{HEAD}items:\n- kind: X\n  results: 1\nfunctionConfig: {{data: {{a: results}}}}\n");
        assert_eq!(block_root_without_results(&nested), Some(true));
        assert_eq!(block_root_without_results(&format!("{HEAD}results: []\n")), Some(false));
        let json = r#"{"apiVersion": "config.kubernetes.io/v1", "kind": "ResourceList", "items": []}"#;
        assert_eq!(block_root_without_results(json), Some(false));

        let out = list(json).refused("bad".into());
        let value: Value = serde_saphyr::from_str(&out.text).unwrap();
        assert_eq!(value["results"], serde_json::json!([{"message": "bad", "severity": "error"}]));
        assert_eq!(value["kind"], "ResourceList");

        let earlier = format!("{HEAD}items: []\nresults:\n- {{message: earlier, severity: warning}}\n");
        let value: Value = serde_saphyr::from_str(&list(&earlier).refused("bad".into()).text).unwrap();
        let messages: Vec<&str> =
            value["results"].as_array().unwrap().iter().map(|r| r["message"].as_str().unwrap()).collect();
        assert_eq!(messages, ["earlier", "bad"]);
    }

    #[test]
    fn function_configs() {
        let parse = |yaml: &str| function_config(&serde_saphyr::from_str::<Value>(yaml).unwrap());
        assert_eq!(function_config(&Value::Null), Ok(FunctionConfig::default()));
        assert_eq!(
            parse("apiVersion: v1\nkind: ConfigMap\ndata: {config: 'a: 1', allowUnresolved: 'true'}"),
            Ok(FunctionConfig { config: ConfigSource::Inline("a: 1".into()), allow_unresolved: true })
        );
        assert_eq!(parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}"), Ok(FunctionConfig::default()));
        assert_eq!(
            parse("apiVersion: layerlink.io/v1alpha1\nkind: ImagePinner\nmetadata: {name: x}\nconfigFile: c.yaml"),
            Ok(FunctionConfig { config: ConfigSource::File("c.yaml".into()), allow_unresolved: false })
        );
        let inline = parse("apiVersion: layerlink.io/v1alpha1\nkind: ImagePinner\nconfig: {registries: []}").unwrap();
        assert_eq!(inline.config, ConfigSource::Inline(r#"{"registries":[]}"#.into()));
        assert!(inline.load(None).is_ok());
        for (yaml, why) in [
            ("apiVersion: v1\nkind: ConfigMap\ndata: {config: 'a: 1', configFile: b}", "not both"),
            ("apiVersion: v1\nkind: ConfigMap\ndata: {kind: x}", "unknown field"),
            ("apiVersion: v1\nkind: ConfigMap\ndata: [a]", "not a mapping"),
            ("apiVersion: layerlink.io/v1alpha1\nkind: ImagePinner\nconfig: 'a: 1'", "wrong type"),
            ("apiVersion: v2\nkind: ConfigMap", "must be a v1 ConfigMap"),
            ("just text", "must be"),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(why), "{yaml}: {e}");
        }
        let e = inline.load(Some(Path::new("/dev/null"))).unwrap_err();
        assert!(e.contains("both"), "{e}");
        let bad = FunctionConfig { config: ConfigSource::Inline("nope: 1".into()), allow_unresolved: false };
        assert!(bad.load(None).unwrap_err().starts_with("functionConfig: "));
    }

    #[test]
    fn items_locate_their_results() {
        let item = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": {
                "config.kubernetes.io/path": "old.yaml", "config.kubernetes.io/index": "3",
                "internal.config.kubernetes.io/path": "new.yaml",
            }},
        });
        let result = item_result(&item, "m".into(), Severity::Warning, None);
        assert_eq!(result.file, Some(File { path: "new.yaml".into(), index: Some(3) }));
        let reference = result.resource_ref.unwrap();
        assert_eq!((reference.kind.as_str(), reference.name.as_str(), reference.namespace.as_str()), ("Pod", "p", ""));
        assert_eq!(item_result(&serde_json::json!({"kind": "Pod"}), "m".into(), Severity::Error, None).file, None);
    }

    #[test]
    fn what_is_a_resource_list() {
        assert!(is_resource_list(&format!("---\n{HEAD}")));
        assert!(is_resource_list("apiVersion: config.kubernetes.io/v1alpha1\nkind: ResourceList\nitems: null\n"));
        assert!(!is_resource_list("apiVersion: v1\nkind: ResourceList\n"));
        assert!(!is_resource_list(&format!("{HEAD}---\n{HEAD}")));
        assert!(!is_resource_list("kind: Pod\n"));
        assert!(!is_resource_list(""));
    }
}
