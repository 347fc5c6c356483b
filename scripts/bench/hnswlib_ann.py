"""hnswlib side of the ANN benchmark (vector-store/benches/ann.rs writes the data).

Reads base.f32 / queries.f32 / truth.u32 (row-major, little-endian) from DIR, builds an HNSW
index with the given M / ef_construction / threads, and for each ef prints one JSON line with
recall@10 and single-thread QPS (one knn_query call over all queries, num_threads=1, so no
Python overhead per query).
"""
import json
import sys
import time

import hnswlib
import numpy as np


def main():
    d, n, nq, dims, m, efc, threads = sys.argv[1], *map(int, sys.argv[2:8])
    efs = [int(x) for x in sys.argv[8].split(",")]
    base = np.fromfile(f"{d}/base.f32", dtype="<f4").reshape(n, dims)
    queries = np.fromfile(f"{d}/queries.f32", dtype="<f4").reshape(nq, dims)
    truth = np.fromfile(f"{d}/truth.u32", dtype="<u4").reshape(nq, 10)
    index = hnswlib.Index(space="cosine", dim=dims)
    index.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=100)
    t = time.perf_counter()
    index.add_items(base, np.arange(n), num_threads=threads)
    build = time.perf_counter() - t
    print(json.dumps({"build_s": build}), flush=True)
    for ef in efs:
        index.set_ef(ef)
        t = time.perf_counter()
        labels, _ = index.knn_query(queries, k=10, num_threads=1)
        secs = time.perf_counter() - t
        hits = sum(len(set(labels[i]) & set(truth[i])) for i in range(nq))
        print(json.dumps({"ef": ef, "recall": hits / (10 * nq), "qps": nq / secs}), flush=True)


if __name__ == "__main__":
    main()
