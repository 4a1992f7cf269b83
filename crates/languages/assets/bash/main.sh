# CodeBeaker snippet runner for Bash. The user's code is in snippet.sh next to this file and is
# sourced into this shell: `input_data` holds the input JSON text, and `result` must be set to JSON
# text.
IFS= read -r -d '' input_data <&3
exec 3<&-
unset result
. "${BASH_SOURCE[0]%/*}/snippet.sh"
if [ -z "${result+set}" ]; then
  echo 'snippet did not set `result`' >&2
  exit 1
fi
printf '%s' "$result" >&4
exec 4>&-
exit 0
