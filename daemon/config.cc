// Reads budgetd.toml into a Config. Every value is checked where it is read, and every
// problem becomes a ConfigError with the file, line and column of the offending key or
// value; parsing goes on after an error so that one run reports them all. Only a TOML
// syntax error stops early: toml++ cannot go on past one, so that file gets one error.
//
// Nothing here logs: errors are values, and the caller (--check-config, startup, reload)
// decides how to show them.
#include "daemon/config.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/un.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>
#include <span>
#include <string_view>

#include "lib/calendar.h"
#include "lib/plans.h"

namespace budgetd::daemon {

namespace {

// The operator's file is trusted, but a wrong path (a log, a disk image) should fail fast
// instead of being read into memory whole.
constexpr std::size_t kMaxConfigBytes = 16 << 20;
// The engine keeps one "fired" bit per threshold in a byte, and uses at most six.
constexpr std::size_t kMaxThresholds = 6;
// Longest TTL or interval in seconds: ten years. Far beyond any use, far below the point
// where microseconds overflow int64.
constexpr int64_t kMaxSeconds = 10LL * 365 * 24 * 3600;
// sun_path holds 108 bytes including the terminating NUL.
constexpr std::size_t kMaxSocketPathBytes = sizeof(sockaddr_un::sun_path) - 1;

constexpr std::array<std::string_view, 16> kTopLevelKeys = {
    "socket",       "bounds",   "quota",   "threads",   "alerts",
    "reservations", "approval", "plans",   "tiers",     "scope",
    "rate_limits",  "store",    "pricing", "state_dir", "status_interval_ms",
    "log_level"};
constexpr std::array<std::string_view, 4> kSocketKeys = {"path", "mode", "group", "operator_group"};
constexpr std::array<std::string_view, 1> kThreadsKeys = {"max_tokens_per_thread"};
constexpr std::array<std::string_view, 1> kAlertsKeys = {"thresholds"};
constexpr std::array<std::string_view, 3> kReservationsKeys = {
    "default_ttl_seconds", "max_ttl_seconds", "expired_id_retention_seconds"};
constexpr std::array<std::string_view, 1> kApprovalKeys = {"pending_ttl_seconds"};
constexpr std::array<std::string_view, 4> kTemplateKeys = {"reset", "limits", "soft", "approval"};
constexpr std::array<std::string_view, 7> kScopeKeys = {"path",   "plan", "tier",    "reset",
                                                        "limits", "soft", "approval"};
constexpr std::array<std::string_view, 3> kRateLimitsKeys = {"default", "users", "endpoints"};
constexpr std::array<std::string_view, 4> kRateLimitKeys = {
    "requests_per_minute", "requests_per_hour", "requests_per_day", "burst"};
constexpr std::array<std::string_view, 6> kStoreKeys = {
    "state_dir", "durability", "batch_window_ms", "retention_days", "idempotency_retention_hours",
    "max_size_mb"};
constexpr std::array<std::string_view, 3> kDurabilityNames = {"ack", "batch", "none"};
constexpr std::array<std::string_view, 3> kPricingKeys = {"resources", "models", "actions"};
constexpr std::array<std::string_view, 3> kResourcePriceKeys = {"unit", "unit_size", "unit_cost"};
constexpr std::array<std::string_view, 2> kModelPriceKeys = {"input_per_1k", "output_per_1k"};
// Store windows: a batch window past a second defeats the point of "batch" (the answer says
// the data is as good as kept); retention up to a century, idempotency up to ten years
// (kMaxSeconds), both far from overflowing a microsecond clock.
constexpr int64_t kMaxBatchWindowMs = 1000;
constexpr int64_t kMaxRetentionDays = 36500;
constexpr int64_t kMaxIdempotencyHours = kMaxSeconds / 3600;
constexpr int64_t kMaxStoreSizeMb = int64_t{1} << 30;  // a petabyte: "no cap" is 0
// spdlog's level names, which the daemon passes to spdlog::level::from_str.
constexpr std::array<std::string_view, 7> kLogLevels = {"trace", "debug",    "info", "warn",
                                                        "error", "critical", "off"};

struct BoundField {
  std::string_view name;
  std::size_t Bounds::*member;
};
constexpr std::array<BoundField, 9> kBoundFields = {{
    {"max_connections", &Bounds::max_connections},
    {"max_connections_per_uid", &Bounds::max_connections_per_uid},
    {"max_message_bytes", &Bounds::max_message_bytes},
    {"max_json_depth", &Bounds::max_json_depth},
    {"max_pending_reply_bytes", &Bounds::max_pending_reply_bytes},
    {"max_processes", &Bounds::max_processes},
    {"max_threads", &Bounds::max_threads},
    {"max_holds", &Bounds::max_holds},
    {"max_watchers", &Bounds::max_watchers},
}};

struct RateField {
  std::string_view name;
  uint64_t RateLimitConfig::*member;
};
constexpr std::array<RateField, 4> kRateFields = {{
    {"requests_per_minute", &RateLimitConfig::requests_per_minute},
    {"requests_per_hour", &RateLimitConfig::requests_per_hour},
    {"requests_per_day", &RateLimitConfig::requests_per_day},
    {"burst", &RateLimitConfig::burst},
}};

std::string_view type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The known key closest to a typo, if it is close enough to be what was meant.
std::optional<std::string_view> closest(std::string_view key,
                                        std::span<const std::string_view> known) {
  std::optional<std::string_view> best;
  std::size_t best_distance = 3;  // at most two edits
  for (auto k : known) {
    std::size_t d = edit_distance(key, k);
    if (d < best_distance && d < std::max<std::size_t>(k.size(), 2) / 2 + 1) {
      best = k;
      best_distance = d;
    }
  }
  return best;
}

std::string join(std::string_view prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : fmt::format("{}.{}", prefix, key);
}

// "a, b or c"
std::string one_of(std::span<const std::string_view> names) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? " or " : ", ";
    out += names[i];
  }
  return out;
}

std::string malformed_decimal(std::string_view text, bool unlimited_allowed = true) {
  return fmt::format(
      "malformed decimal \"{}\" (expected digits with an optional fraction of at most {} digits, "
      "such as \"12.50\"{})",
      text, Decimal::kScale, unlimited_allowed ? ", or \"unlimited\"" : "");
}

// The count a unit label starts with: 1000 for "1000 tokens"; none for "GB" or "count".
std::optional<Decimal> leading_number(std::string_view unit) {
  auto space = unit.find(' ');
  if (space == std::string_view::npos || space == 0) return std::nullopt;
  auto d = Decimal::parse(unit.substr(0, space));
  if (!d) return std::nullopt;
  return *d;
}

constexpr std::array<std::string_view, 5> kResetNames = {"never", "hourly", "daily", "weekly",
                                                         "monthly"};
constexpr std::array<std::string_view, 3> kActionNames = {"none", "terminate", "pause"};

class Parser {
 public:
  Parser(const std::string& file, ResourceRegistry& resources)
      : file_(file), resources_(resources) {}

  Config parse(const toml::table& root);
  std::vector<ConfigError> take_errors() { return std::move(errors_); }

 private:
  void error(const toml::source_region& at, std::string message) {
    errors_.push_back(ConfigError{file_, at.begin.line, at.begin.column, std::move(message)});
  }
  void error(const toml::node& at, std::string_view path, std::string_view problem) {
    error(at.source(), fmt::format("{}: {}", path, problem));
  }
  void type_error(const toml::node& at, std::string_view path, std::string_view expected) {
    error(at, path, fmt::format("expected {}, got {}", expected, type_name(at)));
  }

  void check_keys(const toml::table& t, std::string_view path,
                  std::span<const std::string_view> known);
  const toml::table* table(const toml::node& n, std::string_view path);
  std::optional<std::string> string(const toml::node& n, std::string_view path);
  std::optional<int64_t> integer(const toml::node& n, std::string_view path, int64_t min,
                                 int64_t max);
  std::optional<uint64_t> count(const toml::node& n, std::string_view path);
  std::optional<Duration> seconds(const toml::node& n, std::string_view path);
  std::optional<Decimal> amount(const toml::node& n, std::string_view path, bool whole);
  std::optional<ResetPeriod> reset(const toml::node& n, std::string_view path);
  std::optional<Decimal> price(const toml::node& n, std::string_view path, uint64_t max);

  void parse_socket(const toml::table& t, SocketConfig& out);
  void parse_bounds(const toml::table& t, Bounds& out);
  void parse_quota(const toml::table& t, ResourceQuota& out);
  void parse_threads(const toml::table& t, EngineConfig& out);
  void parse_alerts(const toml::table& t, EngineConfig& out);
  void parse_reservations(const toml::table& t, EngineConfig& out);
  void parse_approval(const toml::table& t, EngineConfig& out);
  void parse_templates(const toml::table& t, TemplateKind kind, std::vector<LimitTemplate>& out);
  void parse_limits(const toml::node& n, std::string_view path,
                    std::optional<Decimal> LimitSpec::*which, LimitMap& out);
  void parse_scopes(const toml::node& n, const std::vector<LimitTemplate>& templates,
                    std::vector<ScopeConfig>& out);
  RateLimitConfig parse_rate_limit(const toml::node& n, std::string_view path,
                                   RateLimitConfig base);
  void parse_rate_limits(const toml::table& t, RateLimitsConfig& out);
  void parse_store(const toml::table& t, Config& out);
  void parse_pricing(const toml::table& t, PriceTable& out);
  void parse_resource_price(const toml::node& n, std::string_view name, std::string_view path,
                            PriceTable& out);
  void parse_model_price(const toml::node& n, std::string_view name, std::string_view path,
                         PriceTable& out);

  const std::string& file_;
  ResourceRegistry& resources_;
  std::vector<ConfigError> errors_;
};

void Parser::check_keys(const toml::table& t, std::string_view path,
                        std::span<const std::string_view> known) {
  for (auto&& [key, node] : t) {
    std::string_view k = key.str();
    if (std::find(known.begin(), known.end(), k) != known.end()) continue;
    std::string message = fmt::format("unknown key '{}'", join(path, k));
    if (auto guess = closest(k, known)) message += fmt::format(" (did you mean '{}'?)", *guess);
    error(key.source(), std::move(message));
  }
}

const toml::table* Parser::table(const toml::node& n, std::string_view path) {
  if (const auto* t = n.as_table()) return t;
  type_error(n, path, "a table");
  return nullptr;
}

std::optional<std::string> Parser::string(const toml::node& n, std::string_view path) {
  if (const auto* s = n.as_string()) return s->get();
  type_error(n, path, "a string");
  return std::nullopt;
}

std::optional<int64_t> Parser::integer(const toml::node& n, std::string_view path, int64_t min,
                                       int64_t max) {
  const auto* i = n.as_integer();
  if (!i) {
    type_error(n, path, "an integer");
    return std::nullopt;
  }
  int64_t v = i->get();
  if (v < min || v > max) {
    error(n, path,
          max == INT64_MAX ? fmt::format("must be at least {}, got {}", min, v)
                           : fmt::format("must be between {} and {}, got {}", min, max, v));
    return std::nullopt;
  }
  return v;
}

// A count limit: an integer >= 0, or "unlimited".
std::optional<uint64_t> Parser::count(const toml::node& n, std::string_view path) {
  if (const auto* s = n.as_string()) {
    if (s->get() == "unlimited") return kUnlimited;
    error(n, path, fmt::format("expected a count >= 0 or \"unlimited\", got \"{}\"", s->get()));
    return std::nullopt;
  }
  if (!n.is_integer()) {
    type_error(n, path, "a count >= 0 or \"unlimited\"");
    return std::nullopt;
  }
  auto v = integer(n, path, 0, INT64_MAX);
  if (!v) return std::nullopt;
  return static_cast<uint64_t>(*v);
}

std::optional<Duration> Parser::seconds(const toml::node& n, std::string_view path) {
  auto v = integer(n, path, 1, kMaxSeconds);
  if (!v) return std::nullopt;
  return std::chrono::seconds(*v);
}

// A limit amount: an integer, a decimal string ("1.5") or "unlimited". Floats are refused:
// a binary float cannot hold 0.1 exactly, and limits are compared exactly.
std::optional<Decimal> Parser::amount(const toml::node& n, std::string_view path, bool whole) {
  if (const auto* i = n.as_integer()) {
    if (i->get() < 0) {
      error(n, path, fmt::format("must be >= 0, got {}", i->get()));
      return std::nullopt;
    }
    return Decimal::from_int(static_cast<uint64_t>(i->get()));
  }
  if (n.is_floating_point()) {
    error(n, path,
          "floats are inexact and not accepted for limits; write an integer, a decimal string such "
          "as \"1.5\", or \"unlimited\"");
    return std::nullopt;
  }
  const auto* s = n.as_string();
  if (!s) {
    type_error(n, path, "an integer, a decimal string or \"unlimited\"");
    return std::nullopt;
  }
  if (s->get() == "unlimited") return kUnlimitedAmount;
  auto d = Decimal::parse(s->get());
  if (!d) {
    if (d.error().code == Errc::negative_amount)
      error(n, path, fmt::format("must be >= 0, got \"{}\"", s->get()));
    else
      error(n, path, malformed_decimal(s->get()));
    return std::nullopt;
  }
  if (whole && !d->is_integer()) {
    error(n, path, fmt::format("this resource is counted in whole units, got \"{}\"", s->get()));
    return std::nullopt;
  }
  return *d;
}

std::optional<ResetPeriod> Parser::reset(const toml::node& n, std::string_view path) {
  auto s = string(n, path);
  if (!s) return std::nullopt;
  auto p = parse_reset_period(*s);
  if (!p) {
    error(n, path,
          fmt::format("unknown reset period \"{}\" (expected {})", *s, one_of(kResetNames)));
    return std::nullopt;
  }
  return *p;
}

// A price or rate: an integer or a decimal string, from 0 to `max`. Floats are refused for
// the same reason as in limits: "0.1" as a binary float is not 0.1, and prices are exact.
std::optional<Decimal> Parser::price(const toml::node& n, std::string_view path, uint64_t max) {
  std::optional<Decimal> d;
  if (const auto* i = n.as_integer()) {
    if (i->get() < 0) {
      error(n, path, fmt::format("must be >= 0, got {}", i->get()));
      return std::nullopt;
    }
    d = Decimal::from_int(static_cast<uint64_t>(i->get()));
  } else if (n.is_floating_point()) {
    error(n, path,
          "floats are inexact and not accepted for prices; write an integer or a decimal string "
          "such as \"0.002\"");
    return std::nullopt;
  } else if (const auto* s = n.as_string()) {
    auto parsed = Decimal::parse(s->get());
    if (!parsed) {
      if (parsed.error().code == Errc::negative_amount)
        error(n, path, fmt::format("must be >= 0, got \"{}\"", s->get()));
      else
        error(n, path, malformed_decimal(s->get(), false));
      return std::nullopt;
    }
    d = *parsed;
  } else {
    type_error(n, path, "an integer or a decimal string");
    return std::nullopt;
  }
  if (*d > Decimal::from_int(max)) {
    error(n, path, fmt::format("must be at most {}, got {}", max, d->to_string()));
    return std::nullopt;
  }
  return d;
}

// ---- Sections ---------------------------------------------------------------------------

void Parser::parse_socket(const toml::table& t, SocketConfig& out) {
  check_keys(t, "socket", kSocketKeys);
  if (const auto* n = t.get("path")) {
    if (auto s = string(*n, "socket.path")) {
      if (s->size() > kMaxSocketPathBytes)
        error(*n, "socket.path",
              fmt::format("{} bytes long; a Unix socket path holds at most {}", s->size(),
                          kMaxSocketPathBytes));
      else if (s->find('\0') != std::string::npos)
        error(*n, "socket.path", "contains a NUL byte");
      else
        out.path = *s;
    }
  }
  if (const auto* n = t.get("mode")) {
    // Octal only: a decimal 660 would silently mean 01224.
    std::optional<uint32_t> mode;
    if (const auto* i = n->as_integer()) {
      if ((i->flags() & toml::value_flags::format_as_octal) == toml::value_flags::none)
        error(*n, "socket.mode",
              fmt::format("bad socket mode {}: write it in octal, as 0o660 or \"0660\"", i->get()));
      else if (i->get() < 0 || i->get() > 0777)
        error(*n, "socket.mode",
              fmt::format("bad socket mode 0o{:o}: only permission bits (0o777) apply", i->get()));
      else
        mode = static_cast<uint32_t>(i->get());
    } else if (const auto* s = n->as_string()) {
      const std::string& v = s->get();
      bool octal = !v.empty() && v.size() <= 4 &&
                   std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '7'; });
      uint32_t m = octal ? static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 8)) : 0;
      if (!octal)
        error(*n, "socket.mode",
              fmt::format("bad socket mode \"{}\": expected octal digits, such as \"0660\"", v));
      else if (m > 0777)
        error(*n, "socket.mode",
              fmt::format("bad socket mode \"{}\": only permission bits (0777) apply", v));
      else
        mode = m;
    } else {
      type_error(*n, "socket.mode",
                 "an octal string such as \"0660\" or an octal integer such as 0o660");
    }
    if (mode) out.mode = *mode;
  }
  if (const auto* n = t.get("group"))
    if (auto s = string(*n, "socket.group")) out.group = *s;
  if (const auto* n = t.get("operator_group"))
    if (auto s = string(*n, "socket.operator_group")) out.operator_group = *s;
}

void Parser::parse_bounds(const toml::table& t, Bounds& out) {
  std::vector<std::string_view> names;
  for (const auto& f : kBoundFields) names.push_back(f.name);
  check_keys(t, "bounds", names);
  for (const auto& f : kBoundFields) {
    const auto* n = t.get(f.name);
    if (!n) continue;
    // Zero would refuse everything; a bound is a positive size.
    if (auto v = integer(*n, join("bounds", f.name), 1, INT64_MAX))
      out.*f.member = static_cast<std::size_t>(*v);
  }
}

void Parser::parse_quota(const toml::table& t, ResourceQuota& out) {
  const auto& names = ResourceQuota::field_names();
  check_keys(t, "quota", names);
  for (auto&& [key, node] : t) {
    std::string_view name = key.str();
    if (std::find(names.begin(), names.end(), name) == names.end()) continue;
    std::string path = join("quota", name);
    bool is_action = name == "on_timeout" || name == "on_violation";
    bool is_money = name == "max_cost";
    std::string text;
    if (const auto* s = node.as_string()) {
      text = s->get();
    } else if (const auto* i = node.as_integer(); i && !is_action) {
      text = std::to_string(i->get());
    } else {
      if (is_money && node.is_floating_point())
        error(node, path,
              "floats are inexact and not accepted for money; write a decimal string such as "
              "\"12.50\"");
      else
        type_error(node, path,
                   is_action  ? fmt::format("an action name ({})", one_of(kActionNames))
                   : is_money ? std::string("a decimal string or \"unlimited\"")
                              : std::string("a count >= 0 or \"unlimited\""));
      continue;
    }
    auto r = out.set_field(name, text);
    if (r) continue;
    switch (r.error().code) {
      case Errc::negative_amount:
        error(node, path, fmt::format("must be >= 0, got {}", text));
        break;
      case Errc::malformed_decimal:
        error(node, path, malformed_decimal(text));
        break;
      case Errc::overflow:
        error(node, path, fmt::format("\"{}\" is out of range", text));
        break;
      default:
        if (is_action)
          error(node, path,
                fmt::format("unknown action \"{}\" (expected {})", text, one_of(kActionNames)));
        else
          error(node, path,
                fmt::format("expected a count >= 0 or \"unlimited\", got \"{}\"", text));
    }
  }
}

void Parser::parse_threads(const toml::table& t, EngineConfig& out) {
  check_keys(t, "threads", kThreadsKeys);
  if (const auto* n = t.get("max_tokens_per_thread"))
    if (auto v = count(*n, "threads.max_tokens_per_thread")) out.thread_default_max_tokens = *v;
}

void Parser::parse_alerts(const toml::table& t, EngineConfig& out) {
  check_keys(t, "alerts", kAlertsKeys);
  const auto* n = t.get("thresholds");
  if (!n) return;
  const auto* arr = n->as_array();
  if (!arr) {
    type_error(*n, "alerts.thresholds", "an array of percentages, such as [80, 90]");
    return;
  }
  if (arr->size() > kMaxThresholds) {
    error(*n, "alerts.thresholds",
          fmt::format("at most {} thresholds, got {}", kMaxThresholds, arr->size()));
    return;
  }
  std::vector<uint32_t> values;
  bool ok = true;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const toml::node& el = *arr->get(i);
    std::string path = fmt::format("alerts.thresholds[{}]", i);
    auto v = integer(el, path, 1, 100);
    if (!v) {
      ok = false;
      continue;
    }
    if (std::find(values.begin(), values.end(), static_cast<uint32_t>(*v)) != values.end()) {
      error(el, path, fmt::format("{}% is listed twice", *v));
      ok = false;
      continue;
    }
    values.push_back(static_cast<uint32_t>(*v));
  }
  if (!ok) return;
  std::sort(values.begin(), values.end());
  out.thresholds = std::move(values);
}

void Parser::parse_reservations(const toml::table& t, EngineConfig& out) {
  check_keys(t, "reservations", kReservationsKeys);
  const auto* def = t.get("default_ttl_seconds");
  const auto* max = t.get("max_ttl_seconds");
  std::optional<Duration> d, m;
  if (def) d = seconds(*def, "reservations.default_ttl_seconds");
  if (max) m = seconds(*max, "reservations.max_ttl_seconds");
  if (d) out.default_reservation_ttl = *d;
  if (m) out.max_reservation_ttl = *m;
  if ((d || m) && out.default_reservation_ttl > out.max_reservation_ttl)
    error(d ? *def : *max, d ? "reservations.default_ttl_seconds" : "reservations.max_ttl_seconds",
          fmt::format(
              "the default TTL ({} s) exceeds the maximum TTL ({} s)",
              std::chrono::duration_cast<std::chrono::seconds>(out.default_reservation_ttl).count(),
              std::chrono::duration_cast<std::chrono::seconds>(out.max_reservation_ttl).count()));
  if (const auto* n = t.get("expired_id_retention_seconds"))
    if (auto v = seconds(*n, "reservations.expired_id_retention_seconds"))
      out.expired_id_retention = *v;
}

void Parser::parse_approval(const toml::table& t, EngineConfig& out) {
  check_keys(t, "approval", kApprovalKeys);
  if (const auto* n = t.get("pending_ttl_seconds"))
    if (auto v = seconds(*n, "approval.pending_ttl_seconds")) out.pending_ttl = *v;
}

// A table of resource name -> amount, into one field (hard, soft or approval) of each spec.
// Names that are not built in are interned as custom resources.
void Parser::parse_limits(const toml::node& n, std::string_view path,
                          std::optional<Decimal> LimitSpec::*which, LimitMap& out) {
  const auto* t = table(n, path);
  if (!t) return;
  for (auto&& [key, value] : *t) {
    std::string_view name = key.str();
    std::string vpath = join(path, name);
    auto id = resources_.intern(name);
    if (!id) {
      error(key.source(),
            fmt::format(
                "{}: {}", vpath,
                id.error().code == Errc::capacity_exceeded
                    ? fmt::format("too many custom resources (at most {})",
                                  ResourceRegistry::kMaxCustom)
                    : fmt::format(
                          "invalid resource name '{}' (1 to {} bytes of a-z, 0-9, '_', '.', '-')",
                          name, ResourceRegistry::kMaxNameLength)));
      continue;
    }
    if (auto a = amount(value, vpath, ResourceRegistry::is_integer(*id))) out[*id].*which = *a;
  }
}

void Parser::parse_templates(const toml::table& t, TemplateKind kind,
                             std::vector<LimitTemplate>& out) {
  std::string_view section = kind == TemplateKind::plan ? "plans" : "tiers";
  for (auto&& [key, node] : t) {
    std::string_view name = key.str();
    std::string path = join(section, name);
    if (auto ok = validate_id(name); !ok) {
      error(key.source(), fmt::format("{}: invalid {} name ({})", path, template_kind_name(kind),
                                      ok.error().detail));
      continue;
    }
    const auto* body = table(node, path);
    if (!body) continue;
    check_keys(*body, path, kTemplateKeys);
    LimitTemplate tmpl;
    tmpl.name = std::string(name);
    tmpl.kind = kind;
    if (const auto* n = body->get("reset"))
      if (auto r = reset(*n, join(path, "reset"))) tmpl.reset = *r;
    if (const auto* n = body->get("limits"))
      parse_limits(*n, join(path, "limits"), &LimitSpec::hard, tmpl.limits);
    if (const auto* n = body->get("soft"))
      parse_limits(*n, join(path, "soft"), &LimitSpec::soft, tmpl.limits);
    if (const auto* n = body->get("approval"))
      parse_limits(*n, join(path, "approval"), &LimitSpec::approval, tmpl.limits);
    out.push_back(std::move(tmpl));
  }
}

void Parser::parse_scopes(const toml::node& n, const std::vector<LimitTemplate>& templates,
                          std::vector<ScopeConfig>& out) {
  const auto* arr = n.as_array();
  if (!arr) {
    type_error(n, "scope", "an array of tables ([[scope]])");
    return;
  }
  auto known = [&](TemplateKind kind, std::string_view name) {
    for (const auto& t : templates)
      if (t.kind == kind && t.name == name) return true;
    return false;
  };
  std::map<std::string, uint32_t> seen;  // normalized path -> line of its first declaration
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const toml::node& el = *arr->get(i);
    std::string path = fmt::format("scope[{}]", i);
    const auto* t = table(el, path);
    if (!t) continue;
    check_keys(*t, path, kScopeKeys);
    ScopeConfig sc;
    // A declared scope is the whole configured state of its node: limits replace the
    // node's overrides, and an absent plan or tier means none.
    sc.update.clear_overrides = true;
    sc.update.plan = "";
    sc.update.tier = "";
    const auto* p = t->get("path");
    if (!p) {
      error(el, path, "missing 'path' (the scope node, such as \"org/acme\")");
    } else if (auto s = string(*p, join(path, "path"))) {
      auto norm = normalize_path(*s);
      if (!norm) {
        error(*p, join(path, "path"),
              fmt::format("invalid scope path \"{}\": {}", *s, norm.error().detail));
      } else if (auto [it, fresh] = seen.emplace(*norm, p->source().begin.line); !fresh) {
        error(*p, join(path, "path"),
              fmt::format("scope \"{}\" is already declared on line {}", *norm, it->second));
      } else {
        sc.path = *norm;
      }
    }
    for (auto kind : {TemplateKind::plan, TemplateKind::tier}) {
      std::string_view field = template_kind_name(kind);
      const auto* v = t->get(field);
      if (!v) continue;
      auto s = string(*v, join(path, field));
      if (!s) continue;
      if (!s->empty() && !known(kind, *s)) {
        std::vector<std::string_view> names;
        for (const auto& tm : templates)
          if (tm.kind == kind && std::find(names.begin(), names.end(), tm.name) == names.end())
            names.push_back(tm.name);
        error(*v, join(path, field),
              fmt::format("unknown {} \"{}\" (known: {})", field, *s, one_of(names)));
        continue;
      }
      (kind == TemplateKind::plan ? sc.update.plan : sc.update.tier) = *s;
    }
    if (const auto* v = t->get("reset"))
      if (auto r = reset(*v, join(path, "reset"))) sc.update.reset = *r;
    if (const auto* v = t->get("limits"))
      parse_limits(*v, join(path, "limits"), &LimitSpec::hard, sc.update.limits);
    if (const auto* v = t->get("soft"))
      parse_limits(*v, join(path, "soft"), &LimitSpec::soft, sc.update.limits);
    if (const auto* v = t->get("approval"))
      parse_limits(*v, join(path, "approval"), &LimitSpec::approval, sc.update.limits);
    out.push_back(std::move(sc));
  }
}

// Fields absent from a user's or endpoint's table come from `base` (the default limits).
RateLimitConfig Parser::parse_rate_limit(const toml::node& n, std::string_view path,
                                         RateLimitConfig base) {
  const auto* t = table(n, path);
  if (!t) return base;
  check_keys(*t, path, kRateLimitKeys);
  for (const auto& f : kRateFields) {
    const auto* v = t->get(f.name);
    if (!v) continue;
    std::string vpath = join(path, f.name);
    if (const auto* s = v->as_string(); s && s->get() == "unlimited") {
      base.*f.member = 0;  // the rate limiter's "no limit"
    } else if (!v->is_integer()) {
      type_error(*v, vpath, "a count (0 or \"unlimited\" for no limit)");
    } else if (auto i = integer(*v, vpath, 0, INT64_MAX)) {
      base.*f.member = static_cast<uint64_t>(*i);
    }
  }
  return base;
}

void Parser::parse_rate_limits(const toml::table& t, RateLimitsConfig& out) {
  check_keys(t, "rate_limits", kRateLimitsKeys);
  if (const auto* n = t.get("default"))
    out.default_config = parse_rate_limit(*n, "rate_limits.default", {});
  for (std::string_view group : {"users", "endpoints"}) {
    const auto* n = t.get(group);
    if (!n) continue;
    std::string gpath = join("rate_limits", group);
    const auto* g = table(*n, gpath);
    if (!g) continue;
    auto& dest = group == "users" ? out.users : out.endpoints;
    for (auto&& [key, value] : *g) {
      std::string_view id = key.str();
      std::string path = join(gpath, id);
      if (auto ok = RateLimiter::validate_id(id); !ok) {
        error(key.source(), fmt::format("{}: invalid id ({})", path, ok.error().detail));
        continue;
      }
      dest[std::string(id)] = parse_rate_limit(value, path, out.default_config);
    }
  }
}

void Parser::parse_store(const toml::table& t, Config& out) {
  check_keys(t, "store", kStoreKeys);
  if (const auto* n = t.get("state_dir")) {
    if (auto s = string(*n, "store.state_dir")) {
      if (s->find('\0') != std::string::npos)
        error(*n, "store.state_dir", "contains a NUL byte");
      else
        out.state_dir = *s;
    }
  }
  if (const auto* n = t.get("durability")) {
    if (auto s = string(*n, "store.durability")) {
      if (auto d = parse_durability(*s))
        out.store.durability = *d;
      else
        error(*n, "store.durability",
              fmt::format("unknown durability \"{}\" (expected {})", *s, one_of(kDurabilityNames)));
    }
  }
  if (const auto* n = t.get("batch_window_ms"))
    if (auto v = integer(*n, "store.batch_window_ms", 1, kMaxBatchWindowMs))
      out.store.batch_window_ms = static_cast<uint32_t>(*v);
  if (const auto* n = t.get("retention_days"))
    if (auto v = integer(*n, "store.retention_days", 1, kMaxRetentionDays))
      out.store.retention_days = static_cast<uint32_t>(*v);
  if (const auto* n = t.get("idempotency_retention_hours")) {
    if (auto v = integer(*n, "store.idempotency_retention_hours", 1, kMaxIdempotencyHours))
      out.store.idempotency_retention_hours = static_cast<uint32_t>(*v);
    // The store forgets replies with the records, after retention_days: a longer promise
    // could not be kept across a restart.
    if (uint64_t{out.store.idempotency_retention_hours} > uint64_t{out.store.retention_days} * 24)
      error(*n, "store.idempotency_retention_hours",
            fmt::format("{} hours is longer than store.retention_days ({} days), for which the store keeps "
                        "replies at most",
                        out.store.idempotency_retention_hours, out.store.retention_days));
  }
  if (const auto* n = t.get("max_size_mb"))
    if (auto v = integer(*n, "store.max_size_mb", 0, kMaxStoreSizeMb))
      out.store.max_size_mb = static_cast<uint64_t>(*v);
}

// A resource's price: fields left out keep the shipped price's (or "count", 1 and, for a
// resource with no shipped price, a required unit_cost). A unit label that starts with a
// count ("1000 tokens") is that many of the resource, so it sets unit_size, and an
// explicit unit_size must agree: a label saying 1000 over a size of 1 would bill 1000
// times over.
void Parser::parse_resource_price(const toml::node& n, std::string_view name, std::string_view path,
                                  PriceTable& out) {
  const auto* t = table(n, path);
  if (!t) return;
  check_keys(*t, path, kResourcePriceKeys);
  auto shipped = out.resources().find(name);
  const bool is_new = shipped == out.resources().end();
  UnitPrice p = is_new ? UnitPrice{} : shipped->second;
  bool ok = true;
  const auto* unit = t->get("unit");
  if (unit) {
    auto s = string(*unit, join(path, "unit"));
    if (!s) {
      ok = false;
    } else if (s->empty() || s->size() > PriceTable::kMaxUnitLabelLength) {
      error(*unit, join(path, "unit"),
            fmt::format("a unit label is 1 to {} bytes, such as \"1000 tokens\" or \"GB\"",
                        PriceTable::kMaxUnitLabelLength));
      ok = false;
    } else {
      p.unit = *s;
      p.unit_size = leading_number(*s).value_or(Decimal::from_int(1));
      if (p.unit_size.is_zero() || p.unit_size > Decimal::from_int(PriceTable::kMaxUnitSize)) {
        error(*unit, join(path, "unit"),
              fmt::format("\"{}\" counts {}; a unit counts more than 0 and at most {}", *s,
                          p.unit_size.to_string(), PriceTable::kMaxUnitSize));
        ok = false;
      }
    }
  }
  if (const auto* size = t->get("unit_size")) {
    auto v = price(*size, join(path, "unit_size"), PriceTable::kMaxUnitSize);
    if (v && v->is_zero()) {
      error(*size, join(path, "unit_size"), "must be above 0");
      v.reset();
    }
    auto labelled = leading_number(p.unit);
    if (v && labelled && *labelled != *v) {
      error(*size, join(path, "unit_size"),
            fmt::format("{} disagrees with the unit \"{}\" (which counts {})", v->to_string(),
                        p.unit, labelled->to_string()));
      v.reset();
    }
    if (v)
      p.unit_size = *v;
    else
      ok = false;
  }
  if (const auto* cost = t->get("unit_cost")) {
    if (auto v = price(*cost, join(path, "unit_cost"), PriceTable::kMaxUnitCost))
      p.unit_cost = *v;
    else
      ok = false;
  } else if (is_new) {
    error(n, path, "missing 'unit_cost' (dollars per unit, such as \"0.002\")");
    ok = false;
  }
  if (ok) out.set_resource(std::string(name), std::move(p));
}

void Parser::parse_model_price(const toml::node& n, std::string_view name, std::string_view path,
                               PriceTable& out) {
  const auto* t = table(n, path);
  if (!t) return;
  check_keys(*t, path, kModelPriceKeys);
  // Both prices are required: a model left with one would bill the other side as free.
  ModelPrice p;
  bool ok = true;
  for (auto [key, member] : {std::pair{"input_per_1k", &ModelPrice::input_per_1k},
                             std::pair{"output_per_1k", &ModelPrice::output_per_1k}}) {
    const auto* v = t->get(key);
    if (!v) {
      error(n, path, fmt::format("missing '{}' (dollars per 1000 tokens)", key));
      ok = false;
    } else if (auto d = price(*v, join(path, key), PriceTable::kMaxUnitCost)) {
      p.*member = *d;
    } else {
      ok = false;
    }
  }
  if (ok) out.set_model(std::string(name), p);
}

void Parser::parse_pricing(const toml::table& t, PriceTable& out) {
  check_keys(t, "pricing", kPricingKeys);
  if (const auto* n = t.get("resources")) {
    if (const auto* rs = table(*n, "pricing.resources")) {
      for (auto&& [key, value] : *rs) {
        std::string_view name = key.str();
        std::string path = join("pricing.resources", name);
        if (auto ok = PriceTable::validate_name(name); !ok) {
          error(key.source(),
                fmt::format("{}: invalid resource name '{}' ({})", path, name, ok.error().detail));
          continue;
        }
        // These never reach a resource price: token counts are priced per model or by
        // `token`, and money is its own price.
        if (name == "tokens_in" || name == "tokens_out" || name == "cost") {
          error(key.source(),
                fmt::format("{}: {} has no price of its own ({})", path, name,
                            name == "cost" ? "a reported cost is charged as given"
                                           : "tokens are priced by [pricing.models.MODEL], else "
                                             "by [pricing.resources.token]"));
          continue;
        }
        parse_resource_price(value, name, path, out);
      }
    }
  }
  if (const auto* n = t.get("models")) {
    if (const auto* ms = table(*n, "pricing.models")) {
      for (auto&& [key, value] : *ms) {
        std::string_view name = key.str();
        std::string path = join("pricing.models", name);
        if (auto ok = PriceTable::validate_model_name(name); !ok) {
          error(key.source(),
                fmt::format("{}: invalid model name '{}' ({})", path, name, ok.error().detail));
          continue;
        }
        parse_model_price(value, name, path, out);
      }
    }
  }
  if (const auto* n = t.get("actions")) {
    if (const auto* as = table(*n, "pricing.actions")) {
      for (auto&& [key, value] : *as) {
        std::string_view name = key.str();
        std::string path = join("pricing.actions", name);
        if (auto ok = PriceTable::validate_name(name); !ok) {
          error(key.source(),
                fmt::format("{}: invalid action name '{}' ({})", path, name, ok.error().detail));
          continue;
        }
        if (auto v = price(value, path, PriceTable::kMaxActionTokensPer1000Words))
          out.set_action(std::string(name), *v);
      }
    }
  }
}

Config Parser::parse(const toml::table& root) {
  Config c;
  check_keys(root, "", kTopLevelKeys);
  auto section = [&](std::string_view name) -> const toml::table* {
    const auto* n = root.get(name);
    return n ? table(*n, name) : nullptr;
  };
  if (const auto* t = section("socket")) parse_socket(*t, c.socket);
  if (const auto* t = section("bounds")) parse_bounds(*t, c.bounds);
  if (const auto* t = section("quota")) parse_quota(*t, c.engine.default_quota);
  if (const auto* t = section("threads")) parse_threads(*t, c.engine);
  if (const auto* t = section("alerts")) parse_alerts(*t, c.engine);
  if (const auto* t = section("reservations")) parse_reservations(*t, c.engine);
  if (const auto* t = section("approval")) parse_approval(*t, c.engine);
  if (const auto* t = section("plans")) parse_templates(*t, TemplateKind::plan, c.templates);
  if (const auto* t = section("tiers")) parse_templates(*t, TemplateKind::tier, c.templates);
  if (const auto* n = root.get("scope")) {
    // Scopes may name a shipped template or one declared above (which replaces a shipped
    // one of the same name).
    std::vector<LimitTemplate> known = shipped_templates(resources_);
    known.insert(known.end(), c.templates.begin(), c.templates.end());
    parse_scopes(*n, known, c.scopes);
  }
  if (const auto* t = section("rate_limits")) parse_rate_limits(*t, c.rate_limits);
  if (const auto* t = section("store")) parse_store(*t, c);
  if (const auto* t = section("pricing")) parse_pricing(*t, c.prices);
  // The top-level spelling came before [store]; it still works, but not both at once.
  if (const auto* n = root.get("state_dir")) {
    const toml::node* in_store = nullptr;
    if (const auto* st = root.get("store"); st && st->is_table())
      in_store = st->as_table()->get("state_dir");
    if (in_store)
      error(*n, "state_dir",
            fmt::format("also set as store.state_dir on line {}; keep one",
                        in_store->source().begin.line));
    else if (auto s = string(*n, "state_dir"))
      c.state_dir = *s;
  }
  if (const auto* n = root.get("status_interval_ms"))
    if (auto v = integer(*n, "status_interval_ms", 1, kMaxSeconds * 1000))
      c.status_interval_ms = static_cast<uint64_t>(*v);
  if (const auto* n = root.get("log_level")) {
    if (auto s = string(*n, "log_level")) {
      if (std::find(kLogLevels.begin(), kLogLevels.end(), *s) == kLogLevels.end())
        error(*n, "log_level",
              fmt::format("unknown log level \"{}\" (expected {})", *s, one_of(kLogLevels)));
      else
        c.log_level = *s;
    }
  }
  c.engine.max_processes = c.bounds.max_processes;
  c.engine.max_threads = c.bounds.max_threads;
  c.engine.max_holds = c.bounds.max_holds;
  return c;
}

}  // namespace

std::string ConfigError::to_string() const {
  if (line == 0) return fmt::format("{}: {}", file, message);
  return fmt::format("{}:{}:{}: {}", file, line, column, message);
}

std::expected<Config, std::vector<ConfigError>> parse_config(std::string_view text,
                                                             const std::string& source_name,
                                                             ResourceRegistry& resources) {
  toml::table root;
  try {
    root = toml::parse(text, std::string_view(source_name));
  } catch (const toml::parse_error& e) {
    return std::unexpected(std::vector<ConfigError>{ConfigError{source_name, e.source().begin.line,
                                                                e.source().begin.column,
                                                                std::string(e.description())}});
  }
  // Custom resources are interned into a copy, so that a file with errors leaves the
  // caller's registry as it was (a failed reload must change nothing).
  ResourceRegistry scratch = resources;
  Parser parser(source_name, scratch);
  Config config = parser.parse(root);
  auto errors = parser.take_errors();
  if (!errors.empty()) {
    std::stable_sort(errors.begin(), errors.end(), [](const ConfigError& a, const ConfigError& b) {
      return std::tie(a.line, a.column) < std::tie(b.line, b.column);
    });
    return std::unexpected(std::move(errors));
  }
  resources = std::move(scratch);
  return config;
}

std::expected<Config, std::vector<ConfigError>> load_config(const std::string& path,
                                                            ResourceRegistry& resources) {
  auto fail_with = [&](std::string message) {
    return std::unexpected(std::vector<ConfigError>{ConfigError{path, 0, 0, std::move(message)}});
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail_with(fmt::format("cannot open: {}", std::strerror(errno)));
  std::string text;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return fail_with(fmt::format("cannot read: {}", std::strerror(e)));
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxConfigBytes) {
      ::close(fd);
      return fail_with(
          fmt::format("larger than {} bytes; is this the right file?", kMaxConfigBytes));
    }
  }
  ::close(fd);
  return parse_config(text, path, resources);
}

std::string_view durability_name(StoreConfig::Durability d) {
  auto i = static_cast<std::size_t>(d);
  return i < kDurabilityNames.size() ? kDurabilityNames[i] : "unknown";
}

std::optional<StoreConfig::Durability> parse_durability(std::string_view s) {
  auto it = std::find(kDurabilityNames.begin(), kDurabilityNames.end(), s);
  if (it == kDurabilityNames.end()) return std::nullopt;
  return static_cast<StoreConfig::Durability>(it - kDurabilityNames.begin());
}

std::string default_state_dir() {
  if (const char* sd = std::getenv("STATE_DIRECTORY"); sd && *sd) {
    std::string_view v(sd);
    return std::string(v.substr(0, v.find(':')));
  }
  if (::geteuid() == 0) return "/var/lib/budgetd";
  // The XDG base-directory spec says to ignore a relative XDG_STATE_HOME.
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg && xdg[0] == '/')
    return fmt::format("{}/budgetd", xdg);
  if (const char* home = std::getenv("HOME"); home && *home)
    return fmt::format("{}/.local/state/budgetd", home);
  return "./state";
}

std::string default_socket_path() {
  if (::geteuid() == 0) return "/run/budgetd/io.budgetd";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg && *xdg) return fmt::format("{}/budgetd/io.budgetd", xdg);
  return "./run/io.budgetd";
}

}  // namespace budgetd::daemon
