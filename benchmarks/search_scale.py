"""How gallery search scales: faiss flat / HNSW / IVF vs a NumPy brute-force baseline.

Builds N (default 1,000,000) seeded random L2-normalised float32 vectors of D=128, then times
k=10 search per query (one query at a time, and batched), reports recall@10 against exact
search and the NumPy/faiss time ratio. Prints a markdown table; ``--json PATH`` writes the rows.

    python benchmarks/search_scale.py                 # 1M x 128, flat + HNSW + IVF + NumPy
    python benchmarks/search_scale.py --n 100000 --skip hnsw --json out.json

Threads default to 1 (``--threads``) so faiss and NumPy compare like for like.
Random vectors on the sphere are the hardest case for approximate indexes (no cluster
structure), so their recall here is a lower bound for real embeddings.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator

import faiss
import numpy as np
from threadpoolctl import threadpool_limits  # a scikit-learn dependency


def unit_vectors(n: int, d: int, seed: int, clusters: int = 0, spread: float = 0.6) -> np.ndarray:
    """Seeded random L2-normalised float32 vectors (N, D), built in chunks to bound memory.

    ``clusters > 0`` draws them around that many random centres (noise ``spread`` per unit
    centre), like a gallery of many photos per vehicle class; 0 = uniform on the sphere, the
    worst case for approximate indexes.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32) / np.sqrt(d) if clusters else None
    x = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, 100_000):
        c = rng.standard_normal((min(n, a + 100_000) - a, d), dtype=np.float32)
        if centres is not None:
            c = centres[rng.integers(0, clusters, len(c))] + spread * c / np.sqrt(d)
        x[a : a + len(c)] = c / np.linalg.norm(c, axis=1, keepdims=True)
    return x


def numpy_search(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Brute-force top-k indices: one matrix product + argpartition, then sort the k."""
    sims = q @ x.T
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def time_search(fn: Callable[[np.ndarray], np.ndarray], q: np.ndarray, n_single: int, batch: int) -> dict:
    """Per-query ms one at a time (first ``n_single`` queries) and batched (all queries)."""
    fn(q[:1])  # warm-up: first-call allocations and thread start-up are not search time
    t0 = time.perf_counter()
    for i in range(n_single):
        fn(q[i : i + 1])
    single = (time.perf_counter() - t0) / n_single * 1e3
    out = []
    t0 = time.perf_counter()
    for a in range(0, len(q), batch):
        out.append(fn(q[a : a + batch]))
    batched = (time.perf_counter() - t0) / len(q) * 1e3
    return {"ms_single": single, "ms_batched": batched, "idx": np.concatenate(out)}


def recall_at(idx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top-k found."""
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(idx, exact)]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="gallery size")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--clustered", type=int, default=0, help="draw vectors around this many centres (0: uniform)")
    p.add_argument("--queries", type=int, default=1000, help="queries for batched timing and recall")
    p.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    p.add_argument("--batch", type=int, default=100, help="queries per batched call")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="threads for faiss (OpenMP) and NumPy (BLAS); 0 = library defaults. 1 by default: on a "
                        "shared/loaded machine idle OpenMP/BLAS threads spin and single-query times become noise")
    p.add_argument("--build-threads", type=int, default=2, help="faiss threads while building HNSW / IVF")
    p.add_argument("--hnsw-m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--ef-search", type=int, nargs="+", default=[64, 256])
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--ivf-train", type=int, default=100_000, help="IVF training sample size")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    p.add_argument("--skip", nargs="*", default=[], choices=["numpy", "hnsw", "ivf"])
    p.add_argument("--json", help="write the rows and settings here")
    return p.parse_args(argv)


def make_data(a: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """The gallery vectors and the queries; prints their size and the faiss set-up."""
    t0 = time.perf_counter()
    x = unit_vectors(a.n, a.dim, a.seed, a.clustered)
    # Queries come from the same centres (same seed → same centres), as new photos of known vehicles do.
    q = unit_vectors(a.n + a.queries, a.dim, a.seed, a.clustered)[a.n:] if a.clustered else unit_vectors(a.queries, a.dim, a.seed + 1)
    print(f"data: {a.n:,} x {a.dim} float32 ({x.nbytes / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f}s; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    return x, q


@contextlib.contextmanager
def build_threads(n: int) -> Iterator[None]:
    """faiss threads set to ``n`` (0: every CPU) while an index is built."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n or os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def record(rows: list[dict], method: str, params: str, build_s: float, res: dict, exact: np.ndarray) -> None:
    """Add one result row and print it."""
    rows.append({"method": method, "params": params, "build_s": round(build_s, 2),
                 "ms_single": round(res["ms_single"], 3), "ms_batched": round(res["ms_batched"], 4),
                 "recall@10": round(recall_at(res["idx"], exact), 4)})
    print(f"  {method} {params}: {rows[-1]}", flush=True)


def faiss_fn(index: faiss.Index, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """The index's top-k search as a function of the queries."""
    return lambda qq: index.search(qq, k)[1]


def bench_exact(a: argparse.Namespace, x: np.ndarray, q: np.ndarray, rows: list[dict]) -> np.ndarray:
    """Time faiss flat and (unless skipped) the NumPy baseline; the exact top-k, the recall reference."""
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(a.dim)
    flat.add(x)
    build = time.perf_counter() - t0
    res = time_search(faiss_fn(flat, a.k), q, a.single, a.batch)
    exact = res["idx"]  # flat inner product is exact: it is the recall reference
    record(rows, "faiss IndexFlatIP", "exact", build, res, exact)
    flat_row = rows[-1]
    if "numpy" not in a.skip:
        res = time_search(lambda qq: numpy_search(x, qq, a.k), q, a.single, a.batch)
        record(rows, "NumPy q @ X.T + argpartition", "exact", 0.0, res, exact)
        rows[-1]["numpy/faiss_flat_single"] = round(res["ms_single"] / flat_row["ms_single"], 2)
        rows[-1]["numpy/faiss_flat_batched"] = round(res["ms_batched"] / flat_row["ms_batched"], 2)
    return exact


def bench_hnsw(a: argparse.Namespace, x: np.ndarray, q: np.ndarray, exact: np.ndarray, rows: list[dict]) -> None:
    """Build HNSW once, time it at each efSearch."""
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(a.dim, a.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = a.ef_construction
    with build_threads(a.build_threads):
        hnsw.add(x)
    build = time.perf_counter() - t0
    for ef in a.ef_search:
        hnsw.hnsw.efSearch = ef
        res = time_search(faiss_fn(hnsw, a.k), q, a.single, a.batch)
        record(rows, "faiss IndexHNSWFlat", f"M={a.hnsw_m} efC={a.ef_construction} efS={ef}", build, res, exact)


def bench_ivf(a: argparse.Namespace, x: np.ndarray, q: np.ndarray, exact: np.ndarray, rows: list[dict]) -> None:
    """Train and fill IVF once, time it at each nprobe."""
    t0 = time.perf_counter()
    quant = faiss.IndexFlatIP(a.dim)
    ivf = faiss.IndexIVFFlat(quant, a.dim, a.nlist, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(a.seed + 2).choice(a.n, size=min(a.ivf_train, a.n), replace=False)
    with build_threads(a.build_threads):
        ivf.train(x[np.sort(sample)])
        ivf.add(x)
    build = time.perf_counter() - t0
    for nprobe in a.nprobe:
        ivf.nprobe = nprobe
        res = time_search(faiss_fn(ivf, a.k), q, a.single, a.batch)
        record(rows, "faiss IndexIVFFlat", f"nlist={a.nlist} nprobe={nprobe} train={len(sample):,}", build, res, exact)


def add_speedups(rows: list[dict]) -> None:
    """Each row's speed-up over the NumPy baseline (None without one)."""
    for r in rows:
        r["speedup_vs_numpy_single"] = None
    np_rows = [r for r in rows if r["method"].startswith("NumPy")]
    if np_rows:
        for r in rows:
            r["speedup_vs_numpy_single"] = round(np_rows[0]["ms_single"] / r["ms_single"], 1)
            r["speedup_vs_numpy_batched"] = round(np_rows[0]["ms_batched"] / r["ms_batched"], 1)


def report(a: argparse.Namespace, rows: list[dict]) -> None:
    """Print the settings and the markdown table."""
    print(f"\n{a.n:,} x {a.dim}-d, k={a.k}, {a.queries} queries ({a.single} timed one at a time, batches of "
          f"{a.batch}); search threads {a.threads or 'default'}, build threads {a.build_threads}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n")
    print("| method | params | build s | ms/query (1 at a time) | ms/query (batched) | recall@10 | "
          "NumPy/this (1 at a time) | NumPy/this (batched) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['params']} | {r['build_s']:.1f} | {r['ms_single']:.3f} | {r['ms_batched']:.4f} | "
              f"{r['recall@10']:.3f} | {r.get('speedup_vs_numpy_single') or '-'} | "
              f"{r.get('speedup_vs_numpy_batched') or '-'} |")


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; returns the result rows."""
    a = parse_args(argv)
    if a.threads:
        faiss.omp_set_num_threads(a.threads)
        threadpool_limits(a.threads)  # BLAS threads for the NumPy baseline (and OpenMP again)
    x, q = make_data(a)
    rows: list[dict] = []
    exact = bench_exact(a, x, q, rows)
    if "hnsw" not in a.skip:
        bench_hnsw(a, x, q, exact, rows)
    if "ivf" not in a.skip:
        bench_ivf(a, x, q, exact, rows)
    add_speedups(rows)
    report(a, rows)
    if a.json:
        info = {"settings": vars(a), "faiss": faiss.__version__, "numpy": np.__version__,
                "cpus": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(), "rows": rows}
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
