#!/bin/sh
# One-shot of docker-compose.yml: publish a deployment record for every demo model spec that
# `museflow models train-demo` wrote to $MUSEFLOW_MODEL_DIR, then the demo routes.
# Contract: specs are $MUSEFLOW_MODEL_DIR/*.yaml (artifacts beside them), routes are
# $MUSEFLOW_MODEL_DIR/routes.yaml.
set -eu
dir="${MUSEFLOW_MODEL_DIR:?MUSEFLOW_MODEL_DIR is not set}"
found=0
for spec in "$dir"/*.yaml; do
  [ -e "$spec" ] || continue
  [ "$(basename "$spec")" = "routes.yaml" ] && continue
  museflow models deploy "$spec"
  found=1
done
if [ "$found" -ne 1 ]; then
  echo "publish-demo: no model spec (*.yaml) in $dir; did 'museflow models train-demo' run?" >&2
  exit 1
fi
museflow routes set -f "$dir/routes.yaml"
