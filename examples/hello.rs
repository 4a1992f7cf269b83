// Reads a name from stdin and greets it.
fn main() {
    let mut name = String::new();
    std::io::stdin().read_line(&mut name).ok();
    let name = match name.trim() {
        "" => "world",
        n => n,
    };
    println!("hello, {name}, from a CodeBeaker box");
}
