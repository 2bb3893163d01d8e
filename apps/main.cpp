// main.cpp: the `qatlab` command (placeholder until the subcommands land).
int main() { return 0; }
