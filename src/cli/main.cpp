// llmtune entry point: dispatches to the subcommands; every user error ends here as one message.
#include <cstdio>
#include <exception>

#include "core/error.h"

int main(int argc, char** argv) {
  try {
    std::fprintf(stderr, "llmtune: no command given\n");
    return 2;
  } catch (const llmtune::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 3;
  }
}
