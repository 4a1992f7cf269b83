#!/usr/bin/env bash
# Installs the pinned client SDKs that the compatibility tests drive against `codebeaker serve`:
# E2B's Python SDK and its code interpreter SDK in a virtualenv at target/compat/venv and its JavaScript SDK in
# target/compat/js. Quick when they are already there (the pins are checked, nothing is fetched).
set -euo pipefail
cd "$(dirname "$0")/.."

E2B_PY=2.63.0
E2B_JS=2.51.0
# The code interpreter's Python SDK: the newest release that takes e2b 2.63.0 (it asks >=2.55.1,<3).
E2B_CI_PY=2.11.5

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
pinned() { # pinned <distribution> <version>: whether the venv has exactly that version
  "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null
}
if ! pinned e2b "$E2B_PY" || ! pinned e2b-code-interpreter "$E2B_CI_PY"; then
  echo "installing e2b==$E2B_PY and e2b-code-interpreter==$E2B_CI_PY (Python) into $venv"
  [[ -x $venv/bin/pip ]] || "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "e2b==$E2B_PY" "e2b-code-interpreter==$E2B_CI_PY"
fi

if ! [[ -f $js/node_modules/e2b/package.json ]] ||
  ! grep -q "\"version\": \"$E2B_JS\"" "$js/node_modules/e2b/package.json"; then
  echo "installing e2b@$E2B_JS (JavaScript) into $js"
  mkdir -p "$js"
  [[ -f $js/package.json ]] || echo '{"name":"codebeaker-compat","private":true}' >"$js/package.json"
  npm install --prefix "$js" --silent --no-audit --no-fund "e2b@$E2B_JS"
fi
