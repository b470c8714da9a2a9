#!/usr/bin/env python3
"""Would JSON Merge Patch (RFC 7386) shrink snapshot events? Sizes for the document shapes the
benchmarks use. Run: python3 benches/merge_patch_sizes.py"""
import json
def merge_patch(old, new):
    # RFC 7386: objects recurse; anything else (arrays included) is replaced whole.
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    patch = {}
    for k in old:
        if k not in new: patch[k] = None
    for k, v in new.items():
        if k not in old: patch[k] = v
        elif old[k] != v:
            patch[k] = merge_patch(old[k], v)
    return patch
def sentiment(n, rnd):
    return {"configuration_id": "cfg", "tickers": [
        {"symbol": f"T{i:04}", "score": ((i*7919 + (rnd if i%10==0 else 0)) % 2000)/1000 - 1,
         "sentiment": "neutral", "mentions": 100 + (i*31 + (rnd if i%10==0 else 0)) % 900,
         "sources": {"news": 12, "social": 40}} for i in range(n)]}
def metrics(t):
    h = (t * 2654435761) & 0xffffffffffff
    return {"hours": 24, "requests": 10000 + h % 5000, "errors": (h >> 16) % 50, "p95_ms": 80 + (h >> 32) % 200, "sample": t}
def size(x): return len(json.dumps(x, separators=(',', ':'), sort_keys=True))
for name, a, b in [("sentiment 100 items, 10% changed", sentiment(100,1), sentiment(100,2)),
                   ("sentiment 1000 items, 10% changed", sentiment(1000,1), sentiment(1000,2)),
                   ("metrics snapshot", metrics(1), metrics(2))]:
    p = merge_patch(a, b)
    print(f"{name}: document {size(b)} B, merge patch {size(p)} B ({100*size(p)/size(b):.0f}%)")
# as items mode sends only the changed items:
a, b = sentiment(100,1), sentiment(100,2)
changed = [x for x, y in zip(b["tickers"], a["tickers"]) if x != y]
print(f"items mode for sentiment 100: {sum(size(x) for x in changed)} B in {len(changed)} events")
