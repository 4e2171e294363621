#!/usr/bin/env bash
# Fails when git tracks build output: a compiled executable (ELF, Mach-O,
# PE), any executable file that is not text (a script), or a file over
# 1 MiB. `make test` runs it, so a committed binary cannot land again.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=$((1024 * 1024))
bad=0
while IFS= read -r -d '' entry; do
  mode=${entry%% *}
  path=${entry#*$'\t'}
  [[ -f $path ]] || continue
  size=$(stat -c %s -- "$path")
  if ((size > limit)); then
    echo "tracked file over 1 MiB: $path ($size bytes)" >&2
    bad=1
  fi
  magic=$(head -c 4 -- "$path" | od -An -tx1 | tr -d ' \n')
  case $magic in
    7f454c46 | feedface | feedfacf | cefaedfe | cffaedfe | cafebabe | 4d5a*)
      echo "tracked executable binary: $path" >&2
      bad=1
      continue
      ;;
  esac
  if [[ $mode == 100755 ]] && grep -qP '\x00' -- "$path" 2>/dev/null; then
    echo "tracked executable that is not text: $path" >&2
    bad=1
  fi
done < <(git ls-files -s -z | sed -z 's/^\([0-9]*\) [0-9a-f]* [0-9]*\t/\1 x\t/')
exit $bad
