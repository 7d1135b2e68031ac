#!/usr/bin/env bash
# Shell use: a camera's frames coded once; machines read the base layer, people the full file.
# Rerunnable: every output is replaced (--force), and all of them go to demo/ (ignored by git).
set -euo pipefail
in=$(cd "${1:-examples}" && pwd)   # a folder of PNG images
mkdir -p demo/coded demo/machine demo/seen && cd demo
fcodec encode "$in"/*.png -o coded/ --quality 3 --force          # batch, progress bar + summary
fcodec info coded/*.fcb | head -n 12
for f in coded/*.fcb; do fcodec strip "$f" -o "machine/$(basename "$f")" --force; done
fcodec decode machine/*.fcb -o seen/ --layer machine --force
first=$(ls "$in"/*.png | head -n 1)
cat "$first" | fcodec encode - -o - | fcodec decode - --layer human -o - > seen/people.png
