# CodeBeaker snippet runner for Ruby. The user's code is in snippet.rb next to this file and runs in
# a fresh binding whose only local variable is `input_data`.
require "json"

def __cb_snippet_binding(input_data)
  binding
end

def __cb_main
  input = IO.new(3, "rb")
  raw = input.read
  input.close
  begin
    input_data = raw.strip.empty? ? nil : JSON.parse(raw)
  rescue JSON::ParserError => e
    $stderr.puts "codebeaker: the snippet input is not valid JSON: #{e.message}"
    return 1
  end
  output = IO.new(4, "wb")
  output.close_on_exec = true
  code = File.read(File.join(__dir__, "snippet.rb"), encoding: "UTF-8")
  scope = __cb_snippet_binding(input_data)
  begin
    scope.eval(code, "snippet.rb", 1)
  rescue SystemExit
    raise
  rescue Exception => e # rubocop:disable Lint/RescueException
    $stdout.flush
    if e.is_a?(SyntaxError)
      $stderr.puts e.message
    else
      message = e.full_message(highlight: false, order: :top)
      lines = message.lines.reject { |line| line.start_with?("\tfrom") && line.include?(__FILE__) }
      $stderr.write(lines.join.gsub("`__cb_snippet_binding'", "<snippet>"))
    end
    return 1
  end
  unless scope.local_variable_defined?(:result)
    $stderr.puts "snippet did not set `result`"
    return 1
  end
  begin
    text = JSON.generate(scope.local_variable_get(:result))
  rescue StandardError => e
    $stderr.puts "codebeaker: `result` is not JSON-serializable: #{e.message}"
    return 1
  end
  output.write(text)
  output.close
  0
end

exit(__cb_main)
