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
    let warnings: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("layerlink: not pinned ")).collect();
    assert_eq!(warnings.len(), 1, "one line per image: {}", run.stderr);
    assert!(warnings[0].starts_with(&format!("layerlink: not pinned {nope}: ")), "{}", run.stderr);
    assert!(warnings[0].contains("not found"), "{}", run.stderr);

    let run = mutate_file(&setup, dir.path(), &setup.input(template), &["--allow-unresolved"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, setup.expected(template));
    assert!(run.stderr.contains(&format!("layerlink: not pinned {nope}: ")), "{}", run.stderr);
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
