#include "daemon/config.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "lib/plans.h"

namespace budgetd::daemon {
namespace {

using namespace std::chrono_literals;

// tests/daemon/config_test.cc -> the repository root.
std::filesystem::path source_root() {
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}
std::string shipped_conf() { return (source_root() / "conf" / "budgetd.toml").string(); }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The commented-out TOML between "# --- begin example: NAME ---" and "# --- end example ---"
// in the shipped file, uncommented.
std::string example_block(const std::string& name) {
  std::istringstream in(read_file(shipped_conf()));
  std::string line, out;
  bool inside = false;
  bool found = false;
  while (std::getline(in, line)) {
    if (line == "# --- begin example: " + name + " ---") {
      inside = found = true;
      continue;
    }
    if (inside && line == "# --- end example ---") break;
    if (!inside) continue;
    if (line.rfind("# ", 0) == 0)
      out += line.substr(2);
    else if (line != "#")
      ADD_FAILURE() << "example line not commented: " << line;
    out += '\n';
  }
  EXPECT_TRUE(found) << "no example block " << name;
  return out;
}

Config parse_ok(std::string_view text, ResourceRegistry& reg) {
  auto c = parse_config(text, "test.toml", reg);
  if (!c) {
    for (const auto& e : c.error()) ADD_FAILURE() << e.to_string();
    return Config{};
  }
  return *c;
}

Config parse_ok(std::string_view text) {
  ResourceRegistry reg;
  return parse_ok(text, reg);
}

std::vector<ConfigError> parse_errors(std::string_view text) {
  ResourceRegistry reg;
  auto c = parse_config(text, "test.toml", reg);
  EXPECT_FALSE(c.has_value()) << "expected errors in:\n" << text;
  if (c) return {};
  return c.error();
}

// Exactly one error, at line:column, whose message contains `needle`.
void expect_one_error(std::string_view text, uint32_t line, uint32_t column,
                      std::string_view needle) {
  auto errors = parse_errors(text);
  ASSERT_EQ(errors.size(), 1u) << [&] {
    std::string all;
    for (const auto& e : errors) all += e.to_string() + "\n";
    return all;
  }();
  EXPECT_EQ(errors[0].file, "test.toml");
  EXPECT_EQ(errors[0].line, line) << errors[0].to_string();
  EXPECT_EQ(errors[0].column, column) << errors[0].to_string();
  EXPECT_NE(errors[0].message.find(needle), std::string::npos) << errors[0].to_string();
}

void expect_shipped_prices(const PriceTable& p) {
  const PriceTable d = PriceTable::defaults();
  EXPECT_EQ(p.resources(), d.resources());
  EXPECT_EQ(p.models(), d.models());
  EXPECT_EQ(p.actions(), d.actions());
}

Decimal D(const char* s) { return Decimal::parse(s).value(); }

void expect_defaults(const Config& c) {
  const Config d;
  EXPECT_EQ(c.socket.path, "");
  EXPECT_EQ(c.socket.mode, 0660u);
  EXPECT_EQ(c.socket.group, "");
  EXPECT_EQ(c.socket.operator_group, "");
  EXPECT_EQ(c.bounds.max_connections, 4096u);
  EXPECT_EQ(c.bounds.max_connections_per_uid, 1024u);
  EXPECT_EQ(c.bounds.max_message_bytes, 1u << 20);
  EXPECT_EQ(c.bounds.max_json_depth, 64u);
  EXPECT_EQ(c.bounds.max_pending_reply_bytes, 4u << 20);
  EXPECT_EQ(c.bounds.max_processes, 1'000'000u);
  EXPECT_EQ(c.bounds.max_threads, 1'000'000u);
  EXPECT_EQ(c.bounds.max_holds, 1'000'000u);
  EXPECT_EQ(c.bounds.max_watchers, 1024u);
  EXPECT_EQ(c.engine.default_quota, ResourceQuota{});
  EXPECT_EQ(c.engine.thread_default_max_tokens, 100'000u);
  EXPECT_EQ(c.engine.thresholds, (std::vector<uint32_t>{80, 90}));
  EXPECT_EQ(c.engine.max_processes, d.engine.max_processes);
  EXPECT_EQ(c.engine.max_threads, d.engine.max_threads);
  EXPECT_EQ(c.engine.max_holds, d.engine.max_holds);
  EXPECT_EQ(c.engine.default_reservation_ttl, 5min);
  EXPECT_EQ(c.engine.max_reservation_ttl, 24h);
  EXPECT_EQ(c.engine.pending_ttl, 1h);
  EXPECT_EQ(c.engine.expired_id_retention, 1h);
  EXPECT_TRUE(c.templates.empty());
  EXPECT_TRUE(c.scopes.empty());
  EXPECT_EQ(c.rate_limits.default_config, RateLimitConfig{});
  EXPECT_TRUE(c.rate_limits.users.empty());
  EXPECT_TRUE(c.rate_limits.endpoints.empty());
  EXPECT_EQ(c.state_dir, "");
  EXPECT_EQ(c.store, StoreConfig{});
  EXPECT_EQ(c.store.durability, StoreConfig::Durability::ack);
  EXPECT_EQ(c.store.batch_window_ms, 10u);
  EXPECT_EQ(c.store.retention_days, 90u);
  EXPECT_EQ(c.store.idempotency_retention_hours, 24u);
  expect_shipped_prices(c.prices);
  EXPECT_EQ(c.status_interval_ms, 1000u);
  EXPECT_EQ(c.log_level, "info");
}

// ---- The shipped file -------------------------------------------------------------------

TEST(ConfigShipped, LoadsWithoutErrorsAndShipsTheDefaults) {
  ResourceRegistry reg;
  auto c = load_config(shipped_conf(), reg);
  ASSERT_TRUE(c.has_value()) << [&] {
    std::string all;
    for (const auto& e : c.error()) all += e.to_string() + "\n";
    return all;
  }();
  expect_defaults(*c);
  EXPECT_EQ(reg.size(), res::kBuiltinCount);
}

// Every key the parser knows is written out (set, or commented with its default) in the
// shipped file, so the documentation cannot fall behind the parser.
TEST(ConfigShipped, DocumentsEveryKey) {
  std::string text = read_file(shipped_conf());
  std::vector<std::string> keys = {"state_dir",
                                   "status_interval_ms",
                                   "log_level",
                                   "path",
                                   "mode",
                                   "group",
                                   "operator_group",
                                   "max_connections",
                                   "max_connections_per_uid",
                                   "max_message_bytes",
                                   "max_json_depth",
                                   "max_pending_reply_bytes",
                                   "max_processes",
                                   "max_threads",
                                   "max_holds",
                                   "max_watchers",
                                   "max_tokens_per_thread",
                                   "thresholds",
                                   "default_ttl_seconds",
                                   "max_ttl_seconds",
                                   "expired_id_retention_seconds",
                                   "pending_ttl_seconds",
                                   "reset",
                                   "limits",
                                   "soft",
                                   "approval",
                                   "plan",
                                   "tier",
                                   "requests_per_minute",
                                   "requests_per_hour",
                                   "requests_per_day",
                                   "burst",
                                   "durability",
                                   "batch_window_ms",
                                   "retention_days",
                                   "idempotency_retention_hours",
                                   "max_size_mb",
                                   "unit",
                                   "unit_size",
                                   "unit_cost",
                                   "input_per_1k",
                                   "output_per_1k",
                                   "translate",
                                   "summarize"};
  for (auto f : ResourceQuota::field_names()) keys.emplace_back(f);
  for (const auto& k : keys) {
    bool found = text.find("\n" + k + " = ") != std::string::npos ||
                 text.find("\n# " + k + " = ") != std::string::npos;
    EXPECT_TRUE(found) << k << " is not documented in conf/budgetd.toml";
  }
  for (const char* section :
       {"[socket]", "[bounds]", "[quota]", "[threads]", "[alerts]", "[reservations]", "[approval]",
        "[plans.", "[tiers.", "[[scope]]", "[rate_limits.default]", "[rate_limits.users.",
        "[rate_limits.endpoints.", "[store]", "[pricing.resources.", "[pricing.models.",
        "[pricing.actions]"})
    EXPECT_NE(text.find(section), std::string::npos) << section;
}

// The commented block of built-in plans and tiers is exactly what lib/plans.cc ships.
TEST(ConfigShipped, DocumentedTemplatesMatchTheBuiltInOnes) {
  ResourceRegistry reg;
  Config c = parse_ok(example_block("built-in plans and tiers"), reg);
  auto shipped = shipped_templates(reg);
  ASSERT_EQ(c.templates.size(), shipped.size());
  for (const auto& s : shipped) {
    auto it = std::find_if(c.templates.begin(), c.templates.end(), [&](const LimitTemplate& t) {
      return t.kind == s.kind && t.name == s.name;
    });
    ASSERT_NE(it, c.templates.end()) << s.name;
    EXPECT_EQ(it->reset, s.reset) << s.name;
    EXPECT_EQ(it->limits, s.limits) << s.name;
  }
}

TEST(ConfigShipped, DocumentedScopeTreeLoads) {
  ResourceRegistry reg;
  Config c = parse_ok(example_block("scope tree"), reg);
  ASSERT_EQ(c.scopes.size(), 3u);
  EXPECT_EQ(c.scopes[0].path, "org/acme");
  EXPECT_EQ(c.scopes[0].update.plan, "pro");
  EXPECT_EQ(c.scopes[0].update.reset, ResetPeriod::monthly);
  EXPECT_EQ(c.scopes[1].path, "org/acme/team/research");
  EXPECT_EQ(c.scopes[1].update.limits.at(res::tokens).soft, Decimal::from_int(800'000));
  EXPECT_EQ(c.scopes[2].path, "org/acme/team/research/user/alice");
  EXPECT_EQ(c.scopes[2].update.tier, "standard");
  EXPECT_EQ(c.scopes[2].update.reset, ResetPeriod::daily);
  EXPECT_EQ(c.scopes[2].update.limits.at(res::cost).hard, Decimal::parse("25").value());
  auto gpu = reg.find("gpu_hours");
  ASSERT_TRUE(gpu.has_value());
  EXPECT_EQ(c.scopes[2].update.limits.at(*gpu).approval, Decimal::from_int(2));
}

// The commented block of resource prices is exactly PriceTable::defaults(); the model
// example loads.
TEST(ConfigShipped, DocumentedPricesMatchTheDefaults) {
  Config c = parse_ok(example_block("shipped resource prices"));
  expect_shipped_prices(c.prices);
  Config models = parse_ok(example_block("model prices"));
  EXPECT_EQ(models.prices.models().size(), 2u);
  EXPECT_EQ(models.prices.models().at("gpt-4o"), (ModelPrice{D("0.0025"), D("0.01")}));
}

// The shipped file and its examples load into an Engine as the daemon will apply them.
TEST(ConfigShipped, ExamplesApplyToAnEngine) {
  ResourceRegistry reg;
  Config c = parse_ok(example_block("built-in plans and tiers") + example_block("scope tree"), reg);
  FakeClock clock;
  Engine engine(clock, c.engine);
  // The daemon replays custom names in id order, so the engine's registry gives the same ids.
  for (std::size_t id = res::kBuiltinCount; id < reg.size(); ++id)
    ASSERT_EQ(engine.resources().intern(reg.name(static_cast<ResourceId>(id))).value(), id);
  for (const auto& t : c.templates) ASSERT_TRUE(engine.set_template(t).has_value());
  for (const auto& s : c.scopes)
    ASSERT_TRUE(engine.set_limits(s.path, s.update).has_value()) << s.path;
  auto alice = engine.get_scope("org/acme/team/research/user/alice");
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(alice->tier, "standard");
  EXPECT_EQ(alice->reset, ResetPeriod::daily);
  bool saw_tokens = false;
  for (const auto& slot : alice->resources)
    if (slot.resource == "tokens") {
      saw_tokens = true;
      EXPECT_EQ(slot.hard, Decimal::from_int(500));
    }
  EXPECT_TRUE(saw_tokens);
  auto acme = engine.get_scope("org/acme");
  ASSERT_TRUE(acme.has_value());
  EXPECT_EQ(acme->plan, "pro");
  EXPECT_EQ(acme->reset, ResetPeriod::monthly);
}

// ---- Every section ----------------------------------------------------------------------

TEST(ConfigParse, EmptyFileIsValidAndGivesDefaults) { expect_defaults(parse_ok("")); }

TEST(ConfigParse, CommentsOnlyGiveDefaults) {
  expect_defaults(parse_ok("# nothing\n\n[bounds]\n"));
}

TEST(ConfigParse, TopLevelKeys) {
  Config c = parse_ok(R"(
state_dir = "/var/lib/x"
status_interval_ms = 250
log_level = "debug"
)");
  EXPECT_EQ(c.state_dir, "/var/lib/x");
  EXPECT_EQ(c.status_interval_ms, 250u);
  EXPECT_EQ(c.log_level, "debug");
}

TEST(ConfigParse, Socket) {
  Config c = parse_ok(R"(
[socket]
path = "/tmp/b/io.budgetd"
mode = "0600"
group = "agents"
operator_group = "wheel"
)");
  EXPECT_EQ(c.socket.path, "/tmp/b/io.budgetd");
  EXPECT_EQ(c.socket.mode, 0600u);
  EXPECT_EQ(c.socket.group, "agents");
  EXPECT_EQ(c.socket.operator_group, "wheel");
  EXPECT_EQ(parse_ok("[socket]\nmode = 0o666\n").socket.mode, 0666u);
  EXPECT_EQ(parse_ok("[socket]\nmode = \"660\"\n").socket.mode, 0660u);
}

TEST(ConfigParse, BoundsAreCopiedIntoTheEngineConfig) {
  Config c = parse_ok(R"(
[bounds]
max_connections = 10
max_connections_per_uid = 2
max_message_bytes = 4096
max_json_depth = 8
max_pending_reply_bytes = 65536
max_processes = 100
max_threads = 200
max_holds = 300
max_watchers = 4
)");
  EXPECT_EQ(c.bounds.max_connections, 10u);
  EXPECT_EQ(c.bounds.max_connections_per_uid, 2u);
  EXPECT_EQ(c.bounds.max_message_bytes, 4096u);
  EXPECT_EQ(c.bounds.max_json_depth, 8u);
  EXPECT_EQ(c.bounds.max_pending_reply_bytes, 65536u);
  EXPECT_EQ(c.bounds.max_processes, 100u);
  EXPECT_EQ(c.bounds.max_threads, 200u);
  EXPECT_EQ(c.bounds.max_holds, 300u);
  EXPECT_EQ(c.bounds.max_watchers, 4u);
  EXPECT_EQ(c.engine.max_processes, 100u);
  EXPECT_EQ(c.engine.max_threads, 200u);
  EXPECT_EQ(c.engine.max_holds, 300u);
}

TEST(ConfigParse, EveryQuotaField) {
  Config c = parse_ok(R"(
[quota]
max_input_tokens = 1
max_output_tokens = 2
max_context_tokens = 3
max_llm_calls = "unlimited"
max_tool_calls = 5
max_agent_hops = 6
max_iterations = 7
max_tokens = 8
max_cost = "12.50"
timeout_seconds = 9
soft_timeout_seconds = 8
on_timeout = "terminate"
on_violation = "pause"
kill_grace_seconds = 11
)");
  ResourceQuota want;
  want.max_input_tokens = 1;
  want.max_output_tokens = 2;
  want.max_context_tokens = 3;
  want.max_llm_calls = kUnlimited;
  want.max_tool_calls = 5;
  want.max_agent_hops = 6;
  want.max_iterations = 7;
  want.max_tokens = 8;
  want.max_cost = Decimal::parse("12.5").value();
  want.timeout_seconds = 9;
  want.soft_timeout_seconds = 8;
  want.on_timeout = Action::terminate;
  want.on_violation = Action::pause;
  want.kill_grace_seconds = 11;
  EXPECT_EQ(c.engine.default_quota, want);
  // Every field of ResourceQuota is accepted in [quota].
  std::string all = "[quota]\n";
  for (auto [name, text] : ResourceQuota{}.fields())
    all += std::string(name) + " = \"" + text + "\"\n";
  EXPECT_EQ(parse_ok(all).engine.default_quota, ResourceQuota{});
  EXPECT_EQ(parse_ok("[quota]\nmax_cost = 5\n").engine.default_quota.max_cost,
            Decimal::from_int(5));
}

TEST(ConfigParse, ThreadsAlertsReservationsApproval) {
  Config c = parse_ok(R"(
[threads]
max_tokens_per_thread = 5000
[alerts]
thresholds = [95, 50, 75]
[reservations]
default_ttl_seconds = 60
max_ttl_seconds = 600
expired_id_retention_seconds = 120
[approval]
pending_ttl_seconds = 30
)");
  EXPECT_EQ(c.engine.thread_default_max_tokens, 5000u);
  EXPECT_EQ(c.engine.thresholds, (std::vector<uint32_t>{50, 75, 95}));
  EXPECT_EQ(c.engine.default_reservation_ttl, 60s);
  EXPECT_EQ(c.engine.max_reservation_ttl, 600s);
  EXPECT_EQ(c.engine.expired_id_retention, 120s);
  EXPECT_EQ(c.engine.pending_ttl, 30s);
  EXPECT_TRUE(parse_ok("[alerts]\nthresholds = []\n").engine.thresholds.empty());
  EXPECT_EQ(parse_ok("[threads]\nmax_tokens_per_thread = \"unlimited\"\n")
                .engine.thread_default_max_tokens,
            kUnlimited);
}

TEST(ConfigParse, PlansAndTiersWithCustomResources) {
  ResourceRegistry reg;
  Config c = parse_ok(R"(
[plans.startup]
reset = "weekly"
[plans.startup.limits]
tokens = 100000
agent_execution = "unlimited"
storage = "1"
api_call = 10000
gpu_seconds = "3600.5"
[plans.startup.soft]
tokens = 80000
[plans.startup.approval]
cost = "100"

[tiers.gold]
reset = "hourly"
limits = { tokens = 700 }

[tiers.bare]
)",
                      reg);
  ASSERT_EQ(c.templates.size(), 3u);
  const LimitTemplate& p = c.templates[0];
  EXPECT_EQ(p.name, "startup");
  EXPECT_EQ(p.kind, TemplateKind::plan);
  EXPECT_EQ(p.reset, ResetPeriod::weekly);
  EXPECT_EQ(p.limits.at(res::tokens).hard, Decimal::from_int(100'000));
  EXPECT_EQ(p.limits.at(res::tokens).soft, Decimal::from_int(80'000));
  EXPECT_EQ(p.limits.at(res::tokens).approval, std::nullopt);
  EXPECT_EQ(p.limits.at(res::agent_execution).hard, kUnlimitedAmount);
  EXPECT_EQ(p.limits.at(res::storage).hard, Decimal::from_int(1));
  EXPECT_EQ(p.limits.at(res::api_call).hard, Decimal::from_int(10'000));
  EXPECT_EQ(p.limits.at(res::cost).approval, Decimal::from_int(100));
  auto gpu = reg.find("gpu_seconds");
  ASSERT_TRUE(gpu.has_value());
  EXPECT_GE(*gpu, res::kBuiltinCount);
  EXPECT_EQ(p.limits.at(*gpu).hard, Decimal::parse("3600.5").value());
  // Plans come before tiers; within one, toml++ orders names as a std::map does.
  EXPECT_EQ(c.templates[1].name, "bare");
  EXPECT_EQ(c.templates[1].kind, TemplateKind::tier);
  EXPECT_EQ(c.templates[1].reset, ResetPeriod::never);
  EXPECT_TRUE(c.templates[1].limits.empty());
  EXPECT_EQ(c.templates[2].name, "gold");
  EXPECT_EQ(c.templates[2].kind, TemplateKind::tier);
  EXPECT_EQ(c.templates[2].reset, ResetPeriod::hourly);
  EXPECT_EQ(c.templates[2].limits.at(res::tokens).hard, Decimal::from_int(700));
}

TEST(ConfigParse, Scopes) {
  Config c = parse_ok(R"(
[plans.mine]
limits = { tokens = 1 }

[[scope]]
path = "/org/acme/"
plan = "pro"
reset = "monthly"
limits = { tokens = 5000, cost = "10.25" }
soft = { tokens = 4000 }
approval = { compute = "2.5" }

[[scope]]
path = "org/acme/user/bob"
plan = "mine"
tier = "free"
)");
  ASSERT_EQ(c.scopes.size(), 2u);
  const ScopeConfig& a = c.scopes[0];
  EXPECT_EQ(a.path, "org/acme");
  EXPECT_EQ(a.update.plan, "pro");
  EXPECT_EQ(a.update.tier, "");
  EXPECT_EQ(a.update.reset, ResetPeriod::monthly);
  EXPECT_TRUE(a.update.clear_overrides);
  EXPECT_EQ(a.update.limits.at(res::tokens).hard, Decimal::from_int(5000));
  EXPECT_EQ(a.update.limits.at(res::tokens).soft, Decimal::from_int(4000));
  EXPECT_EQ(a.update.limits.at(res::cost).hard, Decimal::parse("10.25").value());
  EXPECT_EQ(a.update.limits.at(res::compute).approval, Decimal::parse("2.5").value());
  EXPECT_EQ(c.scopes[1].update.plan, "mine");  // declared in this file
  EXPECT_EQ(c.scopes[1].update.tier, "free");  // built in
  EXPECT_EQ(c.scopes[1].update.reset, std::nullopt);
}

TEST(ConfigParse, RateLimits) {
  Config c = parse_ok(R"(
[rate_limits.default]
requests_per_minute = 30
requests_per_hour = 500
requests_per_day = "unlimited"
burst = 5

[rate_limits.users.alice]
requests_per_minute = 120

[rate_limits.endpoints."chat.completions"]
burst = 0
requests_per_day = 100
)");
  EXPECT_EQ(c.rate_limits.default_config, (RateLimitConfig{30, 500, 0, 5}));
  // Fields left out come from the default.
  EXPECT_EQ(c.rate_limits.users.at("alice"), (RateLimitConfig{120, 500, 0, 5}));
  EXPECT_EQ(c.rate_limits.endpoints.at("chat.completions"), (RateLimitConfig{30, 500, 100, 0}));
}

TEST(ConfigParse, CustomResourcesAreInternedOnlyOnSuccess) {
  ResourceRegistry reg;
  auto bad = parse_config(
      "[[scope]]\npath = \"a\"\nlimits = { widgets = 3 }\n[bounds]\nmax_watchers = 0\n", "t", reg);
  ASSERT_FALSE(bad.has_value());
  EXPECT_FALSE(reg.find("widgets").has_value());
  auto good = parse_config("[[scope]]\npath = \"a\"\nlimits = { widgets = 3 }\n", "t", reg);
  ASSERT_TRUE(good.has_value());
  auto id = reg.find("widgets");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(good->scopes[0].update.limits.at(*id).hard, Decimal::from_int(3));
}

// ---- Errors, each with its place --------------------------------------------------------

TEST(ConfigErrors, UnknownKeyWithSuggestion) {
  expect_one_error("[bounds]\nmax_conections = 5\n", 2, 1,
                   "unknown key 'bounds.max_conections' (did you mean 'max_connections'?)");
  expect_one_error("[bound]\n", 1, 2, "unknown key 'bound' (did you mean 'bounds'?)");
  expect_one_error("[quota]\n  max_llm_call = 5\n", 2, 3, "unknown key 'quota.max_llm_call'");
  expect_one_error("[[scope]]\npath = \"a\"\nlimit = { tokens = 1 }\n", 3, 1,
                   "unknown key 'scope[0].limit'");
  expect_one_error("[plans.x]\nrest = \"daily\"\n", 2, 1,
                   "unknown key 'plans.x.rest' (did you mean 'reset'?)");
  expect_one_error("[rate_limits.users.bob]\nburts = 1\n", 2, 1, "rate_limits.users.bob.burts");
  expect_one_error("[socket]\nowner = \"x\"\n", 2, 1, "unknown key 'socket.owner'");
  expect_one_error("colour = 1\n", 1, 1, "unknown key 'colour'");
}

TEST(ConfigErrors, WrongType) {
  expect_one_error("[bounds]\nmax_connections = \"many\"\n", 2, 19,
                   "bounds.max_connections: expected an integer, got a string");
  expect_one_error("bounds = 5\n", 1, 10, "bounds: expected a table, got an integer");
  expect_one_error("[quota]\nmax_llm_calls = true\n", 2, 17,
                   "quota.max_llm_calls: expected a count");
  expect_one_error("[quota]\non_timeout = 1\n", 2, 14, "quota.on_timeout: expected an action name");
  expect_one_error("[alerts]\nthresholds = 80\n", 2, 14, "alerts.thresholds: expected an array");
  expect_one_error("[[scope]]\npath = 5\n", 2, 8, "scope[0].path: expected a string");
  expect_one_error("[scope]\npath = \"a\"\n", 1, 1, "scope: expected an array of tables");
  expect_one_error("[quota]\nmax_cost = 1.5\n", 2, 12, "floats are inexact");
  expect_one_error("[[scope]]\npath = \"a\"\nlimits = { cost = 0.1 }\n", 3, 19,
                   "floats are inexact");
  expect_one_error("[reservations]\ndefault_ttl_seconds = 1.0\n", 2, 23,
                   "expected an integer, got a float");
}

TEST(ConfigErrors, BadAction) {
  expect_one_error(
      "[quota]\non_violation = \"kill\"\n", 2, 16,
      "quota.on_violation: unknown action \"kill\" (expected none, terminate or pause)");
}

TEST(ConfigErrors, NegativeCount) {
  expect_one_error("[quota]\nmax_tool_calls = -1\n", 2, 18, "quota.max_tool_calls: must be >= 0");
  expect_one_error("[threads]\nmax_tokens_per_thread = -5\n", 2, 25, "must be at least 0, got -5");
  expect_one_error("[bounds]\nmax_processes = 0\n", 2, 17, "must be at least 1, got 0");
  expect_one_error("[[scope]]\npath = \"a\"\nlimits = { tokens = -3 }\n", 3, 21,
                   "must be >= 0, got -3");
  expect_one_error("[rate_limits.default]\nburst = -1\n", 2, 9,
                   "rate_limits.default.burst: must be at least 0");
  expect_one_error("[quota]\nmax_llm_calls = \"lots\"\n", 2, 17,
                   "expected a count >= 0 or \"unlimited\"");
}

TEST(ConfigErrors, MalformedDecimal) {
  expect_one_error("[quota]\nmax_cost = \"1.2.3\"\n", 2, 12,
                   "quota.max_cost: malformed decimal \"1.2.3\"");
  expect_one_error("[quota]\nmax_cost = \"-2\"\n", 2, 12, "quota.max_cost: must be >= 0");
  expect_one_error("[[scope]]\npath = \"a\"\nlimits = { cost = \"1,5\" }\n", 3, 19,
                   "malformed decimal \"1,5\"");
  expect_one_error("[plans.p.limits]\ntokens = \"1.5\"\n", 2, 10, "counted in whole units");
}

TEST(ConfigErrors, UnknownResetPeriod) {
  expect_one_error(
      "[plans.p]\nreset = \"fortnightly\"\n", 2, 9,
      "plans.p.reset: unknown reset period \"fortnightly\" (expected never, hourly, daily, "
      "weekly or monthly)");
  expect_one_error("[[scope]]\npath = \"a\"\nreset = \"Daily\"\n", 3, 9,
                   "unknown reset period \"Daily\"");
}

TEST(ConfigErrors, BadSocketMode) {
  expect_one_error("[socket]\nmode = \"rw-rw----\"\n", 2, 8, "bad socket mode \"rw-rw----\"");
  expect_one_error("[socket]\nmode = 660\n", 2, 8, "write it in octal");
  expect_one_error("[socket]\nmode = \"4755\"\n", 2, 8, "only permission bits");
  expect_one_error("[socket]\nmode = 0o1777\n", 2, 8, "only permission bits");
  expect_one_error("[socket]\nmode = true\n", 2, 8, "expected an octal string");
  expect_one_error("[socket]\npath = \"/" + std::string(120, 'x') + "\"\n", 2, 8, "at most 107");
}

TEST(ConfigErrors, Thresholds) {
  expect_one_error("[alerts]\nthresholds = [80, 101]\n", 2, 19,
                   "alerts.thresholds[1]: must be between 1 and 100, got 101");
  expect_one_error("[alerts]\nthresholds = [0]\n", 2, 15, "must be between 1 and 100, got 0");
  expect_one_error("[alerts]\nthresholds = [80, 80]\n", 2, 19, "listed twice");
  expect_one_error("[alerts]\nthresholds = [10, 20, 30, 40, 50, 60, 70]\n", 2, 14, "at most 6");
}

TEST(ConfigErrors, OtherValues) {
  expect_one_error("log_level = \"loud\"\n", 1, 13, "unknown log level \"loud\"");
  expect_one_error("status_interval_ms = 0\n", 1, 22, "must be between 1 and");
  expect_one_error("[reservations]\ndefault_ttl_seconds = 100\nmax_ttl_seconds = 50\n", 2, 23,
                   "the default TTL (100 s) exceeds the maximum TTL (50 s)");
  expect_one_error("[approval]\npending_ttl_seconds = 0\n", 2, 23, "must be between 1 and");
  expect_one_error("[[scope]]\nplan = \"pro\"\n", 1, 1, "scope[0]: missing 'path'");
  expect_one_error("[[scope]]\npath = \"a//b\"\n", 2, 8, "invalid scope path \"a//b\"");
  expect_one_error("[[scope]]\npath = \"a\"\nplan = \"platinum\"\n", 3, 8,
                   "unknown plan \"platinum\" (known: free, pro or enterprise)");
  expect_one_error("[[scope]]\npath = \"a\"\ntier = \"pro\"\n", 3, 8, "unknown tier \"pro\"");
  expect_one_error("[[scope]]\npath = \"a\"\n[[scope]]\npath = \"/a/\"\n", 4, 8,
                   "scope \"a\" is already declared on line 2");
  expect_one_error("[[scope]]\npath = \"a\"\nlimits = { Tokens = 1 }\n", 3, 12,
                   "invalid resource name 'Tokens'");
  expect_one_error("[plans.\"has space\"]\n", 1, 8, "plans.has space: invalid plan name");
  expect_one_error("[rate_limits.users.\"\"]\n", 1, 20, "invalid id");
  expect_one_error("[rate_limits.default]\nburst = \"lots\"\n", 2, 9, "expected a count");
}

TEST(ConfigErrors, SyntaxErrorHasLineAndColumn) {
  auto errors = parse_errors("[bounds]\nmax_connections = = 3\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].line, 2u);
  EXPECT_GT(errors[0].column, 1u);
  EXPECT_FALSE(errors[0].message.empty());
  auto dup = parse_errors("[bounds]\nmax_watchers = 1\nmax_watchers = 2\n");
  ASSERT_EQ(dup.size(), 1u);
  EXPECT_EQ(dup[0].line, 3u);
}

TEST(ConfigErrors, AllErrorsAreReportedInFileOrder) {
  auto errors = parse_errors(R"([socket]
mode = "999"
[quota]
on_timeout = "explode"
max_cost = "x"
[alerts]
thresholds = [80, 120]
[plans.p]
reset = "yearly"
[bounds]
max_conections = 1
)");
  std::vector<uint32_t> lines;
  for (const auto& e : errors) lines.push_back(e.line);
  EXPECT_EQ(lines, (std::vector<uint32_t>{2, 4, 5, 7, 9, 11}));
  EXPECT_NE(errors[0].message.find("bad socket mode \"999\""), std::string::npos);
  EXPECT_NE(errors[1].message.find("unknown action \"explode\""), std::string::npos);
  EXPECT_NE(errors[2].message.find("malformed decimal \"x\""), std::string::npos);
  EXPECT_NE(errors[3].message.find("got 120"), std::string::npos);
  EXPECT_NE(errors[4].message.find("unknown reset period \"yearly\""), std::string::npos);
  EXPECT_NE(errors[5].message.find("did you mean 'max_connections'"), std::string::npos);
}

TEST(ConfigErrors, ToStringAndMissingFile) {
  ConfigError e{"/etc/budgetd/budgetd.toml", 12, 5, "bounds.max_connections: expected an integer"};
  EXPECT_EQ(e.to_string(),
            "/etc/budgetd/budgetd.toml:12:5: bounds.max_connections: expected an integer");
  ResourceRegistry reg;
  auto c = load_config("/nonexistent/budgetd.toml", reg);
  ASSERT_FALSE(c.has_value());
  ASSERT_EQ(c.error().size(), 1u);
  EXPECT_EQ(c.error()[0].file, "/nonexistent/budgetd.toml");
  EXPECT_EQ(c.error()[0].line, 0u);
  EXPECT_EQ(c.error()[0].to_string(),
            "/nonexistent/budgetd.toml: cannot open: No such file or directory");
}

TEST(ConfigErrors, LoadedFileErrorsNameTheFile) {
  auto dir = std::filesystem::temp_directory_path() /
             ("budgetd_config_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto path = (dir / "bad.toml").string();
  std::ofstream(path) << "[quota]\nmax_iterations = -1\n";
  ResourceRegistry reg;
  auto c = load_config(path, reg);
  std::filesystem::remove_all(dir);
  ASSERT_FALSE(c.has_value());
  ASSERT_EQ(c.error().size(), 1u);
  EXPECT_EQ(c.error()[0].to_string().rfind(path + ":2:18: quota.max_iterations: must be >= 0", 0),
            0u)
      << c.error()[0].to_string();
}

// ---- [store] ---------------------------------------------------------------------------

TEST(ConfigStore, EveryKey) {
  Config c = parse_ok(R"(
[store]
state_dir = "/srv/budgetd"
durability = "batch"
batch_window_ms = 250
retention_days = 7
idempotency_retention_hours = 48
max_size_mb = 512
)");
  EXPECT_EQ(c.store.max_size_mb, 512u);
  EXPECT_EQ(parse_ok("").store.max_size_mb, 0u) << "no cap by default";
  EXPECT_EQ(c.state_dir, "/srv/budgetd");
  EXPECT_EQ(c.store.durability, StoreConfig::Durability::batch);
  EXPECT_EQ(c.store.batch_window_ms, 250u);
  EXPECT_EQ(c.store.retention_days, 7u);
  EXPECT_EQ(c.store.idempotency_retention_hours, 48u);
  EXPECT_EQ(parse_ok("[store]\ndurability = \"none\"\n").store.durability,
            StoreConfig::Durability::none);
  EXPECT_EQ(parse_ok("[store]\ndurability = \"ack\"\n").store.durability,
            StoreConfig::Durability::ack);
  // The bounds themselves are accepted.
  Config edges = parse_ok(
      "[store]\nbatch_window_ms = 1000\nretention_days = 36500\nidempotency_retention_hours = "
      "87600\n");
  EXPECT_EQ(edges.store.batch_window_ms, 1000u);
  EXPECT_EQ(edges.store.retention_days, 36500u);
  EXPECT_EQ(edges.store.idempotency_retention_hours, 87600u);
  EXPECT_EQ(parse_ok("[store]\nbatch_window_ms = 1\n").store.batch_window_ms, 1u);
}

TEST(ConfigStore, DurabilityNamesRoundTrip) {
  for (auto d : {StoreConfig::Durability::ack, StoreConfig::Durability::batch,
                 StoreConfig::Durability::none})
    EXPECT_EQ(parse_durability(durability_name(d)), d);
  EXPECT_EQ(durability_name(StoreConfig::Durability::batch), "batch");
  EXPECT_EQ(parse_durability("fsync"), std::nullopt);
  EXPECT_EQ(parse_durability("ACK"), std::nullopt);
}

TEST(ConfigStore, TopLevelStateDirStillWorksButNotAlongsideStore) {
  EXPECT_EQ(parse_ok("state_dir = \"/a\"\n").state_dir, "/a");
  EXPECT_EQ(parse_ok("[store]\nstate_dir = \"/b\"\n").state_dir, "/b");
  expect_one_error("state_dir = \"/a\"\n[store]\nstate_dir = \"/b\"\n", 1, 13,
                   "state_dir: also set as store.state_dir on line 3; keep one");
}

TEST(ConfigStore, IdempotencyCannotOutliveTheRecords) {
  expect_one_error("[store]\nretention_days = 1\nidempotency_retention_hours = 48\n", 3, 31,
                   "store.idempotency_retention_hours: 48 hours is longer than store.retention_days (1 days), "
                   "for which the store keeps replies at most");
  EXPECT_EQ(parse_ok("[store]\nretention_days = 2\nidempotency_retention_hours = 48\n").store.idempotency_retention_hours,
            48u);
}

TEST(ConfigStore, Errors) {
  expect_one_error("[store]\ndurability = \"fsync\"\n", 2, 14,
                   "store.durability: unknown durability \"fsync\" (expected ack, batch or none)");
  expect_one_error("[store]\ndurability = 1\n", 2, 14,
                   "store.durability: expected a string, got an integer");
  expect_one_error("[store]\nbatch_window_ms = 0\n", 2, 19,
                   "store.batch_window_ms: must be between 1 and 1000, got 0");
  expect_one_error("[store]\nbatch_window_ms = 1001\n", 2, 19,
                   "store.batch_window_ms: must be between 1 and 1000, got 1001");
  expect_one_error("[store]\nbatch_window_ms = \"10\"\n", 2, 19,
                   "store.batch_window_ms: expected an integer, got a string");
  expect_one_error("[store]\nretention_days = 0\n", 2, 18,
                   "store.retention_days: must be between 1 and 36500, got 0");
  expect_one_error("[store]\nretention_days = 36501\n", 2, 18, "got 36501");
  expect_one_error("[store]\nidempotency_retention_hours = 0\n", 2, 31,
                   "store.idempotency_retention_hours: must be between 1 and 87600, got 0");
  expect_one_error("[store]\nidempotency_retention_hours = 1.5\n", 2, 31,
                   "expected an integer, got a float");
  expect_one_error("[store]\nstate_dir = 5\n", 2, 13,
                   "store.state_dir: expected a string, got an integer");
  expect_one_error("[store]\nstate_dir = \"/a\\u0000b\"\n", 2, 13, "contains a NUL byte");
  expect_one_error("[store]\nretension_days = 3\n", 2, 1,
                   "unknown key 'store.retension_days' (did you mean 'retention_days'?)");
  expect_one_error("store = 1\n", 1, 9, "store: expected a table, got an integer");
}

// ---- [pricing] -------------------------------------------------------------------------

TEST(ConfigPricing, OverridesAndAdditionsOverTheDefaults) {
  Config c = parse_ok(R"(
[pricing.resources.token]
unit_cost = "0.003"

[pricing.resources.storage]
unit = "TB"
unit_cost = 100

[pricing.resources.gpu_hours]
unit = "hour"
unit_cost = "2.50"

[pricing.resources.embedding]
unit = "1000000 tokens"
unit_cost = "0.02"

[pricing.resources.frames]
unit = "frames"
unit_size = "0.5"
unit_cost = "1"

[pricing.models."anthropic/claude-3-5-sonnet"]
input_per_1k = "0.003"
output_per_1k = "0.015"

[pricing.models.cheap]
input_per_1k = 0
output_per_1k = "0.0000001"

[pricing.actions]
translate = 7
classify = "0.5"
)");
  const auto& r = c.prices.resources();
  // Fields left out keep the shipped values.
  EXPECT_EQ(r.at("token"), (UnitPrice{"1000 tokens", D("1000"), D("0.003")}));
  EXPECT_EQ(r.at("storage"), (UnitPrice{"TB", D("1"), D("100")}));
  EXPECT_EQ(r.at("agent_execution"), PriceTable::defaults().resources().at("agent_execution"));
  EXPECT_EQ(r.at("gpu_hours"), (UnitPrice{"hour", D("1"), D("2.5")}));
  // A unit label's leading count is its size.
  EXPECT_EQ(r.at("embedding"), (UnitPrice{"1000000 tokens", D("1000000"), D("0.02")}));
  EXPECT_EQ(r.at("frames"), (UnitPrice{"frames", D("0.5"), D("1")}));
  EXPECT_EQ(r.size(), 7u);
  ASSERT_EQ(c.prices.models().size(), 2u);
  EXPECT_EQ(c.prices.models().at("anthropic/claude-3-5-sonnet"),
            (ModelPrice{D("0.003"), D("0.015")}));
  EXPECT_EQ(c.prices.models().at("cheap"), (ModelPrice{D("0"), D("0.0000001")}));
  EXPECT_EQ(c.prices.actions().at("translate"), D("7"));
  EXPECT_EQ(c.prices.actions().at("summarize"), D("2"));
  EXPECT_EQ(c.prices.actions().at("classify"), D("0.5"));
  EXPECT_EQ(c.prices.action_tokens("classify", 1001).value(), 1u);
  // Prices from config price exactly.
  EXPECT_EQ(c.prices.price("embedding", D("1"))->total_cost.to_string(), "0.00000002");
}

TEST(ConfigPricing, UnitSizeMayRestateTheLabelsCount) {
  Config c = parse_ok(
      "[pricing.resources.token]\nunit = \"1000 tokens\"\nunit_size = 1000\nunit_cost = "
      "\"0.002\"\n");
  EXPECT_EQ(c.prices.resources().at("token"), PriceTable::defaults().resources().at("token"));
  // A new label without a count resets the size to 1 rather than keeping the old 1000.
  EXPECT_EQ(
      parse_ok("[pricing.resources.token]\nunit = \"token\"\n").prices.resources().at("token"),
      (UnitPrice{"token", D("1"), D("0.002")}));
}

TEST(ConfigPricing, Errors) {
  // Amounts.
  expect_one_error("[pricing.resources.token]\nunit_cost = 0.002\n", 2, 13,
                   "pricing.resources.token.unit_cost: floats are inexact and not accepted for "
                   "prices");
  expect_one_error("[pricing.resources.token]\nunit_cost = \"0.0.2\"\n", 2, 13,
                   "pricing.resources.token.unit_cost: malformed decimal \"0.0.2\"");
  expect_one_error("[pricing.resources.token]\nunit_cost = \"unlimited\"\n", 2, 13,
                   "malformed decimal \"unlimited\"");
  expect_one_error("[pricing.resources.token]\nunit_cost = \"0.0000000000001\"\n", 2, 13,
                   "at most 12 digits");
  expect_one_error("[pricing.resources.token]\nunit_cost = \"-1\"\n", 2, 13,
                   "pricing.resources.token.unit_cost: must be >= 0, got \"-1\"");
  expect_one_error("[pricing.resources.token]\nunit_cost = -1\n", 2, 13, "must be >= 0, got -1");
  expect_one_error("[pricing.resources.token]\nunit_cost = \"10000000.01\"\n", 2, 13,
                   "must be at most 10000000, got 10000000.01");
  expect_one_error("[pricing.resources.token]\nunit_cost = true\n", 2, 13,
                   "expected an integer or a decimal string, got a boolean");
  // Sizes and labels.
  expect_one_error("[pricing.resources.token]\nunit_size = 0\n", 2, 13,
                   "pricing.resources.token.unit_size: must be above 0");
  expect_one_error("[pricing.resources.token]\nunit_size = 10000001\n", 2, 13,
                   "must be at most 10000000");
  expect_one_error("[pricing.resources.token]\nunit = \"1000 tokens\"\nunit_size = 1\n", 3, 13,
                   "pricing.resources.token.unit_size: 1 disagrees with the unit \"1000 tokens\" "
                   "(which counts 1000)");
  // The shipped label of token ("1000 tokens") is checked too.
  expect_one_error("[pricing.resources.token]\nunit_size = 100\n", 2, 13, "disagrees");
  expect_one_error("[pricing.resources.token]\nunit = \"\"\n", 2, 8,
                   "pricing.resources.token.unit: a unit label is 1 to 64 bytes");
  expect_one_error("[pricing.resources.token]\nunit = \"0 tokens\"\n", 2, 8,
                   "\"0 tokens\" counts 0; a unit counts more than 0");
  expect_one_error("[pricing.resources.token]\nunit = 1000\n", 2, 8,
                   "expected a string, got an integer");
  // Names and structure.
  expect_one_error("[pricing.resources.gpu]\nunit = \"hour\"\n", 1, 1,
                   "pricing.resources.gpu: missing 'unit_cost'");
  expect_one_error("[pricing.resources.GPU]\nunit_cost = 1\n", 1, 20,
                   "pricing.resources.GPU: invalid resource name 'GPU'");
  expect_one_error("[pricing.resources.tokens_in]\nunit_cost = 1\n", 1, 20,
                   "tokens_in has no price of its own");
  expect_one_error("[pricing.resources.cost]\nunit_cost = 1\n", 1, 20,
                   "cost has no price of its own");
  expect_one_error("[pricing.resources.token]\nunit_cots = 1\n", 2, 1,
                   "unknown key 'pricing.resources.token.unit_cots' (did you mean 'unit_cost'?)");
  expect_one_error("[pricing.resources]\ntoken = 1\n", 2, 9,
                   "pricing.resources.token: expected a table, got an integer");
  expect_one_error("[pricing]\nresource = {}\n", 2, 1,
                   "unknown key 'pricing.resource' (did you mean 'resources'?)");
  expect_one_error("pricing = \"cheap\"\n", 1, 11, "pricing: expected a table, got a string");
  // Models.
  expect_one_error("[pricing.models.m]\ninput_per_1k = \"0.1\"\n", 1, 1,
                   "pricing.models.m: missing 'output_per_1k'");
  expect_one_error("[pricing.models.m]\ninput_per_1k = \"0.1\"\noutput_per_1k = 0.2\n", 3, 17,
                   "pricing.models.m.output_per_1k: floats are inexact");
  expect_one_error("[pricing.models.\"gpt 4\"]\ninput_per_1k = 1\noutput_per_1k = 1\n", 1, 17,
                   "pricing.models.gpt 4: invalid model name 'gpt 4'");
  expect_one_error("[pricing.models.m]\ninput_per_1k = 1\noutput_per_1k = 1\ncached_per_1k = 1\n",
                   4, 1, "unknown key 'pricing.models.m.cached_per_1k'");
  // Actions.
  expect_one_error("[pricing.actions]\ntranslate = 5.5\n", 2, 13,
                   "pricing.actions.translate: floats are inexact");
  expect_one_error("[pricing.actions]\ntranslate = 1000001\n", 2, 13,
                   "must be at most 1000000, got 1000001");
  expect_one_error("[pricing.actions]\nTranslate = 5\n", 2, 1,
                   "pricing.actions.Translate: invalid action name 'Translate'");
  expect_one_error("[pricing.actions]\ntranslate = \"-5\"\n", 2, 13, "must be >= 0");
}

TEST(ConfigPricing, ModelMissingBothPricesReportsBoth) {
  auto errors = parse_errors("[pricing.models.m]\n");
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_NE(errors[0].message.find("missing 'input_per_1k'"), std::string::npos);
  EXPECT_NE(errors[1].message.find("missing 'output_per_1k'"), std::string::npos);
}

// A bad field is one error at its place; the good table after it adds none.
TEST(ConfigPricing, OneBadFieldIsOneError) {
  auto errors = parse_errors(
      "[pricing.resources.token]\nunit = \"1000 tokens\"\nunit_cost = \"x\"\n"
      "[pricing.resources.storage]\nunit_cost = \"0.2\"\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].line, 3u);
  EXPECT_EQ(errors[0].column, 13u);
}

// 0 when default_state_dir's non-root choices hold in the calling process, else the
// number of the check that failed.
int check_user_state_dirs() {
  ::unsetenv("STATE_DIRECTORY");
  ::setenv("XDG_STATE_HOME", "/home/u/.state", 1);
  if (default_state_dir() != "/home/u/.state/budgetd") return 1;
  ::setenv("XDG_STATE_HOME", "relative/path", 1);  // ignored, per the XDG spec
  ::setenv("HOME", "/home/u", 1);
  if (default_state_dir() != "/home/u/.local/state/budgetd") return 2;
  ::unsetenv("XDG_STATE_HOME");
  if (default_state_dir() != "/home/u/.local/state/budgetd") return 3;
  ::unsetenv("HOME");
  if (default_state_dir() != "./state") return 4;
  ::setenv("STATE_DIRECTORY", "/var/lib/other:/var/lib/second", 1);
  if (default_state_dir() != "/var/lib/other") return 5;
  return 0;
}

TEST(ConfigStore, DefaultStateDir) {
  const char* old = std::getenv("STATE_DIRECTORY");
  std::string saved = old ? old : "";
  ::setenv("STATE_DIRECTORY", "/var/lib/budgetd-test", 1);
  EXPECT_EQ(default_state_dir(), "/var/lib/budgetd-test");
  ::unsetenv("STATE_DIRECTORY");
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // In a child: the checks change the environment, and as root they drop to nobody.
    if (::geteuid() == 0) {
      if (default_state_dir() != "/var/lib/budgetd") ::_exit(101);
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(100);
    }
    ::_exit(check_user_state_dirs());
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "100: could not drop to uid 65534; 101: root's default";
  if (old) ::setenv("STATE_DIRECTORY", saved.c_str(), 1);
}

// 0 when the non-root defaults hold in the calling process, else the number of the check
// that failed.
int check_user_socket_paths() {
  ::setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
  if (default_socket_path() != "/run/user/1234/budgetd/io.budgetd") return 1;
  ::setenv("XDG_RUNTIME_DIR", "", 1);
  if (default_socket_path() != "./run/io.budgetd") return 2;
  ::unsetenv("XDG_RUNTIME_DIR");
  if (default_socket_path() != "./run/io.budgetd") return 3;
  return 0;
}

TEST(ConfigSocket, DefaultSocketPath) {
  if (::geteuid() != 0) {
    const char* old = std::getenv("XDG_RUNTIME_DIR");
    std::string saved = old ? old : "";
    EXPECT_EQ(check_user_socket_paths(), 0);
    if (old) ::setenv("XDG_RUNTIME_DIR", saved.c_str(), 1);
    return;
  }
  ::setenv("XDG_RUNTIME_DIR", "/run/user/0", 1);
  EXPECT_EQ(default_socket_path(), "/run/budgetd/io.budgetd");  // root ignores XDG_RUNTIME_DIR
  ::unsetenv("XDG_RUNTIME_DIR");
  // The non-root branches, in a child that drops to nobody.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(100);
    ::_exit(check_user_socket_paths());
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "100: could not drop to uid 65534";
}

}  // namespace
}  // namespace budgetd::daemon
