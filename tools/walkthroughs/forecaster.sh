#!/usr/bin/env bash
# `make forecaster`: the scikit-learn price forecaster (examples/price_forecaster.py) plugged into
# predcache, each step shown with its output, as in docs/models/plug-in.md. A free port; stops at the end.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT=$(free_port)
API=127.0.0.1:$PORT
echo "predcache on $API, files in $WORK"

say "predcache with the forecaster: it fits its models on examples/data/price_history.csv at startup."
printf '\n$ MODEL=examples.price_forecaster:PriceForecaster .venv/bin/python -m service --port %s &\n' "$PORT"
MODEL=examples.price_forecaster:PriceForecaster start predcache "$WORK/predcache.log" "$PY" -m service --port "$PORT"
wait_ready predcache "http://$API/readyz" "$LAST_PID" "$WORK/predcache.log" 120

say "A forecast 15 minutes ahead (a MISS: the model runs), then the same input as JSON, spelled otherwise (a HIT)."
run <<STEP
curl -si '$API/predict?pair=btc-usd&horizon_minutes=15'
STEP
run <<STEP
curl -si $API/predict -H 'Content-Type: application/json' -d '{"horizon_minutes": 15.0, "pair": "BTC/USD"}'
STEP

say "A pair it has no history for is a 404 naming the pairs it knows; a horizon past 60 minutes is a 400."
run <<STEP
curl -s '$API/predict?pair=doge-eur'
STEP
run <<STEP
curl -s '$API/predict?pair=eth-eur&horizon_minutes=90'
STEP

say "A batch: each item looked up, the misses computed in one predict_batch call."
run <<STEP
curl -s $API/predict/batch -H 'Content-Type: application/json' \\
    -d '{"inputs": [{"pair": "ETH-EUR"}, {"pair": "SOL-USD", "horizon_minutes": 30}, {"pair": "BTC-USD", "horizon_minutes": 15}]}' |
    $PY -c 'import json, sys; print(*[(r["status"], r["cache"], r["prediction"]["pair"]) for r in json.load(sys.stdin)["results"]], sep="\n")'
STEP
say "Two model calls in all (one for the first request, one for the batch's two misses), three predictions."
run <<STEP
curl -s $API/metrics | grep -E '^predcache_model_(calls|items)_total'
STEP

say "Done: predcache stopped, $WORK removed."
