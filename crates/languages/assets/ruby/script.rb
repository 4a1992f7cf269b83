# CodeBeaker launcher for Ruby programs (script mode). The program is program.rb next to this file;
# it runs at the top level as if it were this file's name in the working directory (`ruby main.rb`
# run in the workspace): `require_relative`, `__FILE__`, `__dir__` and `$0` name the working
# directory, never the directory the launcher lives in. A program that does not compile is reported
# on descriptor 4 (`syntax`), which is closed before the program starts. The launcher is a method
# of an anonymous class, so it leaves no name (local, method or constant) at the top level.
exit(Class.new do
  def self.run
    name = File.basename(__FILE__)
    path = File.join(Dir.pwd, name)
    code = File.read(File.join(__dir__, "program.rb"), encoding: "UTF-8")
    verdict = begin
      IO.new(4, "wb")
    rescue StandardError
      nil
    end
    begin
      RubyVM::InstructionSequence.compile(code, path, path, 1)
    rescue SyntaxError => e
      $stderr.puts e.message
      verdict&.write("syntax")
      verdict&.close
      return 1
    end
    verdict&.close
    $0 = name
    launcher = __FILE__
    begin
      TOPLEVEL_BINDING.eval(code, path, 1)
    rescue SystemExit
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException
      $stdout.flush
      message = e.full_message(highlight: false, order: :top)
      lines = message.lines.reject { |line| line.start_with?("\tfrom") && line.include?(launcher) }
      $stderr.write(lines.join)
      return 1
    end
    0
  end
end.run)
