#!/usr/bin/env bash
# `make mlserver`: predcache in front of a real MLServer (upstream mode), each step shown with its
# output, as in docs/models/upstream.md. Free ports, a temporary directory; everything stops at the end.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODELS=$WORK/models
MLSERVER_PORT=$(free_port)
METRICS_PORT=$(free_port)
PORT=$(free_port)
API=127.0.0.1:$PORT
INFER=http://127.0.0.1:$MLSERVER_PORT/v2/models/iris/infer
echo "MLServer on 127.0.0.1:$MLSERVER_PORT (metrics on $METRICS_PORT), predcache on $API, files in $WORK"

say "A model repository: a logistic regression on the iris data set, which scikit-learn ships."
run <<STEP
mkdir -p $MODELS/iris
$PY - <<'PY'
import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

features, labels = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=1000).fit(features, labels), "$MODELS/iris/model.joblib")
PY
cat > $MODELS/iris/model-settings.json <<'JSON'
{"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
 "parameters": {"uri": "./model.joblib", "version": "iris-1"}}
JSON
cat > $MODELS/settings.json <<'JSON'
{"host": "127.0.0.1", "http_port": $MLSERVER_PORT, "grpc_port": $(free_port), "metrics_port": $METRICS_PORT,
 "metrics_dir": "$WORK/metrics", "parallel_workers": 0}
JSON
STEP

say "MLServer, then predcache in front of it: MODEL is the upstream's URL, MODEL_VERSION is required," \
    "and a TTL of 60 s keeps the burst below within one TTL on a slow machine (the default is 5 s)."
printf '\n$ .venv/bin/mlserver start %s &\n' "$MODELS"
start MLServer "$WORK/mlserver.log" .venv/bin/mlserver start "$MODELS"
MLSERVER_PID=$LAST_PID
wait_ready MLServer "http://127.0.0.1:$MLSERVER_PORT/v2/models/iris/ready" "$MLSERVER_PID" "$WORK/mlserver.log" 120
printf '\n$ MODEL=%s MODEL_VERSION=iris-1 CACHE_TTL_SECONDS=60 .venv/bin/python -m service --port %s &\n' "$INFER" "$PORT"
MODEL=$INFER MODEL_VERSION=iris-1 CACHE_TTL_SECONDS=60 start predcache "$WORK/predcache.log" "$PY" -m service --port "$PORT"
PREDCACHE_PID=$LAST_PID
wait_ready predcache "http://$API/readyz" "$PREDCACHE_PID" "$WORK/predcache.log"

say "A V2 inference request (a MISS: MLServer runs it), the same one spelled differently (a HIT), one MLServer refuses."
run <<STEP
curl -si $API/predict -H 'Content-Type: application/json' \\
    -d '{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}'
STEP
run <<STEP
curl -si $API/predict -H 'Content-Type: application/json' \\
    -d '{"inputs":[{"data":[5.1,3.5,1.4,0.2],"datatype":"FP64","shape":[1.0,4.0],"name":"x"}]}'
STEP
run <<STEP
curl -si $API/predict -H 'Content-Type: application/json' -d '{"input": []}'
STEP
say "MLServer's own count: one inference for the two requests (its 422 is not one)."
run <<STEP
curl -s 127.0.0.1:$METRICS_PORT/metrics | grep '^model_infer_request_success_total'
STEP

say "200 concurrent requests for a new input: one more inference."
run <<STEP
seq 200 | xargs -P 100 -I{} curl -s $API/predict -H 'Content-Type: application/json' \\
    -d '{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.9, 3.0, 5.1, 1.8]}]}' \\
    -o /dev/null -w '%{http_code} %header{cache-status}\n' | sed 's/ttl=[0-9]*/ttl=N/' | sort | uniq -c
STEP
run <<STEP
curl -s 127.0.0.1:$METRICS_PORT/metrics | grep '^model_infer_request_success_total'
STEP

say "predcache again, now with a JSON Schema for the requests: a bad one stops at predcache."
stop "$PREDCACHE_PID"
printf '\n$ MODEL=%s MODEL_VERSION=iris-1 CACHE_TTL_SECONDS=60 \\\n    INPUT_SCHEMA=examples/iris_v2_request.schema.json .venv/bin/python -m service --port %s &\n' "$INFER" "$PORT"
MODEL=$INFER MODEL_VERSION=iris-1 CACHE_TTL_SECONDS=60 INPUT_SCHEMA=examples/iris_v2_request.schema.json \
    start predcache "$WORK/predcache-schema.log" "$PY" -m service --port "$PORT"
PREDCACHE_PID=$LAST_PID
wait_ready predcache "http://$API/readyz" "$PREDCACHE_PID" "$WORK/predcache-schema.log"
run <<STEP
curl -si $API/predict -H 'Content-Type: application/json' \\
    -d '{"id": "req-1", "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [5.1, 3.5, 1.4]}]}'
STEP
say "The schema is the Input of /openapi.json."
run <<STEP
curl -s $API/openapi.json | $PY -c 'import json, sys; print(json.load(sys.stdin)["components"]["schemas"]["Input"]["properties"]["inputs"])'
STEP

say "MLServer stopped: a new input is a 503 (the details are in predcache's log, under the request id)."
printf '\n$ kill %s   # MLServer\n' "$MLSERVER_PID"
stop "$MLSERVER_PID"
run <<STEP
curl -si $API/predict -H 'Content-Type: application/json' \\
    -d '{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.0, 3.6, 1.4, 0.2]}]}'
STEP

say "Done: predcache stopped, $WORK removed."
