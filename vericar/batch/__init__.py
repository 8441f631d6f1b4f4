"""Photo collections: identify every photo of folders, file lists or CSVs into CSV / JSONL / Parquet rows.

    vericar identify photos/ --out results.csv                 # the plain engine (vericar.batch.local)
    vericar identify photos/ --out results.parquet --engine ray [--address ADDR]   # Ray Data (ray_engine)

Both engines build rows the same way (``rows``: the app's /identify answer per vehicle) and write them
through the same resumable writer (``writer``); ``inputs`` finds the photos. See docs/batch.md.
"""
