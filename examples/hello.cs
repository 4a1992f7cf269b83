// Reads a name from stdin and greets it.
using System;

class Hello
{
    static void Main()
    {
        var name = (Console.In.ReadLine() ?? "").Trim();
        Console.WriteLine($"hello, {(name == "" ? "world" : name)}, from a CodeBeaker box");
    }
}
