# Reads a name from stdin and greets it.
name = ($stdin.gets || "").strip
name = "world" if name.empty?
puts "hello, #{name}, from a CodeBeaker box"
