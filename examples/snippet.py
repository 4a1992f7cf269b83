# A snippet: `input_data` holds the input JSON; the value left in `result` is the output.
# codebeaker run examples/snippet.py --input '{"value": 21}'
result = {"output": input_data["value"] * 2}
