import sys
name = sys.stdin.readline().strip() or "world"
print(f"hello, {name}, from a CodeBeaker box")
