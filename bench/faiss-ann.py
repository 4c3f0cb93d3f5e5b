"""FAISS side of the ANN suite (bench/suites/ann.ts): builds each FAISS setting on the suite's .npy files and
prints one JSON line per (setting, search parameter): build seconds, bytes per vector, p50/p95 ms per query
(one query per call, as a server searches) and recall@10 against the suite's exact top-10.

    python3 bench/faiss-ann.py <dir with base.npy, queries.npy, truth.npy> [quick]

Needs Debian's python3-faiss and python3-numpy. APFA_FAISS_ANN="hnsw,ivf" (the suite sets it) names the settings
besides IndexFlatIP to build; unset builds both.
"""
import json, os, sys, time
import numpy as np
import faiss

d = sys.argv[1]
quick = len(sys.argv) > 2 and sys.argv[2] == "quick"
x = np.load(f"{d}/base.npy")
q = np.load(f"{d}/queries.npy")
truth = np.load(f"{d}/truth.npy").astype(np.int64)
n, dims = x.shape
k = truth.shape[1]
kinds = set(os.environ.get("APFA_FAISS_ANN", "hnsw,ivf").split(","))


def measure(name, setting, index, build_s):
    nbytes = len(faiss.serialize_index(index))
    times, hits = [], 0
    for i in range(len(q)):
        t = time.perf_counter()
        _, ids = index.search(q[i : i + 1], k)
        times.append((time.perf_counter() - t) * 1000)
        hits += len(set(ids[0].tolist()) & set(truth[i].tolist()))
    times.sort()
    pct = lambda p: times[min(len(times) - 1, int(round(p / 100 * (len(times) - 1))))]
    print(json.dumps({"engine": name, "setting": setting, "build_s": build_s, "bytes_per_vector": nbytes / n,
                      "p50_ms": pct(50), "p95_ms": pct(95), "recall": hits / (k * len(q))}), flush=True)


def built(make):
    t = time.perf_counter()
    index = make()
    return index, time.perf_counter() - t


flat, b = built(lambda: (lambda i: (i.add(x), i)[1])(faiss.IndexFlatIP(dims)))
measure("faiss IndexFlatIP", "exact", flat, b)
del flat


def hnsw():
    i = faiss.IndexHNSWFlat(dims, 16, faiss.METRIC_INNER_PRODUCT)
    i.hnsw.efConstruction = 128
    i.add(x)
    return i


if "hnsw" in kinds:
    h, b = built(hnsw)
    # At 1M the near-duplicate set needs more than ef 512 (as apfa's sweep does there).
    for ef in [16, 32, 64, 128, 256, 512] + ([1024, 2048] if n >= 1_000_000 else []):
        h.hnsw.efSearch = ef
        measure("faiss HNSWFlat M16", f"efSearch {ef}", h, b)
    del h

# 4·√n would be ~1,264 at 100k; 256 keeps k-means training to about a minute on this 2-core machine.
nlist = 64 if quick else 256 if n <= 200_000 else 1024  # bench/suites/ann.ts nlistFor(): apfa's faiss engine builds the same index


def ivf():
    quantizer = faiss.IndexFlatIP(dims)
    i = faiss.IndexIVFFlat(quantizer, dims, nlist, faiss.METRIC_INNER_PRODUCT)
    i.train(x[np.linspace(0, n - 1, min(n, 100 * nlist)).astype(np.int64)])
    i.add(x)
    i._quantizer = quantizer  # keep the quantizer alive with the index
    return i


if "ivf" in kinds:
    v, b = built(ivf)
    for nprobe in [1, 2, 4, 8, 16, 32, 64]:
        if nprobe > nlist:
            break
        v.nprobe = nprobe
        measure(f"faiss IVF{nlist},Flat", f"nprobe {nprobe}", v, b)
