// Reads a name from stdin and greets it.
#include <iostream>
#include <string>

int main() {
    std::string name;
    std::getline(std::cin, name);
    if (name.empty()) name = "world";
    std::cout << "hello, " << name << ", from a CodeBeaker box\n";
}
