#!/usr/bin/env bash
# Shell use: a camera's frames coded once; machines read the base layer, people the full file.
set -euo pipefail
in=$(cd "${1:-examples}" && pwd)   # a folder of PNG images
mkdir -p demo/coded demo/seen && cd demo   # outputs in demo/ (ignored by git)
fcodec encode "$in"/*.png -o coded/ --quality 3          # batch, progress bar + summary
fcodec info coded/*.fcb | head -n 12
for f in coded/*.fcb; do fcodec strip "$f" -o "${f%.fcb}.machine.fcb" --force; done
fcodec decode coded/*.machine.fcb -o seen/ --layer machine --force
first=$(ls "$in"/*.png | head -n 1)
cat "$first" | fcodec encode - -o - | fcodec decode - --layer human -o - > seen/people.png
