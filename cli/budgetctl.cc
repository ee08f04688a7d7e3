// budgetctl: the operator's command line for budgetd, speaking io.budgetd.Admin over the
// daemon's varlink socket. The logic lives in budgetctl_args.cc, where tests reach it.
#include <iostream>
#include <string>
#include <vector>

#include "cli/budgetctl_args.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return budgetd::cli::run(args, std::cout, std::cerr);
}
