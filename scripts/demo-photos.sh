#!/usr/bin/env bash
# The pretrained path of `make demo` (docs/your-own-photos.md), on the bundled ORL sample:
# known/ (one photo of each of 6 people), unknown/ (another photo of each, and 3 people
# never enrolled), strangers/ (12 other people, to calibrate the threshold). No training:
# dlib's pretrained face encoder, dlib's CNN face detector, an SQLite gallery.
set -euo pipefail
CONVGEN=${CONVGEN:-convgen}
ORL=plugins/faces/src/convgen_faces/samples/orl
OUT=${1:-runs/demo/photos}
rm -rf "$OUT"  # the demo's own folder: made anew on every run
mkdir -p "$OUT/known" "$OUT/unknown" "$OUT/strangers"
for i in 1 2 3 4 5 6; do
  mkdir -p "$OUT/known/s$i"; cp "$ORL/s$i/1.png" "$OUT/known/s$i/"; cp "$ORL/s$i/4.png" "$OUT/unknown/s${i}_4.png"
done
for i in 33 36 39; do cp "$ORL/s$i/1.png" "$OUT/unknown/new_s$i.png"; done
for i in $(seq 11 22); do mkdir -p "$OUT/strangers/s$i"; cp "$ORL/s$i/1.png" "$ORL/s$i/2.png" "$OUT/strangers/s$i/"; done
"$CONVGEN" run faces-enrol gallery="$OUT/people.db" folder="$OUT/known" -o "$OUT/enrol"
"$CONVGEN" run faces-calibrate gallery="$OUT/people.db" folder="$OUT/strangers" fpir=0.05 -o "$OUT/calibrate"
"$CONVGEN" gallery identify "$OUT/people.db" "$OUT/unknown" -o "$OUT/answers"
