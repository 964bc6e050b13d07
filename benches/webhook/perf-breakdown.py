#!/usr/bin/env python3
"""Where a server's CPU goes per review, from a `make bench` perf recording.

    BENCH_PERF=/tmp/perf cargo bench --bench webhook      # prints "perf: <label> answered N reviews"
    perf script -i /tmp/perf/layerlink.perf.data -F comm,tid,time,ip,sym > /tmp/perf/layerlink.script
    python3 benches/webhook/perf-breakdown.py /tmp/perf/layerlink.script N

Each sample is put in the first category whose test matches any frame of its stack (so a write(2)
made while logging counts as logging, a malloc made while parsing counts as parsing). The
recording samples at 499 Hz (cpu-clock; hardware counters are not available on this VM).
"""
import collections
import sys

HZ = 499.0


def has(*needles):
    return lambda stack: any(n in f for f in stack for n in needles)


CATEGORIES = [
    ("log: tracing JSON event (format + write)", has("tracing_subscriber", "tracing_core")),
    ("metrics: prometheus-client families", has("prometheus_client")),
    ("cache: Resolver::resolve / moka", has("moka::", "layerlink::resolve")),
    ("review JSON parse (serde_json)", has("serde_json::de::", "serde_json::value::de", "serde_json::read::",
                                           "as serde_core::de::Deserializer")),
    ("drop of the parsed review", has("drop_in_place<layerlink::admission::review::AdmissionRe")),
    ("response: serialize ReviewResponse", has("ReviewResponse>::serialize", "serde_json::ser::to_vec")),
    ("sites::find", has("layerlink::sites")),
    ("exclude globs (globset)", has("globset")),
    ("reference parse/format", has("layerlink::reference")),
    ("patch + base64", has("with_patch", "base64", "json_patch", "layerlink::patch", "Plan::patch")),
    ("policy::decide", has("layerlink::policy")),
    ("engine.plan (other)", has("layerlink::engine")),
    ("handler decide/enforce (other)", has("layerlink::admission::handler")),
    ("kernel: socket read/write syscalls, softirq", lambda s: any(f.startswith("K:") for f in s)),
    ("TLS: AES-GCM (ring)", lambda s: any("ring_core" in f for f in s[:3])),
    ("TLS: rustls other", has("rustls::")),
    ("hyper / axum / tokio / other", lambda s: True),
]
ALLOC = ("malloc", "free", "realloc", "unlink_chunk", "malloc_consolidate", "cfree")


def samples(path):
    """Stacks (leaf first) from `perf script -F comm,tid,time,ip,sym`; kernel frames get "K:"."""
    stack = None
    for line in open(path, errors="replace"):
        if not line.strip():
            if stack:
                yield stack
            stack = None
            continue
        if not line[0].isspace():
            stack = []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        ip, sym = parts
        if stack is None:
            stack = []
        stack.append(("K:" if ip.startswith("ffffffff") and sym != "[unknown]" else "") + sym)
    if stack:
        yield stack


def main():
    path, reviews = sys.argv[1], float(sys.argv[2])
    counts = collections.Counter()
    total = alloc = 0
    for stack in samples(path):
        total += 1
        if stack and any(k in stack[0] for k in ALLOC):
            alloc += 1
        for name, test in CATEGORIES:
            if test(stack):
                counts[name] += 1
                break
    us = lambda n: n / HZ / reviews * 1e6
    print(f"{path}: {total} samples, {us(total):.1f} us CPU per review")
    print(f"  (self time in glibc malloc/free/realloc, all categories: {100 * alloc / total:.1f}%, {us(alloc):.1f} us)")
    for name, _ in CATEGORIES:
        n = counts[name]
        print(f"  {name:<45} {100 * n / max(total, 1):5.1f}%  {us(n):6.1f} us")


if __name__ == "__main__":
    main()
