// budgetd's configuration, read from TOML (conf/budgetd.toml documents every key).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/engine.h"
#include "lib/error.h"
#include "lib/pricing.h"
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

// The [store] table. Its state_dir is Config::state_dir (which predates the table).
struct StoreConfig {
  // When a change the store must keep is on disk, relative to the answer (issue 5,
  // section 1). Nested so that it does not collide with the store's own enum of the same
  // values (daemon/store.h), which the daemon fills from this one.
  enum class Durability : uint8_t {
    ack,    // the answer waits until the change's batch is on disk (fsync'd)
    batch,  // answered at once; on disk within batch_window_ms
    none,   // memory only: nothing survives a restart
  };
  Durability durability = Durability::ack;
  uint32_t batch_window_ms = 10;  // 1..1000: how long a change may wait unwritten in "batch"
  // Ledger records older than this fold into per-day aggregates (summaries keep them).
  uint32_t retention_days = 90;  // 1..36500
  // How long a retried idempotency key returns its first answer.
  uint32_t idempotency_retention_hours = 24;  // 1..87600 (ten years)
  // A cap on the database file, in MiB (0: none). Past it, writes fail as on a full disk:
  // durable calls answer io.budgetd.StorageFailed and reads keep working.
  uint64_t max_size_mb = 0;
  friend bool operator==(const StoreConfig&, const StoreConfig&) = default;
};
std::string_view durability_name(StoreConfig::Durability d);
std::optional<StoreConfig::Durability> parse_durability(std::string_view s);

struct Config {
  SocketConfig socket;
  Bounds bounds;
  EngineConfig engine;  // default quota, thread default, thresholds, ttls, bounds copied in
  std::vector<LimitTemplate> templates;  // plans and tiers beyond (or replacing) the shipped ones
  std::vector<ScopeConfig> scopes;
  RateLimitsConfig rate_limits;
  // [store] state_dir (also read at the top level, where it was first). "" = the daemon
  // chooses default_state_dir(); `budgetd --state-dir DIR` overrides both.
  std::string state_dir;
  StoreConfig store;
  // Seed 004 / seed 001 defaults with [pricing] laid over them: a resource or action named
  // there replaces (or adds) that one price; models come only from [pricing.models].
  PriceTable prices = PriceTable::defaults();
  uint64_t status_interval_ms = 1000;  // STATUS= refresh
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
std::expected<Config, std::vector<ConfigError>> load_config(const std::string& path,
                                                            ResourceRegistry& resources);
std::expected<Config, std::vector<ConfigError>> parse_config(std::string_view text,
                                                             const std::string& source_name,
                                                             ResourceRegistry& resources);

// /run/budgetd/io.budgetd as root; $XDG_RUNTIME_DIR/budgetd/io.budgetd otherwise; else
// ./run/io.budgetd.
std::string default_socket_path();

// $STATE_DIRECTORY when set (systemd's StateDirectory=; the first of a ':'-separated list);
// else /var/lib/budgetd as root; else $XDG_STATE_HOME/budgetd (when absolute), else
// $HOME/.local/state/budgetd; else ./state.
std::string default_state_dir();

}  // namespace budgetd::daemon
