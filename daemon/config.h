// budgetd's configuration, read from TOML (conf/budgetd.toml documents every key).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lib/engine.h"
#include "lib/error.h"
#include "lib/ratelimit.h"

namespace budgetd::daemon {

struct SocketConfig {
  std::string path;            // "" = the default for the user (see default_socket_path)
  uint32_t mode = 0660;        // file mode of the socket
  std::string group;           // group owning the socket ("" = the daemon's)
  std::string operator_group;  // members may call everything, like root ("" = root only)
};

struct Bounds {
  std::size_t max_connections = 4096;
  std::size_t max_connections_per_uid = 1024;
  std::size_t max_message_bytes = 1 << 20;
  std::size_t max_json_depth = 64;
  // Unanswered reply bytes per connection above which the daemon stops reading it.
  std::size_t max_pending_reply_bytes = 4 << 20;
  std::size_t max_processes = 1'000'000;
  std::size_t max_threads = 1'000'000;
  std::size_t max_holds = 1'000'000;
  std::size_t max_watchers = 1024;
};

// A scope node declared in config: path, plan/tier, reset period and limits.
struct ScopeConfig {
  std::string path;
  ScopeUpdate update;
};

struct RateLimitsConfig {
  RateLimitConfig default_config;
  std::map<std::string, RateLimitConfig> users;
  std::map<std::string, RateLimitConfig> endpoints;
};

struct Config {
  SocketConfig socket;
  Bounds bounds;
  EngineConfig engine;  // default quota, thread default, thresholds, ttls, bounds copied in
  std::vector<LimitTemplate> templates;  // plans and tiers beyond (or replacing) the shipped ones
  std::vector<ScopeConfig> scopes;
  RateLimitsConfig rate_limits;
  std::string state_dir;                 // for the store (durable-state issue)
  uint64_t status_interval_ms = 1000;    // STATUS= refresh
  std::string log_level = "info";
};

// One problem in a config file, with its place.
struct ConfigError {
  std::string file;
  uint32_t line = 0;
  uint32_t column = 0;
  std::string message;
  std::string to_string() const;  // "FILE:LINE:COLUMN: MESSAGE"
};

// Parses a whole file, collecting every error it can find (not only the first). Custom
// resource names are interned in `resources` as they are met.
std::expected<Config, std::vector<ConfigError>> load_config(const std::string& path, ResourceRegistry& resources);
std::expected<Config, std::vector<ConfigError>> parse_config(std::string_view text, const std::string& source_name,
                                                            ResourceRegistry& resources);

// /run/budgetd/io.budgetd as root; $XDG_RUNTIME_DIR/budgetd/io.budgetd otherwise; else
// ./run/io.budgetd.
std::string default_socket_path();

}  // namespace budgetd::daemon
