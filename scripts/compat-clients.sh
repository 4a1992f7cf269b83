#!/usr/bin/env bash
# Installs the pinned client SDKs that the compatibility tests drive against `codebeaker serve`:
# the Python clients (E2B's SDK and its code interpreter SDK, Judge0's SDK, and the Piston client
# ultra-piston) of scripts/compat/requirements.txt in a virtualenv at target/compat/venv, and the
# JavaScript ones (E2B's SDK) of scripts/compat/package.json (with its lock file) in
# target/compat/js.
# Every dependency is pinned, so a run installs exactly what was tested. Quick when they are
# already there: each side keeps a copy of the files it was installed from and is installed
# again only when they changed.
set -euo pipefail
cd "$(dirname "$0")/.."

pins=scripts/compat
root=target/compat
venv=$root/venv
js=$root/js
mkdir -p "$root"

# Debian's interpreter (it starts fast), with venv, and npm: installed when missing.
python=/usr/bin/python3
missing=()
"$python" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! cmp -s "$pins/requirements.txt" "$venv/installed-requirements.txt"; then
  echo "installing the Python clients of $pins/requirements.txt into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$pins/requirements.txt"
  "$venv/bin/python" -m pip check --disable-pip-version-check
  cp "$pins/requirements.txt" "$venv/installed-requirements.txt"
fi

if ! cmp -s "$pins/package-lock.json" "$js/package-lock.json" ||
  ! cmp -s "$pins/package.json" "$js/package.json" || ! [[ -d $js/node_modules ]]; then
  echo "installing the JavaScript clients of $pins/package.json into $js"
  rm -rf "$js"
  mkdir -p "$js"
  cp "$pins/package.json" "$pins/package-lock.json" "$js/"
  npm ci --prefix "$js" --silent --no-audit --no-fund
fi
