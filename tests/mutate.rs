//! `layerlink mutate -f` against a real registry: the real binary pins the images of Pods and
//! workloads in a multi-document file and changes nothing else (comments, blank lines, quoting,
//! flow style, markers, a ConfigMap that mentions an image, an excluded namespace), is
//! idempotent, reads standard input, and gates CI with its exit status.

mod support;

use std::path::{Path, PathBuf};

use support::{
    Registry,
    cli::{Run, layerlink},
    image,
    oci::Index,
};

/// A registry with the images the manifests name, and a config file that lists it.
struct Setup {
    registry: Registry,
    _dir: tempfile::TempDir,
    config: PathBuf,
    host: String,
    /// (placeholder, image as written, digest): `<name>` in a template is pinned, `<name-text>`
    /// is the same image that must stay as written.
    images: Vec<(&'static str, String, String)>,
}

impl Setup {
    fn new() -> Setup {
        let registry = Registry::start();
        let host = registry.host();
        let app = registry.push("team/app", "v1", &image("app")).digest;
        let sidecar = registry.push("team/sidecar", "2.0", &image("sidecar")).digest;
        let job = registry.push("team/job", "1", &image("job")).digest;
        let bare = registry.push("team/bare", "latest", &image("bare")).digest;
        let multi =
            Index::new(vec![image("multi").platform("linux", "amd64"), image("multi-arm").platform("linux", "arm64")]);
        let multi = registry.push_index("team/multi", "v1", &multi).digest;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "# the same file serve reads\nregistries: [{{host: \"{host}\", plainHttp: true}}]\n\
                 workloads: {{templates: false}}\nresolve: {{requestTimeout: 20s}}\n"
            ),
        )
        .unwrap();
        let images = vec![
            ("app", format!("{host}/team/app:v1"), app),
            ("sidecar", format!("{host}/team/sidecar:2.0"), sidecar),
            ("job", format!("{host}/team/job:1"), job),
            ("bare", format!("{host}/team/bare"), bare),
            ("multi", format!("{host}/team/multi:v1"), multi),
        ];
        Setup { registry, _dir: dir, config, host, images }
    }

    fn digest(&self, name: &str) -> &str {
        &self.images.iter().find(|(n, _, _)| *n == name).unwrap().2
    }

    /// The template with every placeholder as written (the input).
    fn input(&self, template: &str) -> String {
        self.fill(template, false)
    }

    /// The template with `<name>` pinned to the digest the registry reported (the expected
    /// output); `<name-text>` stays as written.
    fn expected(&self, template: &str) -> String {
        self.fill(template, true)
    }

    fn fill(&self, template: &str, pin: bool) -> String {
        let mut text = template.replace("<host>", &self.host);
        for (name, written, digest) in &self.images {
            text = text.replace(&format!("<{name}-text>"), written);
            let tagged = if written.rsplit('/').next().unwrap().contains(':') {
                written.clone()
            } else {
                format!("{written}:latest")
            };
            let value = if pin { format!("{tagged}@{digest}") } else { written.clone() };
            text = text.replace(&format!("<{name}>"), &value);
        }
        assert!(!text.contains('<'), "unfilled placeholder in {text}");
        text
    }

    fn config(&self) -> &Path {
        &self.config
    }
}

fn mutate_file(setup: &Setup, dir: &Path, text: &str, extra: &[&str]) -> Run {
    let file = dir.join(format!("in-{}.yaml", text.len()));
    std::fs::write(&file, text).unwrap();
    let mut args = vec!["mutate", "--config", setup.config().to_str().unwrap(), "-f", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    layerlink(&args, None)
}

/// Comments, blank lines, flow mappings and sequences, single and double quotes, trailing
/// comments, markers with comments, `...`, a ConfigMap and an annotation that contain
/// `image: <registry>/team/app:v1`, an already pinned image and a Pod in kube-system (excluded by
/// default) — only the image values at container sites may change.
const MANIFESTS: &str = "\
# Rendered by kustomize; images pinned in CI.
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: notes   # not a workload
data:
  deploy.yaml: |
    containers:
    - image: <app-text>
  image: <app-text>
---


apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    example: \"image: <app-text>\"
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: <app>   # the app

          args: [\"--upstream\", \"<app-text>\"]
        - {name: sidecar, image: '<sidecar>'}
      initContainers:
      - name: init
        image: \"<bare>\"
---   # a CronJob
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: \"0 3 * * *\"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: <job>}, {name: multi, image: <multi>}]
...
---
apiVersion: v1
kind: Pod
metadata:
  name: debug
spec:
  containers:
  - image:    <app>
    name: debug
  - name: pinned
    image: <host>/team/app@<app-digest>       # stays
---
apiVersion: v1
kind: Pod
metadata: {name: system, namespace: kube-system}
spec:
  containers: [{name: c, image: <app-text>}]
";

#[test]
fn pins_a_multi_document_file_and_keeps_everything_else() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let template = MANIFESTS.replace("<app-digest>", setup.digest("app"));
    let input = setup.input(&template);
    let expected = setup.expected(&template);
    // The test itself: five images are pinned, the rest of the text is the input.
    assert_ne!(input, expected);
    assert_eq!(expected.matches("@sha256:").count(), 7);

    let run = mutate_file(&setup, dir.path(), &input, &[]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, expected, "stderr: {}", run.stderr);
    assert!(!run.stderr.contains("not pinned"), "{}", run.stderr);

    // The ConfigMap document and the kube-system Pod are byte for byte the input's.
    let config_map = &input[..input.find("---\n\n\napiVersion: apps/v1").unwrap()];
    assert!(run.stdout.starts_with(config_map));
    assert!(config_map.contains(&format!("image: {}/team/app:v1\n", setup.host)));
    let system_pod = &input[input.rfind("---\napiVersion: v1\nkind: Pod").unwrap()..];
    assert!(run.stdout.ends_with(system_pod));
    // The multi-platform image is pinned to its index, not to one platform's manifest.
    let index = setup.registry.manifest_digest("team/multi", "v1").unwrap();
    assert!(run.stdout.contains(&format!("image: {}/team/multi:v1@{index}}}", setup.host)));

    // Idempotent: the output goes through unchanged.
    let again = mutate_file(&setup, dir.path(), &run.stdout, &[]);
    assert_eq!(again.code, Some(0), "stderr: {}", again.stderr);
    assert_eq!(again.stdout, run.stdout);
}

#[test]
fn reads_standard_input_with_crlf() {
    let setup = Setup::new();
    let template = "# from kustomize build\r\n---\r\napiVersion: v1\r\nkind: Pod\r\nmetadata:\r\n  name: p # c\r\n\
                    spec:\r\n  containers:\r\n  - name: a\r\n    image: '<sidecar>'\r\n  - name: b\r\n    image: <job>\r\n";
    let run = layerlink(&["mutate", "-c", setup.config().to_str().unwrap(), "-f", "-"], Some(&setup.input(template)));
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, setup.expected(template));
    assert_eq!(run.stdout.matches("\r\n").count(), template.matches("\r\n").count());
}

#[test]
fn unresolvable_images_are_reported_and_gate_the_exit_status() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let template = "\
kind: Deployment
spec:
  template:
    spec:
      containers:
      - {name: ok, image: <app>}
      - {name: missing, image: <host>/team/app:nope}
---
kind: Pod
spec:
  containers:
  - name: again
    image: <host>/team/app:nope
";
    let nope = format!("{}/team/app:nope", setup.host);
    let run = mutate_file(&setup, dir.path(), &setup.input(template), &[]);
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    // What can be pinned is; the unknown tag stays as written.
    assert_eq!(run.stdout, setup.expected(template));
    let warnings: Vec<&str> = run.stderr.lines().filter(|l| l.contains(": not pinned ")).collect();
    assert_eq!(warnings.len(), 2, "one line per place: {}", run.stderr);
    for (warning, at) in warnings.iter().zip([":7: document 1 (Deployment)", ":13: document 2 (Pod)"]) {
        assert!(warning.contains(&format!("{at}: not pinned {nope}: ")), "{}", run.stderr);
        assert!(warning.contains("not found"), "{}", run.stderr);
    }

    let run = mutate_file(&setup, dir.path(), &setup.input(template), &["--allow-unresolved"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, setup.expected(template));
    assert!(run.stderr.contains(&format!(": not pinned {nope}: ")), "{}", run.stderr);
}

#[test]
fn documents_that_cannot_be_rewritten_in_place_fail_the_run() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let alias = setup.input(
        "kind: ConfigMap\n---\nkind: Pod\nx-image: &img <app-text>\nspec:\n  containers:\n  - {name: a, image: *img}\n",
    );
    let run = mutate_file(&setup, dir.path(), &alias, &[]);
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("document 2 (from line 2)"), "{}", run.stderr);
    assert!(run.stderr.contains("alias"), "{}", run.stderr);

    let broken = setup.input("kind: Pod\nspec:\n  containers:\n  - {name: a, image: <app>}\n---\nkind: [\n");
    let run = mutate_file(&setup, dir.path(), &broken, &[]);
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("document 2 (from line 5): not valid YAML"), "{}", run.stderr);

    // An alias that needs no rewriting (already pinned) is fine, and the text is unchanged.
    let pinned_alias = format!(
        "kind: Pod\nx: &img {}/team/app@{}\nspec:\n  containers:\n  - {{name: a, image: *img}}\n",
        setup.host,
        setup.digest("app")
    );
    let run = mutate_file(&setup, dir.path(), &pinned_alias, &[]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, pinned_alias);

    let run = layerlink(&["mutate", "-f", dir.path().join("missing.yaml").to_str().unwrap()], None);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("cannot read"), "{}", run.stderr);
}

/// The library entry point: problems name the document by index in their pointer.
#[tokio::test(flavor = "multi_thread")]
async fn mutate_text_reports_problems_by_document() {
    layerlink::install_crypto_provider();
    let setup = tokio::task::spawn_blocking(Setup::new).await.unwrap();
    let config = layerlink::Config::load(setup.config()).unwrap();
    let engine = layerlink::Engine::new(config).unwrap();
    let template = "kind: Service\n---\nkind: Pod\nspec:\n  containers:\n  - {name: a, image: <app>}\n  \
                    - {name: b, image: <host>/team/app:nope}\n";
    let (text, problems) = layerlink::mutate_files::mutate_text(&engine, &setup.input(template)).await.unwrap();
    assert_eq!(text, setup.expected(template));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].site.pointer, "/1/spec/containers/1/image");
    assert_eq!(problems[0].site.container, "b");
    assert_eq!(problems[0].cause, "not_found");
    drop(setup);
}

/// Every problem names the file, line, document and object; objects of kinds layerlink does not
/// read that have `image` fields are listed, and `--strict` makes them an error (exit 3). A
/// custom resource of the built-in table (an Argo Rollout) is pinned without any config.
#[test]
fn problems_and_skipped_kinds_say_where_they_are() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let template = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {image: not-an-image}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - name: a
        image: <app>
      - name: b
        image: <host>/team/app:nope
---
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: build}
spec:
  templates:
  - name: step
    container: {image: <host>/team/app:v1}
";
    let input = setup.input(template);
    let file = dir.path().join("in.yaml");
    std::fs::write(&file, &input).unwrap();
    let name = file.to_str().unwrap();
    let run = layerlink(&["mutate", "--config", setup.config().to_str().unwrap(), "-f", name], None);
    assert_eq!(run.stdout, setup.expected(template), "the Rollout is pinned; stderr: {}", run.stderr);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("layerlink: ")).collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(
        lines[0].starts_with(&format!(
            "layerlink: {name}:16: document 2 (Rollout/web): not pinned {}/team/app:nope",
            setup.host
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!("layerlink: {name}:18: document 3 (Workflow/build): skipped: argoproj.io/v1alpha1 Workflow has 1 image field")),
        "{}",
        lines[1]
    );
    let strict = layerlink(
        &["mutate", "--config", setup.config().to_str().unwrap(), "-f", name, "--strict", "--allow-unresolved"],
        None,
    );
    assert_eq!(strict.code, Some(3), "{}", strict.stderr);
    let without_workflow = input.split("---\napiVersion: argoproj.io/v1alpha1\nkind: Workflow").next().unwrap();
    std::fs::write(&file, without_workflow).unwrap();
    let strict = layerlink(
        &["mutate", "--config", setup.config().to_str().unwrap(), "-f", name, "--strict", "--allow-unresolved"],
        None,
    );
    assert_eq!(strict.code, Some(0), "a ConfigMap's image key is data: {}", strict.stderr);
}

/// Public manifests as their projects publish them (tests/fixtures/manifests): `mutate -f`
/// changes nothing but the image values. Docker Hub names reach the test registry as a mirror.
#[test]
fn public_manifests_change_only_in_their_image_values() {
    let registry = Registry::start();
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("registries: [{{ host: docker.io, mirrors: ['{host}'] }}, {{ host: '{host}', plainHttp: true }}]\n"),
    )
    .unwrap();
    for (file, images) in [("argo-rollouts-rollout-canary.yaml", &[("argoproj/rollouts-demo", "blue")][..])] {
        let digests: Vec<(String, String)> = images
            .iter()
            .map(|(name, tag)| (format!("{name}:{tag}"), registry.push(name, tag, &image(name)).digest))
            .collect();
        let path = format!("{}/tests/fixtures/manifests/{file}", env!("CARGO_MANIFEST_DIR"));
        let input = std::fs::read_to_string(&path).unwrap();
        let run = layerlink(&["mutate", "--config", config.to_str().unwrap(), "-f", &path], None);
        assert_eq!(run.code, Some(0), "{file}: {}", run.stderr);
        // Line by line: only lines that carry an image differ, and only by the digest appended.
        let (before, after): (Vec<&str>, Vec<&str>) = (input.lines().collect(), run.stdout.lines().collect());
        assert_eq!(before.len(), after.len(), "{file}");
        let mut changed = 0;
        for (old, new) in before.iter().zip(&after) {
            if old != new {
                let (written, digest) =
                    digests.iter().find(|(w, _)| old.ends_with(w.as_str())).unwrap_or_else(|| panic!("{file}: {old}"));
                assert_eq!(*new, format!("{old}@{digest}"), "{file}: {written}");
                changed += 1;
            }
        }
        assert_eq!(changed, images.len(), "{file}: every image pinned");
        assert_eq!(run.stdout.len(), input.len() + changed * "@sha256:".len() + changed * 64, "{file}");
    }
}
