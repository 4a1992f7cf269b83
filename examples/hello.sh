# Reads a name from stdin and greets it.
read -r name || true
echo "hello, ${name:-world}, from a CodeBeaker box"
