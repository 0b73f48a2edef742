#!/usr/bin/env bash
# Mutation testing of the pure cores (docs/testing.md, "Mutation testing").
#
# mutmut (settings in setup.cfg, [mutmut]) plants one small change at a time in the webhook's
# deciders and the sidecar's pure cores and event dispatcher, runs the fast unit tests that reach
# the changed function, and counts the changes no test noticed. The run happens in a copy of the
# work tree under the cache directory (mutmut writes a `mutants/` tree next to the sources), so the
# checkout stays clean. Writes per-module killed/survived/total/score to bench/results/mutation.json
# (or the file given as $1) and prints the table.
#
#   scripts/mutation.sh                         # 5-15 minutes on 2 CPUs, always under nice
#   BM_MUTATION_CHILDREN=1 scripts/mutation.sh  # one test process at a time
#   scripts/mutation.sh --collect-only          # seconds, mutates nothing: setup.cfg's paths exist
#                                               # and mutmut's test collection in its mutants/ copy
#                                               # succeeds (tests/test_mutation_setup.py runs it)
set -euo pipefail
mode=run
if [[ ${1:-} == --collect-only ]]; then
  mode=collect
  shift
fi
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
# mutmut skips an also_copy path that does not exist and mutates nothing for an only_mutate
# pattern that matches no file, both silently: say so before spending minutes on it.
python - <<'EOF'
import configparser
import fnmatch
import sys
from pathlib import Path

from mutmut.configuration import config
from mutmut.utils.file_utils import walk_mutatable_files

cfg = config()
raw = configparser.ConfigParser()
raw.read("setup.cfg")
also_copy = [p for p in raw.get("mutmut", "also_copy", fallback="").splitlines() if p]
mutated = [str(p) for p in walk_mutatable_files()]
selection = [p.split("::")[0] for p in cfg.pytest_add_cli_args_test_selection if not p.startswith("-")]
wrong = [f"source_paths: {p} does not exist" for p in cfg.source_paths if not p.exists()]
wrong += [f"also_copy: {p} does not exist" for p in also_copy if not Path(p).exists()]
wrong += [f"only_mutate: {p} matches no file" for p in cfg.only_mutate if not fnmatch.filter(mutated, p)]
wrong += [f"pytest_add_cli_args_test_selection: {p} does not exist" for p in selection if not Path(p).exists()]
if wrong:
    sys.exit("setup.cfg, [mutmut], does not fit the tree:\n  " + "\n  ".join(wrong))
EOF

if [[ $mode == collect ]]; then
  # The first steps of `mutmut run` (copy source_paths and also_copy to mutants/, put mutants/
  # first on sys.path and the tree off it), then its test collection (pytest -x --collect-only
  # with setup.cfg's arguments, in mutants/), without mutating anything.
  python - <<'EOF'
import sys

from mutmut.configuration import config
from mutmut.runners.harness import PytestRunner
from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

config()  # read here, in the tree, as `mutmut run` does before it changes directory
copy_src_dir()
copy_also_copy_files()
setup_source_paths()
try:
    found = PytestRunner().list_all_tests()
except Exception as exc:  # CollectTestsFailedException, BadTestExecutionCommandsException
    sys.exit(f"mutmut's test collection failed in {config().resolved_mutated_source_paths[0].parent}: {exc!r}")
if not found.ids:
    sys.exit("mutmut's test collection found no tests")
print(f"mutmut collects {len(found.ids)} tests")
EOF
  exit 0
fi

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
import os
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
    # sidecar.core.plan.x_make_plan__mutmut_3: the longest dotted prefix that is a file here.
    parts = name.split(".")
    path = next(p for i in range(len(parts), 0, -1) if os.path.isfile(p := "/".join(parts[:i]) + ".py"))
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
