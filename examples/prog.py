# The program of the README's batch example: each item's `input` arrives as `input_data`, and
# the value left in `result` is that item's output.
# codebeaker batch --lang python --code examples/prog.py --items examples/items.jsonl -j 8
words = input_data["text"].split()
result = {"words": len(words), "longest": max(words, key=len) if words else None}
