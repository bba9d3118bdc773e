#!/usr/bin/env bash
# Build the throwaway venv the quix-* baselines (bench/baselines.py) run in.
#
# Why a second venv: quixstreams pins confluent-kafka (3.28.1: >=2.8.2,<2.13) below the
# 2.16 museflow's venv has, and museflow's venv must not be downgraded for a benchmark.
#
# Why layered: the peer venv holds only quixstreams and what it pulls in (its own
# confluent-kafka among them); a .pth line then appends the main venv's site-packages *after*
# its own, so museflow (editable), xgboost, numpy and fastavro are the very builds museflow
# is measured with, and only the Kafka client differs. Packages both need are constrained
# to the main venv's versions, so nothing but confluent-kafka is shadowed by another version.
#
#   bash bench/peer_venv.sh            # idempotent: does nothing when the venv is ready
#   bash bench/peer_venv.sh --rebuild  # start over
#
# Env: MUSEFLOW_MAIN_VENV (default .venv), MUSEFLOW_PEER_VENV (default bench/.peer-venv),
#      QUIXSTREAMS_VERSION (default 3.28.1).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
main="${MUSEFLOW_MAIN_VENV:-$root/.venv}"
peer="${MUSEFLOW_PEER_VENV:-$root/bench/.peer-venv}"
quix="${QUIXSTREAMS_VERSION:-3.28.1}"
stamp="$peer/.ready-quixstreams-$quix"

if [[ "${1:-}" != "--rebuild" && -f "$stamp" ]]; then
  exit 0
fi
[[ -x "$main/bin/python" ]] || { echo "peer_venv: no main venv at $main" >&2; exit 1; }

# Same base interpreter as the main venv, so its compiled packages load in the peer venv too.
"$main/bin/python" -m venv --clear "$peer"
constraints="$peer/constraints.txt"
"$main/bin/python" -m pip freeze --exclude-editable | grep -viE '^(confluent-kafka|museflow)==' > "$constraints"
"$peer/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints" "quixstreams==$quix"
main_site="$("$main/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
peer_site="$("$peer/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# addsitedir (not a bare path line) so the main venv's own .pth files (museflow's editable install) apply.
echo "import site; site.addsitedir('$main_site')" > "$peer_site/zz-museflow-main-venv.pth"
"$peer/bin/python" - <<'EOF'
import confluent_kafka, quixstreams, xgboost
import museflow.contracts.serde
print(f"peer venv: quixstreams {quixstreams.__version__}, confluent-kafka {confluent_kafka.version()[0]}, "
      f"xgboost {xgboost.__version__}, museflow from {museflow.contracts.serde.__file__}")
EOF
touch "$stamp"
