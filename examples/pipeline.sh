#!/usr/bin/env bash
# Shell use: a camera's frames coded once; machines read the base layer, people the full file.
set -euo pipefail
in=${1:-../shared/data/kodak}
mkdir -p coded seen
fcodec encode "$in"/*.png -o coded/ --quality 3          # batch, progress bar + summary
fcodec info coded/*.fcb | head -n 12
for f in coded/*.fcb; do fcodec strip "$f" -o "${f%.fcb}.machine.fcb" --force; done
fcodec decode coded/*.machine.fcb -o seen/ --layer machine --force
cat "$in/kodim23.png" | fcodec encode - -o - | fcodec decode - --layer human -o - > seen/kodim23-people.png
