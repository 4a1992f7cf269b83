// Reads a name from stdin and greets it.
import java.util.Scanner;

public class Hello {
    public static void main(String[] args) {
        Scanner in = new Scanner(System.in);
        String name = in.hasNextLine() ? in.nextLine().trim() : "";
        System.out.println("hello, " + (name.isEmpty() ? "world" : name) + ", from a CodeBeaker box");
    }
}
