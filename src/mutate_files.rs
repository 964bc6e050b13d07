//! `layerlink mutate -f FILE|-`: pins the images of Pods and workloads in multi-document YAML,
//! for GitOps pipelines (`kustomize build | layerlink mutate -f -`). Pod templates are always
//! pinned here, whatever `workloads.templates` says: this is the path docs/design.md (*Pods, not templates*) sends
//! GitOps users to. The engine, config, exclusions and registries are the webhook's.
//!
//! # What is kept
//!
//! The output is the input text with only the image values replaced. Everything else is copied
//! byte for byte: comments (own-line and trailing), key order, indentation, quoting style of every
//! other scalar, flow and block collections, blank lines, line endings (LF or CRLF), document
//! markers (`---`, `--- # comment`, `...`), directives, and every document that is not a Pod or a
//! workload (ConfigMaps, Services, CRDs, …) or that has nothing to pin.
//!
//! An image value keeps its own style: a plain scalar stays plain (`image: app:v1` →
//! `image: app:v1@sha256:…`), a single-quoted one stays single-quoted and a double-quoted one
//! double-quoted; trailing comments and the spacing around the value stay where they were. Only
//! the `image` fields the engine finds (`sites::find`: init, regular and ephemeral containers of a
//! Pod, or of the pod template of a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob,
//! ReplicationController or PodTemplate, also inside a `kind: List`) are touched; the same text in
//! an annotation, a ConfigMap or a comment never is.
//!
//! # What is not kept
//!
//! - A plain image value that the pinned reference could not be written as plain (never the case
//!   for a valid reference) would become double-quoted.
//! - A multi-line image value (a plain or quoted scalar folded over lines) becomes one line.
//!
//! # What fails instead of guessing
//!
//! The whole run fails (exit 2, nothing on stdout) naming the document and its line when a
//! document is not valid YAML, or when an image to pin cannot be rewritten in place: it comes from
//! an alias (`image: *img`) or a merge key (`<<: *base`), is a block scalar (`image: |`), or its
//! key appears twice. Every rewritten document is parsed again and must equal the original with
//! only the pinned images changed.
//!
//! Images that cannot be resolved are left as they are; [`mutate_report`] gives each one's
//! location (document, kind/name, line), which the CLI prints one line per place, and the exit
//! status is 1 (0 with `--allow-unresolved`) so CI can gate on it. Objects of kinds layerlink
//! does not read (neither built in nor declared in `workloads.kinds`) that have `image` fields are
//! reported as skipped (`--strict` makes them exit 3). Documents in a namespace listed in
//! `exclude.namespaces` (by `metadata.namespace`), images matching `exclude.images`, and, with
//! `allowPodOptOut`, objects annotated `layerlink.io/skip: "true"` are left alone, as the webhook
//! would leave them.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    ops::Range,
    sync::Arc,
};

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

use crate::{
    Config, Engine, Error,
    engine::{Deadline, Problem},
    patch, policy,
    reference::Reference,
    registry::auth::Keychain,
    sites::{self, Shape, Site},
};

fn invalid(message: String) -> Error {
    Error::Input(message)
}

/// Pins every image of the Pods and workloads in `text` (multi-document YAML) and returns the new
/// text and the images that could not be pinned. Each problem's `site.pointer` is prefixed with
/// the 0-based document index (`/2/spec/containers/0/image` is in the third document).
///
/// All lookups share one deadline, `resolve.requestTimeout` from now: a CLI is not in the
/// admission path. Errors (invalid YAML, an image that cannot be rewritten in place) name the
/// document and line, and no text is returned.
pub async fn mutate_text(engine: &Engine, text: &str) -> Result<(String, Vec<Problem>), Error> {
    let outcome = mutate_report(engine, text).await?;
    Ok((outcome.text, outcome.problems.into_iter().map(|p| p.problem).collect()))
}

/// Where in the input an object is: 1-based document index, its kind and name, and a 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub document: usize,
    pub kind: String,
    pub name: String,
    pub line: usize,
}

impl std::fmt::Display for Location {
    /// `12: document 3 (Rollout/web)`, or `(Rollout)` for an object without a name: what
    /// follows `FILE:` in a message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: document {} ({}", self.line, self.document, self.kind)?;
        if !self.name.is_empty() {
            write!(f, "/{}", self.name)?;
        }
        f.write_str(")")
    }
}

/// An image that could not be pinned, and where it is (the line of its value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocatedProblem {
    pub problem: Problem,
    pub location: Location,
}

/// An object of a kind layerlink does not read that has `image` fields: its images are left as
/// written (declare the kind in `workloads.kinds` to pin them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub api_version: String,
    /// Where the object starts.
    pub location: Location,
    /// How many string-valued `image` fields it has.
    pub images: usize,
}

/// What [`mutate_report`] found: the new text, the images it could not pin and the objects it
/// did not read.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub text: String,
    pub problems: Vec<LocatedProblem>,
    pub skipped: Vec<Skipped>,
}

/// [`mutate_text`], with each problem's location and the objects of unknown kinds that have
/// `image` fields.
pub async fn mutate_report(engine: &Engine, text: &str) -> Result<Outcome, Error> {
    let deadline = Deadline::after(engine.config.resolve.request_timeout);
    let keychain = Arc::new(Keychain::default());
    let chunks = split_documents(text);
    let mut documents = Vec::with_capacity(chunks.len());
    let mut skipped = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        let source = &text[chunk.range.clone()];
        let first_line = chunk.first_line;
        let where_ = || format!("document {} (from line {first_line})", index + 1);
        let (sites, value) = if chunk.content {
            let value = parse_value_at(source, first_line).map_err(|e| invalid(format!("{}: {e}", where_())))?;
            (document_sites(&value, &engine.config), value)
        } else {
            (Vec::new(), Value::Null)
        };
        for (pointer, object, images) in unread_objects(&value, &engine.config) {
            skipped.push(Skipped {
                api_version: object.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
                location: location_in(source, first_line, index, &value, &pointer),
                images,
            });
        }
        // Refuse what cannot be rewritten before asking any registry (only images that would be).
        check_in_place(source, &pending_edits(engine, &sites)).map_err(|e| invalid(format!("{}: {e}", where_())))?;
        documents.push((source, sites, where_(), first_line, value));
    }
    let plans = futures::future::join_all(
        documents.iter().map(|(_, sites, ..)| engine.plan(sites.clone(), &keychain, deadline)),
    )
    .await;
    let mut output = String::with_capacity(text.len() + 80 * plans.iter().map(|p| p.pins.len()).sum::<usize>());
    let mut problems = Vec::new();
    for (index, ((source, _, where_, first_line, value), plan)) in documents.into_iter().zip(plans).enumerate() {
        for pin in &plan.pins {
            if let Some(why) = &pin.stale {
                tracing::warn!(image = %pin.site.image, "pinned from a stale cache entry: {why}");
            }
        }
        if plan.pins.is_empty() {
            output.push_str(source);
        } else {
            let edits: Vec<Edit> =
                plan.pins.iter().map(|p| Edit::new(&p.site.pointer, &p.site.image, &p.pinned)).collect();
            output.push_str(&rewrite_document(source, &edits).map_err(|e| invalid(format!("{where_}: {e}")))?);
        }
        problems.extend(plan.problems.into_iter().map(|mut problem| {
            let location = location_in(source, first_line, index, &value, &problem.site.pointer);
            problem.site.pointer = format!("/{index}{}", problem.site.pointer);
            LocatedProblem { problem, location }
        }));
    }
    Ok(Outcome { text: output, problems, skipped })
}

/// The location of the value at `pointer` in document `index` (0-based) whose text is `source`,
/// starting on line `first_line`: the line of the value when the parser finds it (else of the
/// document), and the kind and name of the object holding it (a `List` item's own).
fn location_in(source: &str, first_line: usize, index: usize, document: &Value, pointer: &str) -> Location {
    let object = match pointer.strip_prefix("/items/").and_then(|rest| rest.split('/').next()) {
        Some(item) => document.pointer(&format!("/items/{item}")).unwrap_or(document),
        None => document,
    };
    let text = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let wanted = HashSet::from([pointer]);
    let offset = locate(source, &wanted)
        .ok()
        .and_then(|found| found.get(pointer).and_then(|nodes| nodes.first()).map(|n| n.range.start))
        .unwrap_or_else(|| content_start(source));
    Location {
        document: index + 1,
        kind: text("/kind"),
        name: text("/metadata/name"),
        line: first_line + source[..offset].matches('\n').count(),
    }
}

/// The offset of a document's first line of content, past blank and comment lines, directives
/// and its `---` marker.
fn content_start(source: &str) -> usize {
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let t = line.trim();
        let marker = t == "---" || t.starts_with("--- #");
        if !(t.is_empty() || t.starts_with('#') || t.starts_with('%') || marker) {
            break;
        }
        offset += line.len();
    }
    offset.min(source.len())
}

/// Kinds whose `image` keys are data, not images a node pulls.
const NOT_WORKLOADS: &[&str] = &["ConfigMap", "Secret", "CustomResourceDefinition"];

/// The objects of a document (itself, or a `List`'s items) that layerlink does not read but that
/// have string-valued `image` fields: (pointer of the object, the object, how many).
fn unread_objects<'v>(document: &'v Value, config: &Config) -> Vec<(String, &'v Value, usize)> {
    let Some(kind) = document.get("kind").and_then(Value::as_str) else { return Vec::new() };
    if let (Some(items), Some(list_of)) = (document.get("items").and_then(Value::as_array), kind.strip_suffix("List")) {
        return items
            .iter()
            .enumerate()
            .filter(|(_, item)| {
                let kind = item.get("kind").and_then(Value::as_str).unwrap_or(list_of);
                object_shape(kind, item, config).is_none() && !NOT_WORKLOADS.contains(&kind)
            })
            .map(|(i, item)| (format!("/items/{i}"), item, count_images(item)))
            .filter(|(_, _, n)| *n > 0)
            .collect();
    }
    if object_shape(kind, document, config).is_some() || NOT_WORKLOADS.contains(&kind) {
        return Vec::new();
    }
    match count_images(document) {
        0 => Vec::new(),
        n => vec![(String::new(), document, n)],
    }
}

/// String-valued `image` keys anywhere in `value` (bounded by the document, already parsed).
fn count_images(value: &Value) -> usize {
    match value {
        Value::Object(map) => {
            map.iter().map(|(key, v)| if key == "image" && v.is_string() { 1 } else { count_images(v) }).sum()
        }
        Value::Array(items) => items.iter().map(count_images).sum(),
        _ => 0,
    }
}

/// The edits `sites` would need if every image were pinned: the valid, unpinned, not excluded
/// ones, each with its value unchanged (for `check_in_place` before any registry is asked).
pub fn pending_edits(engine: &Engine, sites: &[Site]) -> Vec<Edit> {
    sites
        .iter()
        .filter(|s| Reference::parse(&s.image).is_ok_and(|r| !r.is_pinned() && !engine.is_excluded(&s.image, &r)))
        .map(|s| Edit::new(&s.pointer, &s.image, &s.image))
        .collect()
}

/// Whether every edit's scalar can be rewritten in place in `text` (one document): not an
/// alias, a block scalar, a merge key or a duplicate key. The error names the pointer.
pub fn check_in_place(text: &str, edits: &[Edit]) -> Result<(), String> {
    if edits.is_empty() {
        return Ok(());
    }
    locate_edits(text, edits).map(drop)
}

fn parse_value(source: &str) -> Result<Value, String> {
    parse_value_at(source, 1)
}

/// Parses one document whose first line is line `first_line` of the input; the error is one line
/// and names the line in the input.
fn parse_value_at(source: &str, first_line: usize) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(source).map_err(|e| {
        let e = e.to_string();
        let first = e.lines().next().unwrap_or_default().trim_start_matches("error: ");
        let shifted = first
            .strip_prefix("line ")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(n, rest)| Some(format!("line {} {rest}", n.parse::<usize>().ok()? + first_line - 1)));
        format!("not valid YAML: {}", shifted.as_deref().unwrap_or(first))
    })
}

// ---------------------------------------------------------------------------------------------
// Documents

/// One document of a stream: its text (markers, directives and surrounding comments included) and
/// whether it has any content besides those.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub range: Range<usize>,
    pub content: bool,
    /// The 1-based line of the input the chunk starts on, counted while splitting (one pass over
    /// the text, not one per document).
    pub first_line: usize,
}

/// Splits a YAML stream into documents whose ranges cover the text exactly, in order. A document
/// starts at a `---` line (exactly `---`, or `---` followed by a space or tab) unless everything
/// before it since the last document is blank, comments or directives (a leading `---`); a `...`
/// line ends a document. YAML forbids both markers at column 0 inside a scalar, so a line test is
/// exact.
pub fn split_documents(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let (mut start, mut content, mut marker, mut pos) = (0, false, false, 0);
    // The line the current chunk starts on, and the line being read.
    let (mut first_line, mut number) = (1, 0);
    for line in text.split_inclusive('\n') {
        let line_start = pos;
        pos += line.len();
        number += 1;
        let bare = if line_start == 0 { line.strip_prefix('\u{feff}').unwrap_or(line) } else { line };
        if let Some(rest) = marker_rest(bare, "---") {
            if content || marker {
                chunks.push(Chunk { range: start..line_start, content, first_line });
                (start, first_line) = (line_start, number);
            }
            marker = true;
            let rest = rest.trim();
            content = !rest.is_empty() && !rest.starts_with('#');
        } else if marker_rest(bare, "...").is_some() {
            chunks.push(Chunk { range: start..pos, content, first_line });
            (start, content, marker, first_line) = (pos, false, false, number + 1);
        } else if !content {
            let trimmed = bare.trim();
            content = !(trimmed.is_empty() || trimmed.starts_with('#') || bare.starts_with('%'));
        }
    }
    if start < text.len() || chunks.is_empty() {
        chunks.push(Chunk { range: start..text.len(), content, first_line });
    }
    chunks
}

/// What follows a document marker at the start of `line`, if the line is one.
fn marker_rest<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(marker)?;
    (rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n'])).then_some(rest)
}

/// The image sites of one document: a Pod, a workload's pod template (always, whatever
/// `workloads.templates` says), or the items of a `kind: List`; nothing for other kinds or for
/// objects the config excludes.
pub fn document_sites(value: &Value, config: &Config) -> Vec<Site> {
    let Some(kind) = value.get("kind").and_then(Value::as_str) else { return Vec::new() };
    if let (Some(items), Some(list_of)) = (value.get("items").and_then(Value::as_array), kind.strip_suffix("List")) {
        let mut found = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let kind = item.get("kind").and_then(Value::as_str).unwrap_or(list_of);
            for mut site in object_sites(kind, item, config) {
                site.pointer = format!("/items/{i}{}", site.pointer);
                found.push(site);
            }
        }
        return found;
    }
    object_sites(kind, value, config)
}

fn object_sites(kind: &str, object: &Value, config: &Config) -> Vec<Site> {
    let Some(shape) = object_shape(kind, object, config) else { return Vec::new() };
    if let Some(reason) = policy::skip_reason(config, shape, object) {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        tracing::info!(kind, name, "left alone: {reason}");
        return Vec::new();
    }
    sites::find(shape, object)
}

/// Where an object's images are: a declared kind of its group (`workloads.kinds` and the built-in
/// custom resources, `webhook` or not), else a kind of [`crate::kinds::ALL`].
fn object_shape<'a>(kind: &str, object: &Value, config: &'a Config) -> Option<Shape<'a>> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    match config.workloads.declared_kind(group, kind) {
        Some(declared) => Some(sites::declared_shape(declared)),
        None => sites::shape(kind).filter(|s| *s != Shape::EphemeralContainers),
    }
}

// ---------------------------------------------------------------------------------------------
// Rewriting (pure)

/// One image value to replace in a document: the scalar at `pointer` must read `old`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    /// RFC 6901 pointer from the document root, e.g. `/spec/containers/0/image`.
    pub pointer: String,
    pub old: String,
    pub new: String,
}

impl Edit {
    pub fn new(pointer: &str, old: &str, new: &str) -> Self {
        Edit { pointer: pointer.into(), old: old.into(), new: new.into() }
    }
}

/// Replaces the scalars named by `edits` in one YAML document's text and nothing else. Each
/// pointer must lead, through plain keys and sequence indices as written, to exactly one plain or
/// quoted scalar whose value is `old`; the replacement keeps its quoting style. The result is
/// parsed again and must equal the original with exactly these values changed. Any deviation is
/// an error naming the pointer; nothing is guessed.
pub fn rewrite_document(text: &str, edits: &[Edit]) -> Result<String, String> {
    let mut located = locate_edits(text, edits)?;
    located.sort_by_key(|(range, _, _)| range.start);
    if let Some(pair) = located.windows(2).find(|w| w[0].0.end > w[1].0.start) {
        return Err(format!("overlapping image values at bytes {:?} and {:?}", pair[0].0, pair[1].0));
    }
    let mut out = String::with_capacity(text.len() + edits.iter().map(|e| e.new.len()).sum::<usize>());
    let mut copied = 0;
    for (range, style, edit) in &located {
        out.push_str(&text[copied..range.start]);
        out.push_str(&render(&edit.new, *style));
        copied = range.end;
    }
    out.push_str(&text[copied..]);
    verify(text, &out, edits)?;
    Ok(out)
}

/// The source range and style of each edit's scalar, checked against `old`.
/// An edit's scalar: its byte range in the text and its style.
type Located<'e> = (Range<usize>, ScalarStyle, &'e Edit);

fn locate_edits<'e>(text: &str, edits: &'e [Edit]) -> Result<Vec<Located<'e>>, String> {
    let wanted: HashSet<&str> = edits.iter().map(|e| e.pointer.as_str()).collect();
    if wanted.len() != edits.len() {
        return Err("the same image field is edited twice".into());
    }
    let mut found = locate(text, &wanted)?;
    let mut located = Vec::with_capacity(edits.len());
    for edit in edits {
        let pointer = &edit.pointer;
        let nodes = found.remove(pointer.as_str()).unwrap_or_default();
        let node = match nodes.as_slice() {
            [node] => node,
            [] => {
                return Err(format!(
                    "cannot find the image at {pointer} in the text (it comes from a merge key or an alias?); \
                     not rewritten"
                ));
            }
            more => return Err(format!("{pointer} appears {} times (duplicate key); not rewritten", more.len())),
        };
        let style = match node.style {
            None => return Err(format!("the image at {pointer} is an alias; not rewritten")),
            Some(ScalarStyle::Literal | ScalarStyle::Folded) => {
                return Err(format!("the image at {pointer} is a block scalar (| or >); not rewritten"));
            }
            Some(style) => style,
        };
        if node.value != edit.old {
            return Err(format!(
                "the text at {pointer} reads {:?}, expected {:?}; not rewritten",
                node.value, edit.old
            ));
        }
        located.push((node.range.clone(), style, edit));
    }
    Ok(located)
}

/// A scalar (or alias, `style: None`) found at a wanted pointer.
#[derive(Debug)]
struct Node {
    range: Range<usize>,
    style: Option<ScalarStyle>,
    value: String,
}

enum Frame {
    /// `key`: None while a key is expected; Some(token) while its value is (None if the key is not
    /// a plain string, so nothing below it has a pointer).
    Map {
        pointer: Option<String>,
        key: Option<Option<String>>,
    },
    Seq {
        pointer: Option<String>,
        next: usize,
    },
}

/// Walks the parser's events of one document, tracking the JSON pointer of every node, and
/// returns the scalars and aliases found at the wanted pointers with their byte ranges.
fn locate(text: &str, wanted: &HashSet<&str>) -> Result<HashMap<String, Vec<Node>>, String> {
    let mut found: HashMap<String, Vec<Node>> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| format!("not valid YAML: {e}"))?;
        if matches!(event, Event::DocumentStart(..)) {
            documents += 1;
            if documents > 1 {
                return Err("more than one YAML document where one was expected".into());
            }
        }
        if !event.is_node() {
            if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
                stack.pop();
            }
            continue;
        }
        // The pointer of this node, or None if it is a mapping key or under a non-string key.
        let pointer: Option<String> = match stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { pointer, key }) => match key.take() {
                None => {
                    let token = match &event {
                        Event::Scalar(value, ..) => Some(value.to_string()),
                        _ => None,
                    };
                    *key = Some(token);
                    None
                }
                Some(token) => pointer.as_ref().zip(token).map(|(p, t)| format!("{p}/{}", patch::escape(&t))),
            },
            Some(Frame::Seq { pointer, next }) => {
                *next += 1;
                pointer.as_ref().map(|p| format!("{p}/{}", *next - 1))
            }
        };
        match event {
            Event::MappingStart(..) => stack.push(Frame::Map { pointer, key: None }),
            Event::SequenceStart(..) => stack.push(Frame::Seq { pointer, next: 0 }),
            Event::Scalar(ref value, style, ..) => record(&mut found, wanted, pointer, &span, Some(style), value),
            _ => record(&mut found, wanted, pointer, &span, None, ""),
        }
    }
    Ok(found)
}

fn record(
    found: &mut HashMap<String, Vec<Node>>,
    wanted: &HashSet<&str>,
    pointer: Option<String>,
    span: &serde_saphyr::granit_parser::Span,
    style: Option<ScalarStyle>,
    value: &str,
) {
    let Some(pointer) = pointer.filter(|p| wanted.contains(p.as_str())) else { return };
    let Some(range) = span.byte_range() else { return };
    found.entry(pointer).or_default().push(Node { range, style, value: value.to_string() });
}

/// `value` as a scalar of the given style (plain falls back to double quotes where plain would
/// not read back as the same string).
fn render(value: &str, style: ScalarStyle) -> String {
    match style {
        ScalarStyle::Plain if plain_safe(value) => value.to_string(),
        ScalarStyle::SingleQuoted if !value.chars().any(char::is_control) => format!("'{}'", value.replace('\'', "''")),
        _ => {
            let mut out = String::with_capacity(value.len() + 2);
            out.push('"');
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
    }
}

/// Whether `value` reads back as the same string when written plain, in block or flow context.
fn plain_safe(value: &str) -> bool {
    !value.is_empty()
        && !value.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@` \t".contains(c))
        && !value.ends_with([' ', '\t', ':'])
        && !value.contains(": ")
        && !value.contains(" #")
        && !value.chars().any(|c| c.is_control() || ",[]{}".contains(c))
        && serde_saphyr::from_str::<Value>(value).ok() == Some(Value::String(value.to_string()))
}

/// The rewritten text must parse to the original with exactly the edited values changed.
fn verify(before: &str, after: &str, edits: &[Edit]) -> Result<(), String> {
    let mut expected = parse_value(before)?;
    for edit in edits {
        match expected.pointer_mut(&edit.pointer) {
            Some(slot) if slot.as_str() == Some(edit.old.as_str()) => *slot = Value::String(edit.new.clone()),
            _ => return Err(format!("the parsed document has no {:?} at {}; not rewritten", edit.old, edit.pointer)),
        }
    }
    let actual = parse_value(after).map_err(|e| format!("the rewritten document does not parse ({e}); not written"))?;
    if actual != expected {
        let changed: BTreeSet<String> = edits.iter().map(|e| e.pointer.clone()).collect();
        return Err(format!("the rewritten document differs from the original beyond {changed:?}; not written"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SKIP_ANNOTATION;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn pinned(image: &str) -> String {
        format!("{image}@{D}")
    }

    /// Rewrites `text` pinning each (pointer, old) and returns the result.
    fn rewrite(text: &str, edits: &[(&str, &str)]) -> Result<String, String> {
        let edits: Vec<Edit> = edits.iter().map(|(p, old)| Edit::new(p, old, &pinned(old))).collect();
        rewrite_document(text, &edits)
    }

    fn ranges(text: &str) -> Vec<(&str, bool)> {
        split_documents(text).into_iter().map(|c| (&text[c.range], c.content)).collect()
    }

    #[test]
    fn block_style_keeps_comments_spacing_and_order() {
        let text = "\
# a pod
apiVersion: v1
kind: Pod
metadata:
  name: web   # the name
  annotations:
    note: \"image: app:v1\"
spec:
  containers:
  - name: web
    image:   app:v1     # pinned by CI
    args: [\"--image\", \"app:v1\"]

  initContainers:
    - image: app:v1
      name: init
";
        let out = rewrite(text, &[("/spec/containers/0/image", "app:v1"), ("/spec/initContainers/0/image", "app:v1")])
            .unwrap();
        let expected = text
            .replace("image:   app:v1     #", &format!("image:   {}     #", pinned("app:v1")))
            .replace("    - image: app:v1\n", &format!("    - image: {}\n", pinned("app:v1")));
        assert_eq!(out, expected);
        assert!(out.contains("note: \"image: app:v1\""));
        assert!(out.contains("[\"--image\", \"app:v1\"]"));
    }

    #[test]
    fn quoted_styles_are_kept() {
        let text = "spec:\n  containers:\n  - {name: a, image: 'app:v1'}\n  - name: b\n    image: \"redis:7\" # q\n";
        let out =
            rewrite(text, &[("/spec/containers/0/image", "app:v1"), ("/spec/containers/1/image", "redis:7")]).unwrap();
        assert_eq!(
            out,
            format!(
                "spec:\n  containers:\n  - {{name: a, image: '{}'}}\n  - name: b\n    image: \"{}\" # q\n",
                pinned("app:v1"),
                pinned("redis:7")
            )
        );
    }

    #[test]
    fn flow_style_everywhere() {
        let text = "{kind: Pod, spec: {containers: [{name: a, image: app:v1}, {image: \"x:1\", name: b}]}}\n";
        let out =
            rewrite(text, &[("/spec/containers/0/image", "app:v1"), ("/spec/containers/1/image", "x:1")]).unwrap();
        assert_eq!(
            out,
            format!(
                "{{kind: Pod, spec: {{containers: [{{name: a, image: {}}}, {{image: \"{}\", name: b}}]}}}}\n",
                pinned("app:v1"),
                pinned("x:1")
            )
        );
    }

    #[test]
    fn crlf_and_quoted_keys() {
        let text = "spec:\r\n  \"containers\":\r\n  - 'image': app:v1 # c\r\n    name: a\r\n";
        let out = rewrite(text, &[("/spec/containers/0/image", "app:v1")]).unwrap();
        assert_eq!(out, text.replace("app:v1", &pinned("app:v1")));
    }

    #[test]
    fn same_value_elsewhere_is_untouched() {
        // The same text as a key's value in a literal block, an annotation and a sibling field.
        let text = "\
metadata:
  annotations:
    script: |
      image: app:v1
    image: app:v1
spec:
  containers:
  - name: a
    env: [{name: image, value: app:v1}]
    image: app:v1
";
        let out = rewrite(text, &[("/spec/containers/0/image", "app:v1")]).unwrap();
        assert_eq!(out.matches(&pinned("app:v1")).count(), 1);
        assert!(out.ends_with(&format!("    image: {}\n", pinned("app:v1"))));
        assert_eq!(out.replace(&pinned("app:v1"), "app:v1"), text);
    }

    #[test]
    fn refuses_what_it_cannot_rewrite_in_place() {
        let alias = "x: &img app:v1\nspec:\n  containers:\n  - image: *img\n";
        let e = rewrite(alias, &[("/spec/containers/0/image", "app:v1")]).unwrap_err();
        assert!(e.contains("alias"), "{e}");

        let merge = "base: &b {image: app:v1}\nspec:\n  containers:\n  - <<: *b\n    name: a\n";
        let e = rewrite(merge, &[("/spec/containers/0/image", "app:v1")]).unwrap_err();
        assert!(e.contains("cannot find"), "{e}");

        let block = "spec:\n  containers:\n  - image: |-\n      app:v1\n";
        let e = rewrite(block, &[("/spec/containers/0/image", "app:v1")]).unwrap_err();
        assert!(e.contains("block scalar"), "{e}");

        let wrong = "spec:\n  containers:\n  - image: app:v2\n";
        let e = rewrite(wrong, &[("/spec/containers/0/image", "app:v1")]).unwrap_err();
        assert!(e.contains("expected"), "{e}");

        let e = rewrite("a: [\n", &[("/a/0", "x")]).unwrap_err();
        assert!(e.contains("not valid YAML"), "{e}");
    }

    #[test]
    fn plain_values_that_would_not_read_back_are_quoted() {
        assert_eq!(render("app:v1@sha256:00", ScalarStyle::Plain), "app:v1@sha256:00");
        assert_eq!(render("true", ScalarStyle::Plain), "\"true\"");
        assert_eq!(render("a: b", ScalarStyle::Plain), "\"a: b\"");
        assert_eq!(render("x,y", ScalarStyle::Plain), "\"x,y\"");
        assert_eq!(render("it's", ScalarStyle::SingleQuoted), "'it''s'");
        assert_eq!(render("a\"b\\c", ScalarStyle::DoubleQuoted), "\"a\\\"b\\\\c\"");
        let text = "spec:\n  containers:\n  - image: app\n";
        let edits = [Edit::new("/spec/containers/0/image", "app", "123")];
        assert_eq!(rewrite_document(text, &edits).unwrap(), "spec:\n  containers:\n  - image: \"123\"\n");
    }

    #[test]
    fn multi_line_values_become_one_line() {
        let text = "spec:\n  containers:\n  - image: \"app:\n      v1\"\n    name: a\n";
        let out = rewrite(text, &[("/spec/containers/0/image", "app: v1")]).unwrap();
        assert_eq!(out, format!("spec:\n  containers:\n  - image: \"{}\"\n    name: a\n", pinned("app: v1")));
    }

    #[test]
    fn pointers_escape_keys() {
        let text = "a/b:\n  c~d: [x, app:v1]\n";
        let out = rewrite(text, &[("/a~1b/c~0d/1", "app:v1")]).unwrap();
        assert_eq!(out, format!("a/b:\n  c~d: [x, {}]\n", pinned("app:v1")));
    }

    #[test]
    fn complex_keys_are_refused() {
        // A collection as a key has no JSON form: the document is refused, not guessed at.
        let text = "? [image]\n: app:v1\nimage: app:v1\n";
        let e = rewrite(text, &[("/image", "app:v1")]).unwrap_err();
        assert!(e.contains("not valid YAML"), "{e}");
    }

    #[test]
    fn duplicate_edits_and_keys_are_refused() {
        let text = "spec:\n  containers:\n  - image: app:v1\n    image: app:v1\n";
        let e = rewrite(text, &[("/spec/containers/0/image", "app:v1")]).unwrap_err();
        assert!(e.contains("2 times") || e.contains("not valid YAML"), "{e}");
        let text = "spec:\n  containers:\n  - image: app:v1\n";
        let e = rewrite(text, &[("/spec/containers/0/image", "app:v1"), ("/spec/containers/0/image", "app:v1")])
            .unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn splitting_documents() {
        assert_eq!(ranges(""), vec![("", false)]);
        assert_eq!(ranges("a: 1\n"), vec![("a: 1\n", true)]);
        // A leading --- and the comments before it belong to the first document.
        assert_eq!(ranges("# c\n---\na: 1\n---\nb: 2\n"), vec![("# c\n---\na: 1\n", true), ("---\nb: 2\n", true)]);
        // Markers with comments or content on the line, ... ends a document, CRLF.
        assert_eq!(
            ranges("--- # one\r\na: 1\r\n...\r\n# two\r\n--- {b: 2}\r\n---\r\n"),
            vec![("--- # one\r\na: 1\r\n...\r\n", true), ("# two\r\n--- {b: 2}\r\n", true), ("---\r\n", false)]
        );
        // Not markers: ---- , indented ---, --- inside a word; empty documents between markers.
        assert_eq!(
            ranges("a: |\n  ---\n----: x\n---\n---\nb: 1"),
            vec![("a: |\n  ---\n----: x\n", true), ("---\n", false), ("---\nb: 1", true)]
        );
        // Directives stay with their document.
        assert_eq!(
            ranges("a: 1\n...\n%YAML 1.2\n---\nb: 2\n"),
            vec![("a: 1\n...\n", true), ("%YAML 1.2\n---\nb: 2\n", true)]
        );
        // The ranges always cover the text.
        for text in ["---", "---\n", "\n\n---\n\n", "a\n---\nb\n...\n", "\u{feff}---\na: 1\n"] {
            let joined: String = split_documents(text).iter().map(|c| &text[c.range.clone()]).collect();
            assert_eq!(joined, text);
        }
    }

    #[test]
    fn chunks_know_their_first_line() {
        for text in [
            "",
            "a: 1\n",
            "# c\n---\na: 1\n---\nb: 2\n",
            "--- # one\r\na: 1\r\n...\r\n# two\r\n--- {b: 2}\r\n---\r\n",
            "a: |\n  ---\n----: x\n---\n---\nb: 1",
            "a: 1\n...\n%YAML 1.2\n---\nb: 2\n",
            "a\n...\n...\nb\n",
        ] {
            for chunk in split_documents(text) {
                let counted = text[..chunk.range.start].matches('\n').count() + 1;
                assert_eq!(chunk.first_line, counted, "{text:?} at {:?}", chunk.range);
            }
        }
    }

    /// Many documents are read in one pass. Counting each document's line from the start of the
    /// text made this input take hours (over 10^11 bytes scanned); no timing is asserted.
    #[tokio::test]
    async fn many_documents_are_linear() {
        let documents = 100_000;
        let text: String = (0..documents).map(|i| format!("kind: ConfigMap\ndata: {{n: '{i}'}}\n---\n")).collect();
        let engine = Engine::new(Config::default()).unwrap();
        // Every document is read before the last one fails, naming its line.
        let broken = format!("{text}a: [\n");
        let e = mutate_text(&engine, &broken).await.unwrap_err().to_string();
        let (marker, last) = (3 * documents, 3 * documents + 1);
        assert!(
            e.contains(&format!("document {} (from line {marker}): not valid YAML: line {last} ", documents + 1)),
            "{e}"
        );
    }

    #[test]
    fn sites_of_documents() {
        let config = Config::default();
        let deployment: Value = serde_json::json!({
            "kind": "Deployment",
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "app:v1"}]}}}
        });
        // Templates are pinned here although workloads.templates is false.
        assert!(!config.workloads.templates);
        assert_eq!(document_sites(&deployment, &config)[0].pointer, "/spec/template/spec/containers/0/image");
        let list = serde_json::json!({"kind": "List", "items": [
            {"kind": "ConfigMap", "data": {"image": "x"}},
            {"kind": "Pod", "spec": {"containers": [{"image": "b:1"}]}},
        ]});
        assert_eq!(document_sites(&list, &config)[0].pointer, "/items/1/spec/containers/0/image");
        let typed_list =
            serde_json::json!({"kind": "PodList", "items": [{"spec": {"containers": [{"image": "b:1"}]}}]});
        assert_eq!(document_sites(&typed_list, &config)[0].pointer, "/items/0/spec/containers/0/image");
        for other in [
            serde_json::json!({"kind": "ConfigMap", "data": {"spec": {"containers": [{"image": "b:1"}]}}}),
            serde_json::json!({"spec": {"containers": [{"image": "b:1"}]}}),
            serde_json::json!("just a string"),
            Value::Null,
        ] {
            assert!(document_sites(&other, &config).is_empty(), "{other}");
        }
    }

    /// Custom resources: the built-in ones without any config, told apart by API group (a
    /// Knative Service is not a core Service), and kinds the config declares by pod spec or by
    /// image pointers.
    #[test]
    fn sites_of_declared_kinds() {
        let template = serde_json::json!({"spec": {"containers": [{"name": "a", "image": "app:v1"}],
            "volumes": [{"name": "m", "image": {"reference": "models:v1"}}]}});
        let object = |api_version: &str, kind: &str| {
            serde_json::json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"},
                "spec": {"template": template.clone()}})
        };
        let config = Config::default();
        let pointers = |value: &Value, config: &Config| -> Vec<String> {
            document_sites(value, config).into_iter().map(|s| s.pointer).collect()
        };
        let both = ["/spec/template/spec/containers/0/image", "/spec/template/spec/volumes/0/image/reference"];
        assert_eq!(pointers(&object("argoproj.io/v1alpha1", "Rollout"), &config), both);
        assert_eq!(pointers(&object("serving.knative.dev/v1", "Service"), &config), both);
        assert!(pointers(&object("v1", "Service"), &config).is_empty(), "a core Service has no images");
        assert!(pointers(&object("example.com/v1", "Rollout"), &config).is_empty(), "another group's Rollout");
        let config = Config::parse(
            "workloads:\n  kinds:\n    - { group: example.com, kind: Runner, podSpec: /spec/pod }\n    - { group: example.com, kind: Model, images: [/spec/server/image, /spec/weights~1image] }",
        )
        .unwrap();
        let runner = serde_json::json!({"apiVersion": "example.com/v1", "kind": "Runner",
            "spec": {"pod": {"initContainers": [{"name": "i", "image": "init:v1"}]}}});
        assert_eq!(pointers(&runner, &config), ["/spec/pod/initContainers/0/image"]);
        let model = serde_json::json!({"apiVersion": "example.com/v1", "kind": "Model",
            "spec": {"server": {"image": "srv:v1"}, "weights/image": "w:v1", "other": {"image": "no:v1"}}});
        let sites = document_sites(&model, &config);
        assert_eq!(
            sites.iter().map(|s| (s.pointer.as_str(), s.image.as_str())).collect::<Vec<_>>(),
            [("/spec/server/image", "srv:v1"), ("/spec/weights~1image", "w:v1")]
        );
    }

    #[test]
    fn exclusions_apply() {
        let pod = |namespace: &str, annotation: &str| {
            serde_json::json!({
                "kind": "Pod",
                "metadata": {"namespace": namespace, "annotations": {SKIP_ANNOTATION: annotation}},
                "spec": {"containers": [{"image": "b:1"}]}
            })
        };
        let mut config = Config::default();
        assert!(document_sites(&pod("kube-system", ""), &config).is_empty());
        assert_eq!(document_sites(&pod("apps", "true"), &config).len(), 1);
        config.allow_pod_opt_out = true;
        assert!(document_sites(&pod("apps", "true"), &config).is_empty());
        assert_eq!(document_sites(&pod("apps", "false"), &config).len(), 1);
        let deployment = serde_json::json!({
            "kind": "Deployment",
            "spec": {"template": {
                "metadata": {"annotations": {SKIP_ANNOTATION: "true"}},
                "spec": {"containers": [{"image": "app:v1"}]}
            }}
        });
        assert!(document_sites(&deployment, &config).is_empty());
    }
}
