#!/usr/bin/env bash
# Build the FastRTC 0.0.34 baseline environment for bench/run_bench.py under bench/.fastrtc/:
#   bench/.fastrtc/venv/      fastrtc==0.0.34 (+vad extra), twilio, websockets, numpy
#                             (the same packages as shared/baselines/fastrtc/setup_venv.sh)
#   bench/.fastrtc/hf_cache/  HF hub cache seeded with Silero VAD v4 ONNX, laid out exactly like
#                             shared/baselines/fastrtc/setup_vad_cache.sh does (fastrtc fetches
#                             freddyaboulton/silero-vad/silero_vad.onnx from the Hub at run time).
# The shared scripts write beside themselves, and shared/ is read-only, hence this copy of the steps.
# Idempotent: re-running only redoes what is missing.
#   bash bench/setup_fastrtc.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.fastrtc"
VENV="$ROOT/venv"
CACHE="$ROOT/hf_cache"
DL="$ROOT/dl"
PY="$VENV/bin/python"
BASE_PY="${BASE_PY:-python3.11}"
command -v "$BASE_PY" >/dev/null || BASE_PY=python3
mkdir -p "$ROOT" "$DL"

[ -x "$PY" ] || "$BASE_PY" -m venv "$VENV"
STAMP="$VENV/.agentkit_bench_ready"
if [ ! -f "$STAMP" ]; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "fastrtc==0.0.34" "fastrtc[vad]==0.0.34" twilio websockets numpy
  "$PY" -c "import fastrtc, websockets, numpy, twilio" && touch "$STAMP"
fi
echo "fastrtc: $("$PY" -c 'import importlib.metadata as m; print(m.version("fastrtc"))')"

if [ ! -f "$DL/silero_vad.onnx" ]; then
  "$PY" -m pip download -q --no-deps faster-whisper==1.0.2 -d "$DL" >/dev/null
  unzip -o -j "$DL"/faster_whisper-1.0.2-*.whl faster_whisper/assets/silero_vad.onnx -d "$DL" >/dev/null
fi
echo "silero_vad.onnx sha256: $(sha256sum "$DL/silero_vad.onnx" | cut -d' ' -f1)"
REPO="$CACHE/models--freddyaboulton--silero-vad"
REV=0000000000000000000000000000000000000000 # placeholder commit id, as in setup_vad_cache.sh
mkdir -p "$REPO/refs" "$REPO/snapshots/$REV"
printf '%s' "$REV" >"$REPO/refs/main"
cmp -s "$DL/silero_vad.onnx" "$REPO/snapshots/$REV/silero_vad.onnx" ||
  cp "$DL/silero_vad.onnx" "$REPO/snapshots/$REV/silero_vad.onnx"
echo "seeded $REPO"
echo "ready: python bench/run_bench.py --frameworks fastrtc --runs 3"
