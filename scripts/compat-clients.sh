#!/usr/bin/env bash
# Installs the pinned client SDKs that the compatibility tests drive against `codebeaker serve`:
# E2B's Python SDK and the Piston client ultra-piston in a virtualenv at target/compat/venv, and
# E2B's JavaScript SDK in target/compat/js. Quick when they are already there (the pins are checked, nothing is fetched).
set -euo pipefail
cd "$(dirname "$0")/.."

E2B_PY=2.63.0
ULTRA_PISTON=1.0.1
E2B_JS=2.51.0

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
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('e2b') != '$E2B_PY')" 2>/dev/null; then
  echo "installing e2b==$E2B_PY (Python) into $venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "e2b==$E2B_PY"
fi
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('ultra-piston') != '$ULTRA_PISTON')" 2>/dev/null; then
  echo "installing ultra-piston==$ULTRA_PISTON (Python) into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "ultra-piston==$ULTRA_PISTON"
fi

if ! [[ -f $js/node_modules/e2b/package.json ]] ||
  ! grep -q "\"version\": \"$E2B_JS\"" "$js/node_modules/e2b/package.json"; then
  echo "installing e2b@$E2B_JS (JavaScript) into $js"
  mkdir -p "$js"
  [[ -f $js/package.json ]] || echo '{"name":"codebeaker-compat","private":true}' >"$js/package.json"
  npm install --prefix "$js" --silent --no-audit --no-fund "e2b@$E2B_JS"
fi
