// budgetd: cgroups for LLM agents. The command line; everything else is the Manager's.
#include <fmt/core.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <string_view>

#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/journal.h"

#ifndef BUDGETD_VERSION
#define BUDGETD_VERSION "0.0.0"
#endif

namespace {

constexpr std::string_view kDefaultConfigPath = "/etc/budgetd/budgetd.toml";

void usage(std::FILE* to) {
  fmt::print(
      to,
      "Usage: budgetd [--config FILE] [--socket PATH] [--state-dir DIR] [--check-config FILE]\n"
      "               [--version] [--help]\n"
      "\n"
      "cgroups for LLM agents: per-process budgets for LLM calls, tools, tokens, money and\n"
      "time, served over a varlink Unix socket.\n"
      "\n"
      "  --config FILE        read the configuration from FILE (default: {},\n"
      "                       if it exists; else the built-in defaults)\n"
      "  --socket PATH        listen on PATH, whatever the configuration says\n"
      "  --state-dir DIR      keep the durable state (budgetd.db) in DIR, whatever the\n"
      "                       configuration says\n"
      "  --check-config FILE  check FILE, print each problem as FILE:LINE:COLUMN: message,\n"
      "                       exit 1 if there is any, else print \"FILE: ok\"\n"
      "  --version            print the version\n"
      "  --help               print this help\n"
      "\n"
      "Logging goes to the journal, or to stderr when it is a terminal; BUDGETD_LOG=journal\n"
      "or BUDGETD_LOG=stderr chooses. SIGHUP reloads the configuration; SIGTERM stops.\n",
      kDefaultConfigPath);
}

// "--name VALUE" or "--name=VALUE". Returns true and advances i when argv[i] is --name.
bool take_value(int argc, char** argv, int& i, std::string_view name, std::string& out,
                bool& missing) {
  std::string_view a = argv[i];
  if (a == name) {
    if (i + 1 >= argc) {
      missing = true;
      return true;
    }
    out = argv[++i];
    return true;
  }
  if (a.size() > name.size() && a.starts_with(name) && a[name.size()] == '=') {
    out = std::string(a.substr(name.size() + 1));
    return true;
  }
  return false;
}

int check_config(const std::string& path) {
  budgetd::ResourceRegistry resources;
  auto config = budgetd::daemon::load_config(path, resources);
  if (!config) {
    for (const auto& e : config.error()) fmt::print(stderr, "{}\n", e.to_string());
    return 1;
  }
  fmt::print("{}: ok\n", path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace budgetd::daemon;
  Options options;
  std::string check;
  bool have_check = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    bool missing = false;
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (a == "--version") {
      fmt::print("budgetd {}\n", BUDGETD_VERSION);
      return 0;
    }
    if (take_value(argc, argv, i, "--config", options.config_path, missing) ||
        take_value(argc, argv, i, "--socket", options.socket_override, missing) ||
        take_value(argc, argv, i, "--state-dir", options.state_dir_override, missing)) {
    } else if (take_value(argc, argv, i, "--check-config", check, missing)) {
      have_check = true;
    } else {
      fmt::print(stderr, "budgetd: unknown argument '{}'\n", a);
      usage(stderr);
      return 2;
    }
    if (missing) {
      fmt::print(stderr, "budgetd: {} needs a value\n", a);
      return 2;
    }
  }
  if (have_check) return check_config(check);

  if (options.config_path.empty() && access(std::string(kDefaultConfigPath).c_str(), F_OK) == 0)
    options.config_path = kDefaultConfigPath;

  init_logging(choose_log_target(), LogLevel::info);
  budgetd::ResourceRegistry resources;
  Config config;
  if (!options.config_path.empty()) {
    auto loaded = load_config(options.config_path, resources);
    if (!loaded) {
      for (const auto& e : loaded.error()) log_error("config: {}", e.to_string());
      log_error("{} error(s) in {}; not starting", loaded.error().size(), options.config_path);
      return 1;
    }
    config = std::move(*loaded);
  }
  Manager manager(std::move(config), std::move(resources), std::move(options));
  // Recovery before listening: a client never sees a half-restored state, and a store that
  // cannot be used stops the start here with its reason.
  if (auto r = manager.open_store(); !r) {
    log_error("{}; not starting", r.error());
    return 1;
  }
  return manager.run();
}
