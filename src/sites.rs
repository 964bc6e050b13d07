//! Where images live: every `image` field of a Pod, an EphemeralContainers subresource, or a pod
//! template in a workload, and every image volume's `image.reference`, as (JSON pointer, image)
//! pairs on the raw object.

use serde_json::Value;

/// One image field of an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Site {
    /// RFC 6901 pointer to the `image` string, e.g. `/spec/containers/0/image`.
    pub pointer: String,
    pub image: String,
    /// The container's name (or the image volume's), for messages and reports.
    pub container: String,
}

const CONTAINER_LISTS: &[&str] = &["initContainers", "containers", "ephemeralContainers"];

/// What kind of object this is, as far as images go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape<'a> {
    /// A Pod: its spec is at `/spec`.
    Pod,
    /// The 1.20 `EphemeralContainers` subresource object: the list is at the root.
    EphemeralContainers,
    /// A workload, PodTemplate or declared kind: a pod spec at the given pointer.
    Template(&'a str),
    /// A declared kind whose images are single strings at these pointers.
    Fields(&'a [String]),
}

/// The shape of a kind (from [`crate::kinds`]), or None for kinds that carry no pod spec.
pub fn shape(kind: &str) -> Option<Shape<'static>> {
    match kind {
        "Pod" => Some(Shape::Pod),
        "EphemeralContainers" => Some(Shape::EphemeralContainers),
        _ => crate::kinds::find(kind).map(|k| Shape::Template(k.pod_spec)),
    }
}

/// The shape of a declared kind: its pod spec, or else its image pointers.
pub fn declared_shape(declared: &crate::kinds::Declared) -> Shape<'_> {
    match &declared.pod_spec {
        Some(pointer) => Shape::Template(pointer),
        None => Shape::Fields(&declared.images),
    }
}

/// The pointer of the pod spec inside an object of this shape ("" for the root), if it has one.
pub fn spec_pointer<'a>(shape: Shape<'a>) -> Option<&'a str> {
    match shape {
        Shape::Pod => Some("/spec"),
        Shape::EphemeralContainers => Some(""),
        Shape::Template(path) => Some(path),
        Shape::Fields(_) => None,
    }
}

/// Every image field in the object, init containers first, in document order, then the image
/// volumes (`volumes[].image.reference`) of a pod spec; for [`Shape::Fields`], the strings at
/// its pointers, in their order.
pub fn find(shape: Shape<'_>, object: &Value) -> Vec<Site> {
    let Some(base) = spec_pointer(shape) else {
        let Shape::Fields(pointers) = shape else { unreachable!("only Fields has no pod spec") };
        return pointers
            .iter()
            .filter_map(|pointer| {
                let image = object.pointer(pointer)?.as_str()?;
                let field = pointer.rsplit('/').next().unwrap_or_default();
                Some(Site { pointer: pointer.clone(), image: image.to_string(), container: field.to_string() })
            })
            .collect();
    };
    let Some(spec) = object.pointer(base) else { return Vec::new() };
    let mut sites = Vec::new();
    for list in CONTAINER_LISTS {
        let Some(containers) = spec.get(*list).and_then(Value::as_array) else { continue };
        for (i, container) in containers.iter().enumerate() {
            if let Some(image) = container.get("image").and_then(Value::as_str) {
                sites.push(Site {
                    pointer: format!("{base}/{list}/{i}/image"),
                    image: image.to_string(),
                    container: container.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                });
            }
        }
    }
    // The 1.20 EphemeralContainers subresource carries no volumes.
    let volumes = spec.get("volumes").and_then(Value::as_array).filter(|_| shape != Shape::EphemeralContainers);
    for (i, volume) in volumes.into_iter().flatten().enumerate() {
        if let Some(image) = volume.pointer("/image/reference").and_then(Value::as_str) {
            sites.push(Site {
                pointer: format!("{base}/volumes/{i}/image/reference"),
                image: image.to_string(),
                container: volume.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
            });
        }
    }
    sites
}

/// Whether a site is an image volume rather than a container's image.
pub fn is_volume(site: &Site) -> bool {
    site.pointer.ends_with("/image/reference")
}

/// The sites whose image differs from the old object at the same place (for UPDATE): an update
/// that does not touch an image must not pin it, or it would restart a running container.
pub fn changed(sites: Vec<Site>, old_object: Option<&Value>) -> Vec<Site> {
    let Some(old) = old_object else { return sites };
    sites
        .into_iter()
        .filter(|site| old.pointer(&site.pointer).and_then(Value::as_str) != Some(site.image.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::fixtures;

    fn images(sites: &[Site]) -> Vec<(&str, &str)> {
        sites.iter().map(|s| (s.pointer.as_str(), s.image.as_str())).collect()
    }

    #[test]
    fn pod_with_every_container_list() {
        let review = fixtures::review("pod-create-multi.json");
        let object = review.request.unwrap().object.unwrap();
        let sites = find(Shape::Pod, &object);
        assert_eq!(
            images(&sites),
            vec![
                ("/spec/initContainers/0/image", "busybox:1.36"),
                (
                    "/spec/initContainers/1/image",
                    "alpine@sha256:780e5567a24c09145d62bd290074dcc5b685893671d1ed7c721de20335e57e75"
                ),
                ("/spec/containers/0/image", "redis"),
                ("/spec/containers/1/image", "ghcr.io/org/app:v1.2.3"),
                (
                    "/spec/containers/2/image",
                    "registry.local:5000/team/app:1.0@sha256:baf6804425b31f7b4738f6df33c78b2edbf962feadee9611740b1191070934c1"
                ),
            ]
        );
        assert_eq!(sites[2].container, "cache");
    }

    #[test]
    fn workload_templates() {
        for (file, kind, pointer, image) in [
            ("deployment-create.json", "Deployment", "/spec/template/spec/containers/0/image", "nginx:1.25"),
            (
                "cronjob-create.json",
                "CronJob",
                "/spec/jobTemplate/spec/template/spec/containers/0/image",
                "ghcr.io/org/backup:1.4.0",
            ),
            (
                "podtemplate-create.json",
                "PodTemplate",
                "/template/spec/containers/0/image",
                "docker.io/myorg/worker:3.2.1",
            ),
            ("statefulset-create.json", "StatefulSet", "/spec/template/spec/containers/0/image", "postgres:16"),
            ("daemonset-create.json", "DaemonSet", "/spec/template/spec/initContainers/0/image", "busybox:1.36"),
        ] {
            let request = fixtures::review(file).request.unwrap();
            assert_eq!(request.kind.kind, kind);
            let sites = find(shape(kind).unwrap(), request.object.as_ref().unwrap());
            assert_eq!(sites[0].pointer, pointer, "{file}");
            if !image.is_empty() {
                assert_eq!(sites[0].image, image, "{file}");
            }
        }
    }

    #[test]
    fn ephemeral_containers_subresource_of_1_20() {
        let request = fixtures::review("pod-ephemeralcontainers-update.json").request.unwrap();
        let shape = shape(&request.kind.kind).unwrap();
        let sites = find(shape, request.object.as_ref().unwrap());
        assert_eq!(images(&sites), vec![("/ephemeralContainers/0/image", "busybox:1.36")]);
        assert_eq!(changed(sites, request.old_object.as_ref()).len(), 1);
    }

    #[test]
    fn update_pins_only_changed_images() {
        let request = fixtures::review("pod-update-image.json").request.unwrap();
        let sites = find(Shape::Pod, request.object.as_ref().unwrap());
        let changed = changed(sites, request.old_object.as_ref());
        assert_eq!(images(&changed), vec![("/spec/containers/0/image", "nginx:1.26")]);
        let mut unchanged = request.object.clone().unwrap();
        unchanged["spec"]["containers"][0]["image"] =
            request.old_object.as_ref().unwrap()["spec"]["containers"][0]["image"].clone();
        assert!(super::changed(find(Shape::Pod, &unchanged), request.old_object.as_ref()).is_empty());
    }

    #[test]
    fn image_volumes_are_sites() {
        let pod = serde_json::json!({"spec": {
            "containers": [{"name": "app", "image": "app:v1"}],
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "models", "image": {"reference": "ghcr.io/org/models:v3", "pullPolicy": "IfNotPresent"}},
                {"name": "odd", "image": {"reference": 7}}
            ]
        }});
        let sites = find(Shape::Pod, &pod);
        assert_eq!(
            images(&sites),
            vec![("/spec/containers/0/image", "app:v1"), ("/spec/volumes/1/image/reference", "ghcr.io/org/models:v3")]
        );
        assert_eq!(sites[1].container, "models");
        assert!(is_volume(&sites[1]) && !is_volume(&sites[0]));
        let deployment = serde_json::json!({"spec": {"template": {"spec": {"volumes": [{"name": "m", "image": {"reference": "m:1"}}]}}}});
        assert_eq!(
            find(shape("Deployment").unwrap(), &deployment)[0].pointer,
            "/spec/template/spec/volumes/0/image/reference"
        );
        // An UPDATE pins a volume only when its reference changed.
        let mut old = pod.clone();
        assert!(changed(find(Shape::Pod, &pod), Some(&old)).is_empty());
        old["spec"]["volumes"][1]["image"]["reference"] = "ghcr.io/org/models:v2".into();
        assert_eq!(changed(find(Shape::Pod, &pod), Some(&old)).len(), 1);
    }

    #[test]
    fn kinds_without_pod_specs() {
        assert_eq!(shape("ConfigMap"), None);
        assert!(find(Shape::Pod, &serde_json::json!({"spec": {"containers": "nope"}})).is_empty());
        assert!(find(Shape::Pod, &serde_json::json!({"spec": {"containers": [{"name": "x"}]}})).is_empty());
    }
}
