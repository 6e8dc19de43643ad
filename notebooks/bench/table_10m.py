"""Write a synthetic multi-domain click log as CSV for the table recipe's
bounded-memory benchmark (docs/benchmarks.md, "A 10-million-row table"):

    python3 notebooks/bench/table_10m.py data/raw/bench/clicks.csv 10000000
    /usr/bin/time -v target/release/pipeline data prepare -c configs/tables/bench-clicks.toml

Columns: user (1M ids), item (200k ids), scenario (the domain: 30 names,
Zipf-like sizes), price (a float), tags (up to 3 of 50, `|`-separated),
country (60 codes), day (YYYY-MM-DD over 2024), page (30,000 paths), session
(16 hex digits, not a feature: it only makes the rows as wide as real logs,
about 110 bytes), clicked (0/1 from a seeded logistic rule): 1.1 GB for 10M rows. Seeded: the same file every run. Standard library only.
"""

import random
import sys


def main(path: str, rows: int) -> None:
    rng = random.Random(20261203)
    scenarios = [f"scenario-{i:02d}" for i in range(30)]
    weights = [1.0 / (i + 1) for i in range(30)]
    tags = [f"t{i}" for i in range(50)]
    countries = [f"c{i:02d}" for i in range(60)]
    days = [f"2024-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29)]
    cum, acc = [], 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    import bisect

    with open(path, "w", buffering=1 << 22) as f:
        f.write("user,item,scenario,price,tags,country,day,page,session,clicked\n")
        out = []
        for i in range(rows):
            s = bisect.bisect_left(cum, rng.random() * acc)
            u = rng.randrange(1_000_000)
            it = rng.randrange(200_000)
            price = round(rng.lognormvariate(3.0, 1.0), 2)
            k = rng.randrange(4)
            t = "|".join(rng.sample(tags, k))
            c = countries[rng.randrange(60)]
            d = days[rng.randrange(len(days))]
            z = -1.5 + 0.04 * s + (0.5 if it % 7 == 0 else 0.0) - 0.01 * price ** 0.5
            y = 1 if rng.random() < 1.0 / (1.0 + 2.718281828 ** (-z)) else 0
            page = f"/shop/{scenarios[s]}/products/item-{it % 1000}"
            session = f"{rng.getrandbits(64):016x}"
            out.append(f"u{u},i{it},{scenarios[s]},{price},{t},{c},{d},{page},{session},{y}\n")
            if len(out) >= 100_000:
                f.write("".join(out))
                out.clear()
        f.write("".join(out))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
