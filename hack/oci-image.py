#!/usr/bin/env python3
"""Builds the layerlink container image as an OCI image layout, without a container engine.

One layer: both binaries in /usr/local/bin, the shared libraries the dynamic `layerlink` needs
(found with ldd), CA certificates, and /etc/passwd + /etc/group naming the nonroot user 65532.
The config runs as 65532:65532 with `layerlink serve --config /etc/layerlink/config.yaml`.
Deterministic: fixed mtimes and owners, so the same binaries give the same digest.

usage: oci-image.py --layerlink BIN --noop BIN --out DIR --tag TAG
"""
import argparse, gzip, hashlib, io, json, os, shutil, subprocess, tarfile

def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()

def shared_libraries(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(parts[2])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])  # the dynamic loader
    return libs

def add_file(tar, path, data, mode):
    info = tarfile.TarInfo(path.lstrip("/"))
    info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, 0, 0, 0
    tar.addfile(info, io.BytesIO(data))

def add_dir(tar, path, mode=0o755):
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
    tar.addfile(info)

def layer(layerlink, noop):
    files = {
        "/usr/local/bin/layerlink": (open(layerlink, "rb").read(), 0o755),
        "/usr/local/bin/layerlink-noop": (open(noop, "rb").read(), 0o755),
        "/etc/passwd": (b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n", 0o644),
        "/etc/group": (b"root:x:0:\nnonroot:x:65532:\n", 0o644),
        "/etc/ssl/certs/ca-certificates.crt": (open("/etc/ssl/certs/ca-certificates.crt", "rb").read(), 0o644),
    }
    for lib in shared_libraries(layerlink):
        files[lib] = (open(os.path.realpath(lib), "rb").read(), 0o755)
    dirs = set()
    for path in files:
        parent = os.path.dirname(path)
        while parent not in ("/", ""):
            dirs.add(parent)
            parent = os.path.dirname(parent)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs | {"/tmp", "/home/nonroot"}):
            add_dir(tar, d, 0o1777 if d == "/tmp" else 0o755)
        for path in sorted(files):
            data, mode = files[path]
            add_file(tar, path, data, mode)
    raw = raw.getvalue()
    return raw, gzip.compress(raw, compresslevel=6, mtime=0)

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layerlink", required=True)
    p.add_argument("--noop", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tag", default="latest")
    p.add_argument("--arch", default="amd64")
    a = p.parse_args()
    raw, blob = layer(a.layerlink, a.noop)
    config = json.dumps({
        "architecture": a.arch, "os": "linux",
        "config": {
            "User": "65532:65532",
            "Entrypoint": ["/usr/local/bin/layerlink"],
            "Cmd": ["serve", "--config", "/etc/layerlink/config.yaml"],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            "ExposedPorts": {"8443/tcp": {}, "8080/tcp": {}},
            "Labels": {"org.opencontainers.image.title": "layerlink"},
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(raw)]},
        "history": [{"created_by": "hack/oci-image.py"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(blob), "size": len(blob)}],
    }, sort_keys=True).encode()
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    os.makedirs(os.path.join(a.out, "blobs", "sha256"))
    for data in (blob, config, manifest):
        with open(os.path.join(a.out, "blobs", "sha256", sha256(data)[7:]), "wb") as f:
            f.write(data)
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": a.tag}}]}, f)
    print(sha256(manifest))

if __name__ == "__main__":
    main()
