/* Reads a name from stdin and greets it. */
#include <stdio.h>
#include <string.h>

int main(void) {
    char name[256] = "";
    if (!fgets(name, sizeof name, stdin) || name[0] == '\n') strcpy(name, "world\n");
    name[strcspn(name, "\n")] = '\0';
    printf("hello, %s, from a CodeBeaker box\n", name);
    return 0;
}
