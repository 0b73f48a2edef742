#!/usr/bin/env bash
# Mutation testing of the pure cores (docs/testing.md, "Mutation testing").
#
# mutmut (settings in setup.cfg, [mutmut]) plants one small change at a time in the webhook's
# deciders and the sidecar's plan/domxml/triggers, runs the fast unit tests that reach the changed
# function, and counts the changes no test noticed. The run happens in a copy of the work tree
# under the cache directory (mutmut writes a `mutants/` tree next to the sources), so the
# checkout stays clean. Writes per-module killed/survived/total/score to bench/results/mutation.json
# (or the file given as $1) and prints the table.
#
#   scripts/mutation.sh                         # 5-15 minutes on 2 CPUs, always under nice
#   BM_MUTATION_CHILDREN=1 scripts/mutation.sh  # one test process at a time
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/bench/results/mutation.json}")
work=${BM_MUTATION_WORKDIR:-/var/cache/bridge-migration/mutation}
children=${BM_MUTATION_CHILDREN:-2}
if [[ -z "${VIRTUAL_ENV:-}" && -f "$root/.venv/bin/activate" ]]; then
  # shellcheck disable=SC1091
  source "$root/.venv/bin/activate"
fi
python -c 'import mutmut' 2>/dev/null || { echo "mutmut is missing: scripts/install.sh installs the dev extra" >&2; exit 1; }

# The tree as it is now, committed or not (untracked files too, ignored ones not).
tree=$work/tree
rm -rf "$tree"
mkdir -p "$tree"
cd "$root"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
  xargs -0 cp --parents -t "$tree"
commit=$(git rev-parse --short HEAD)
[[ -z "$(git status --porcelain)" ]] || commit="$commit+changes"

cd "$tree"
# hypothesis draws the fixed examples CI draws (tests/conftest.py), so two runs give one score.
export CI=true
echo "== mutmut run in $tree (log: $work/run.log)"
started=$(date +%s)
nice -n 19 python -m mutmut run --max-children "$children" >"$work/run.log" 2>&1 || {
  tail -c 3000 "$work/run.log" | tr '\r' '\n' | tail -20 >&2
  exit 1
}
seconds=$(($(date +%s) - started))
python -m mutmut results --all true >"$work/results.txt"

python - "$work/results.txt" "$out" "$commit" "$seconds" <<'EOF'
import collections
import datetime as dt
import json
import sys
from importlib.metadata import version

results, out, commit, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# mutmut's statuses: a mutant a test failed on (or that made a test hang or crash) is killed;
# "no tests" (no fast test reaches the function) and "suspicious" count as not killed.
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
by_module: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
survivors: dict[str, list[str]] = collections.defaultdict(list)
for line in open(results):
    name, _, status = line.strip().rpartition(": ")
    if not name:
        continue
    if status == "not checked":
        sys.exit(f"mutant {name} was not checked: the run did not finish")
    if status == "skipped":
        continue
    package, module = name.split(".")[:2]
    path = f"{package}/{module}.py"
    by_module[path]["killed" if status in KILLED else status.replace(" ", "_")] += 1
    if status not in KILLED:
        survivors[path].append(f"{name}: {status}")


def row(c: collections.Counter[str]) -> dict[str, object]:
    total = sum(c.values())
    killed = c["killed"]
    return {
        "killed": killed,
        "survived": c["survived"],
        "no_tests": c["no_tests"],
        "other": total - killed - c["survived"] - c["no_tests"],
        "total": total,
        "score": round(100 * killed / total, 1) if total else None,
    }


overall: collections.Counter[str] = collections.Counter()
for c in by_module.values():
    overall.update(c)
doc = {
    "benchmark": "mutation",
    "what": "mutants killed by the fast unit tests, per module (score = killed / total, in %)",
    "tool": f"mutmut {version('mutmut')}",
    "command": "scripts/mutation.sh",
    "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    "commit": commit,
    "seconds": seconds,
    "modules": {path: row(c) for path, c in sorted(by_module.items())},
    "overall": row(overall),
    "not_killed": {path: sorted(names) for path, names in sorted(survivors.items())},
}
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(f"{'module':32} {'killed':>7} {'survived':>9} {'no tests':>9} {'total':>6} {'score':>7}")
for path, r in [*doc["modules"].items(), ("overall", doc["overall"])]:
    print(f"{path:32} {r['killed']:>7} {r['survived']:>9} {r['no_tests']:>9} {r['total']:>6} {r['score']:>6}%")
print(f"written to {out}")
EOF
