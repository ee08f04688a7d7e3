// io.budgetd.Admin, driven through Service::handle exactly as the daemon drives it: one
// padded message in, one reply frame out, against a real Engine on a FakeClock and a
// FakeHooks standing in for the daemon.
#include <gtest/gtest.h>
#include <simdjson.h>

#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ipc/methods.h"
#include "ipc/service.h"
#include "lib/engine.h"

namespace budgetd::ipc {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kPermissionDenied = "io.budgetd.PermissionDenied";
constexpr std::string_view kInvalidParameter = "org.varlink.service.InvalidParameter";

// The daemon's part, recorded.
class FakeHooks final : public Hooks {
 public:
  Result<void> reload_result;
  Result<void> pause_result;
  int reloads = 0;
  std::vector<std::pair<std::string, bool>> pauses;  // (process, resume)
  std::vector<WatchFilter> watches;

  Result<void> reload() override {
    ++reloads;
    return reload_result;
  }
  Result<void> pause(std::string_view process, bool resume) override {
    pauses.emplace_back(std::string(process), resume);
    return pause_result;
  }
  void watch(const WatchFilter& filter) override { watches.push_back(filter); }
  void write_stats(JsonWriter& w) override {
    w.field("connections", uint64_t{3})
        .field("calls_per_second", 1.5)
        .field("uptime_seconds", uint64_t{42});
  }
  bool is_descendant(int32_t, int32_t) override { return false; }
  Result<void> track(std::string_view) override { return {}; }
};

// One reply frame, parsed. Paths are JSON pointers below "parameters" ("quota/max_cost").
class Answer {
 public:
  explicit Answer(std::string frame)
      : raw_(std::move(frame)), parser_(std::make_unique<simdjson::dom::parser>()) {
    framed_ = !raw_.empty() && raw_.back() == '\0' && raw_.find('\0') == raw_.size() - 1;
    if (framed_) raw_.pop_back();
    parsed_ = parser_->parse(raw_).get(doc_) == simdjson::SUCCESS;
  }

  bool valid() const { return framed_ && parsed_; }
  const std::string& raw() const { return raw_; }
  // The error name, or "" for a reply.
  std::string error() const {
    std::string_view e;
    if (!parsed_ || doc_["error"].get_string().get(e) != simdjson::SUCCESS) return {};
    return std::string(e);
  }
  bool continues() const {
    bool c = false;
    return parsed_ && doc_["continues"].get_bool().get(c) == simdjson::SUCCESS && c;
  }
  bool has(std::string_view path) const { return at(path).error() == simdjson::SUCCESS; }
  std::string str(std::string_view path) const {
    std::string_view v;
    if (at(path).get_string().get(v) != simdjson::SUCCESS)
      return "<no string at " + std::string(path) + ">";
    return std::string(v);
  }
  uint64_t u64(std::string_view path) const {
    uint64_t v = 0;
    EXPECT_EQ(at(path).get_uint64().get(v), simdjson::SUCCESS) << path << " in " << raw_;
    return v;
  }
  double dbl(std::string_view path) const {
    double v = 0;
    EXPECT_EQ(at(path).get_double().get(v), simdjson::SUCCESS) << path << " in " << raw_;
    return v;
  }
  bool boolean(std::string_view path) const {
    bool v = false;
    EXPECT_EQ(at(path).get_bool().get(v), simdjson::SUCCESS) << path << " in " << raw_;
    return v;
  }
  std::size_t size(std::string_view path) const {
    simdjson::dom::array a;
    if (at(path).get_array().get(a) != simdjson::SUCCESS) return SIZE_MAX;
    return a.size();
  }
  // The object of `array` whose `key` is `value`, as a path ("scope/resources/2"), or "".
  std::string find(std::string_view array, std::string_view key, std::string_view value) const {
    std::size_t n = size(array);
    for (std::size_t i = 0; n != SIZE_MAX && i < n; ++i) {
      std::string item = std::string(array) + "/" + std::to_string(i);
      if (str(item + "/" + std::string(key)) == value) return item;
    }
    return {};
  }

 private:
  simdjson::simdjson_result<simdjson::dom::element> at(std::string_view path) const {
    std::string pointer = "/parameters";
    if (!path.empty()) pointer += "/" + std::string(path);
    return doc_.at_pointer(pointer);
  }

  std::string raw_;
  std::unique_ptr<simdjson::dom::parser> parser_;
  simdjson::dom::element doc_;
  bool framed_ = false;
  bool parsed_ = false;
};

std::ostream& operator<<(std::ostream& os, const Answer& a) { return os << a.raw(); }

class AdminTest : public ::testing::Test {
 protected:
  AdminTest() { register_all(service_); }

  // Calls `method` ("AdjustQuota" for io.budgetd.Admin, or a full name) with `params` (JSON
  // text, or "" for none) and `flags` (",\"more\":true"). The message is followed by the
  // framer's padding, as the daemon's framer leaves it.
  Answer call(std::string_view method, std::string_view params = "", const Peer* peer = nullptr,
              std::string_view flags = "") {
    std::string json = "{\"method\":\"";
    if (method.find('.') == std::string_view::npos) json += "io.budgetd.Admin.";
    json += method;
    json += "\"";
    if (!params.empty()) json += ",\"parameters\":" + std::string(params);
    json += flags;
    json += "}";
    std::string message = json;
    message.push_back('\0');
    message.append(64, '\0');
    std::string out;
    auto outcome = service_.handle(std::string_view(message.data(), json.size()), engine_,
                                   peer ? *peer : op_, hooks_, out);
    EXPECT_EQ(outcome, Service::Outcome::replied) << json;
    Answer a(std::move(out));
    EXPECT_TRUE(a.valid()) << "not one well-formed reply frame: " << a.raw();
    return a;
  }
  Answer as_agent(std::string_view method, std::string_view params = "",
                  std::string_view flags = "") {
    return call(method, params, &agent_, flags);
  }

  void allocate(std::string_view pid, ResourceQuota q = {}, std::string_view scope = "/") {
    ASSERT_TRUE(engine_.allocate(pid, q, scope, 1000).value());
  }
  void record(std::string_view pid, uint64_t llm_calls, uint64_t tokens_in = 0) {
    UsageReport r;
    r.llm_calls = llm_calls;
    r.tokens_in = tokens_in;
    ASSERT_TRUE(engine_.record_usage(pid, r).has_value());
  }
  // A consumption of `amount` compute on org/acme, above its approval threshold of 10.
  uint64_t pending_request(std::string_view amount = "50") {
    ScopeUpdate u;
    u.limits[res::compute] = LimitSpec{Decimal::from_int(100), std::nullopt, Decimal::from_int(10)};
    EXPECT_TRUE(engine_.set_limits("org/acme", u).has_value());
    Answer a =
        call("io.budgetd.Agent.Consume", R"({"scope":"org/acme","resource":"compute","amount":")" +
                                             std::string(amount) + "\"}");
    EXPECT_EQ(a.str("status"), "PENDING") << a;
    return a.u64("request_id");
  }

  // Everything an Admin call could change, as operators see it plus what they do not.
  std::string snapshot() {
    std::string s;
    for (auto m :
         {"ListProcesses", "ListScopes", "ListTemplates", "ListPending", "Stats", "GetSystemUsage"})
      s += call(m).raw() + "\n";
    s += call("GetRateLimitUsage", R"({"user":"alice"})").raw() + "\n";
    s += call("GetRateLimitUsage", R"({"user":"alice","endpoint":"chat"})").raw() + "\n";
    const RateLimiter& rl = engine_.rate_limiter();
    s += std::to_string(rl.user_limits().size()) + " " +
         std::to_string(rl.endpoint_limits().size()) + " ";
    s += std::to_string(engine_.resources().size()) + " " +
         std::to_string(engine_.pending_events().size()) + " ";
    s += std::to_string(engine_.max_tokens_per_thread()) + " " +
         std::to_string(engine_.has_budget("t1")) + " ";
    s += std::to_string(hooks_.reloads) + " " + std::to_string(hooks_.pauses.size()) + " " +
         std::to_string(hooks_.watches.size());
    return s;
  }

  FakeClock clock_{TimePoint{std::chrono::seconds(1'700'000'000)}};  // 2023-11-14T22:13:20Z
  Engine engine_{clock_};
  Service service_{ServiceInfo{}};
  FakeHooks hooks_;
  Peer op_{0, 0, 1, true};
  Peer agent_{1000, 1000, 4242, false};
};

// ---- The interface and who may call it -------------------------------------------------

TEST_F(AdminTest, TheInterfaceIsServedAndListed) {
  Answer info = call("org.varlink.service.GetInfo");
  bool listed = false;
  for (std::size_t i = 0; i < info.size("interfaces"); ++i)
    listed = listed || info.str("interfaces/" + std::to_string(i)) == "io.budgetd.Admin";
  EXPECT_TRUE(listed) << info;
  Answer d =
      call("org.varlink.service.GetInterfaceDescription", R"({"interface":"io.budgetd.Admin"})");
  EXPECT_EQ(d.error(), "");
  EXPECT_NE(d.str("description").find("interface io.budgetd.Admin\n"), std::string::npos);
}

// Every method the interface file declares, as it declares them.
std::vector<std::string> declared_methods(const Service& s) {
  std::vector<std::string> out;
  std::string_view text = s.description("io.budgetd.Admin");
  std::size_t pos = 0;
  while ((pos = text.find("\nmethod ", pos)) != std::string_view::npos) {
    pos += 8;
    out.emplace_back(text.substr(pos, text.find('(', pos) - pos));
  }
  return out;
}

TEST_F(AdminTest, EveryDeclaredMethodIsImplemented) {
  auto methods = declared_methods(service_);
  const std::set<std::string> expected = {"AdjustQuota",
                                          "SetLimits",
                                          "GetScope",
                                          "ListScopes",
                                          "ListTemplates",
                                          "SetRateLimit",
                                          "GetRateLimitUsage",
                                          "ResetRateLimits",
                                          "CleanupExpired",
                                          "Reset",
                                          "ListProcesses",
                                          "GetSystemUsage",
                                          "Stats",
                                          "ListPending",
                                          "Approve",
                                          "Deny",
                                          "Pause",
                                          "Resume",
                                          "Reload",
                                          "Watch"};
  EXPECT_EQ(std::set<std::string>(methods.begin(), methods.end()), expected);
  for (const auto& m : methods) {
    Answer a = call(m, "", nullptr, m == "Watch" ? ",\"more\":true" : "");
    EXPECT_NE(a.error(), "org.varlink.service.MethodNotFound") << m;
  }
}

TEST_F(AdminTest, NonOperatorsArePermissionDeniedAndNothingChanges) {
  // State for every method to act on, some of it the caller's own: its pid's process.
  ResourceQuota q;
  q.max_llm_calls = 1;
  allocate("4242", q);
  record("4242", 1);
  allocate("env-1");
  const uint64_t id = pending_request();
  ASSERT_TRUE(engine_.get_budget("t1").has_value());
  ASSERT_TRUE(engine_.rate_limiter().check_rate_limit("alice", "default").has_value());
  engine_.take_events();
  const std::string before = snapshot();

  const std::string rid = std::to_string(id);
  const std::pair<std::string_view, std::string> calls[] = {
      {"AdjustQuota", R"({"process":"4242","quota":{"max_llm_calls":"100"}})"},
      {"SetLimits", R"({"path":"org/x","limits":[{"resource":"gpu","hard":"5"}],"reset":"daily"})"},
      {"SetLimits",
       R"({"template":"gold","kind":"plan","limits":[{"resource":"tokens","hard":"5"}]})"},
      {"SetLimits", R"({"path":"/","clear":true})"},
      {"GetScope", R"({"path":"org/acme"})"},
      {"ListScopes", ""},
      {"ListTemplates", ""},
      {"SetRateLimit", R"({"target":"default","requests_per_minute":1})"},
      {"SetRateLimit", R"({"target":"user","name":"alice","requests_per_minute":1})"},
      {"GetRateLimitUsage", R"({"user":"alice"})"},
      {"ResetRateLimits", R"({"user":"alice"})"},
      {"CleanupExpired", ""},
      {"Reset", R"({"process":"4242"})"},
      {"Reset", R"({"scope":"org/acme"})"},
      {"Reset", R"({"thread":"t1"})"},
      {"ListProcesses", ""},
      {"GetSystemUsage", ""},
      {"Stats", ""},
      {"ListPending", ""},
      {"Approve", R"({"request_id":)" + rid + "}"},
      {"Deny", R"({"request_id":)" + rid + "}"},
      {"Pause", R"({"process":"4242"})"},
      {"Resume", R"({"process":"4242"})"},
      {"Reload", ""},
      {"Watch", ""},
  };
  for (const auto& [method, params] : calls) {
    Answer a = as_agent(method, params, method == "Watch" ? ",\"more\":true" : "");
    EXPECT_EQ(a.error(), kPermissionDenied) << method << " " << a;
    EXPECT_NE(a.str("message"), "") << a;
  }
  // Wrong parameters from a non-operator are refused the same way: nothing is read first.
  EXPECT_EQ(as_agent("AdjustQuota", R"({"process":1})").error(), kPermissionDenied);
  EXPECT_EQ(as_agent("Watch").error(), kPermissionDenied);
  EXPECT_EQ(snapshot(), before);
  EXPECT_TRUE(engine_.pending_events().empty());
}

TEST_F(AdminTest, ParametersThatAreNotAnObjectAreInvalid) {
  Answer a = call("ListProcesses", "[1]");
  EXPECT_EQ(a.error(), kInvalidParameter);
  EXPECT_EQ(a.str("parameter"), "parameters");
}

TEST_F(AdminTest, AbsentNullAndEmptyParametersAreAcceptedWhereNothingIsRequired) {
  for (auto p : {"", "null", "{}"}) {
    EXPECT_EQ(call("ListTemplates", p).error(), "") << p;
    EXPECT_EQ(call("GetSystemUsage", p).error(), "") << p;
  }
}

// ---- AdjustQuota --------------------------------------------------------------------------

TEST_F(AdminTest, AdjustQuotaChangesTheQuotaLive) {
  allocate("p1");
  Answer a =
      call("AdjustQuota", R"({"process":"p1","quota":{"max_llm_calls":"100","max_tokens":5000,
                                     "max_cost":"2.50","on_timeout":"terminate"}})");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_EQ(a.str("quota/max_llm_calls"), "100");
  EXPECT_EQ(a.str("quota/max_tokens"), "5000");
  EXPECT_EQ(a.str("quota/max_cost"), "2.5");
  EXPECT_EQ(a.str("quota/on_timeout"), "terminate");
  EXPECT_TRUE(a.boolean("within"));
  EXPECT_FALSE(a.has("reason"));
  EXPECT_EQ(engine_.get_quota("p1")->max_llm_calls, 100u);
  EXPECT_EQ(engine_.get_quota("p1")->max_cost, Decimal::parse("2.5").value());
  // "unlimited", and an empty change that changes nothing.
  EXPECT_EQ(call("AdjustQuota", R"({"process":"p1","quota":{"max_llm_calls":"unlimited"}})")
                .str("quota/max_llm_calls"),
            "unlimited");
  EXPECT_EQ(call("AdjustQuota", R"({"process":"p1","quota":{}})").str("quota/max_llm_calls"),
            "unlimited");
}

TEST_F(AdminTest, AdjustQuotaReAdmitsARefusedProcess) {
  ResourceQuota q;
  q.max_llm_calls = 1;
  allocate("p1", q);
  record("p1", 1);
  Answer before = call("io.budgetd.Agent.CheckQuota", R"({"process":"p1"})");
  EXPECT_FALSE(before.boolean("within"));
  EXPECT_EQ(before.str("reason"), "max_llm_calls_exceeded");
  EXPECT_EQ(call("io.budgetd.Agent.Reserve", R"({"process":"p1","llm_calls":1})").error(),
            "io.budgetd.QuotaExceeded");

  Answer a = call("AdjustQuota", R"({"process":"p1","quota":{"max_llm_calls":"5"}})");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_TRUE(a.boolean("within"));

  EXPECT_TRUE(call("io.budgetd.Agent.CheckQuota", R"({"process":"p1"})").boolean("within"));
  Answer r = call("io.budgetd.Agent.Reserve", R"({"process":"p1","llm_calls":1})");
  EXPECT_EQ(r.error(), "") << r;
  EXPECT_TRUE(r.has("reservation_id"));
  // The change is an event for watchers.
  bool changed = false;
  for (const auto& e : engine_.take_events())
    changed = changed || (e.kind == EventKind::limit_changed && e.process == "p1");
  EXPECT_TRUE(changed);
}

TEST_F(AdminTest, AdjustQuotaCanRefuseNow) {
  allocate("p1");
  record("p1", 3);
  Answer a = call("AdjustQuota", R"({"process":"p1","quota":{"max_llm_calls":"2"}})");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_FALSE(a.boolean("within"));
  EXPECT_EQ(a.str("reason"), "max_llm_calls_exceeded");
}

TEST_F(AdminTest, AdjustQuotaErrors) {
  allocate("p1");
  const ResourceQuota original = *engine_.get_quota("p1");
  auto expect_error = [&](std::string_view params, std::string_view name) {
    Answer a = call("AdjustQuota", params);
    EXPECT_EQ(a.error(), name) << params << " -> " << a;
    return a;
  };
  expect_error(R"({"process":"nope","quota":{"max_llm_calls":"5"}})", "io.budgetd.ProcessNotFound");
  EXPECT_EQ(
      expect_error(R"({"process":"p1","quota":{"max_llm_call":"5"}})", "io.budgetd.UnknownField")
          .str("code"),
      "unknown_field");
  expect_error(R"({"process":"p1","quota":{"max_llm_calls":"lots"}})",
               "io.budgetd.InvalidArgument");
  expect_error(R"({"process":"p1","quota":{"on_timeout":"explode"}})",
               "io.budgetd.InvalidArgument");
  expect_error(R"({"process":"p1","quota":{"max_llm_calls":"-1"}})", "io.budgetd.InvalidArgument");
  expect_error(R"({"process":"p1","quota":{"max_llm_calls":"99999999999999999999999"}})",
               "io.budgetd.Overflow");
  // All or nothing: the good field is not applied either.
  expect_error(R"({"process":"p1","quota":{"max_llm_calls":"7","max_tool_calls":"many"}})",
               "io.budgetd.InvalidArgument");
  EXPECT_EQ(*engine_.get_quota("p1"), original);

  const std::pair<std::string_view, std::string_view> invalid[] = {
      {R"({"quota":{"max_llm_calls":"5"}})", "process"},
      {R"({"process":42,"quota":{}})", "process"},
      {R"({"process":"p1"})", "quota"},
      {R"({"process":"p1","quota":null})", "quota"},
      {R"({"process":"p1","quota":"max_llm_calls=5"})", "quota"},
      {R"({"process":"p1","quota":{"max_llm_calls":true}})", "quota.max_llm_calls"},
      {R"({"process":"p1","quota":{"max_cost":1.5}})", "quota.max_cost"},
      {R"({"process":"p1","quota":{"max_llm_calls":-3}})", "quota.max_llm_calls"},
  };
  for (auto [params, parameter] : invalid) {
    Answer a = expect_error(params, kInvalidParameter);
    EXPECT_EQ(a.str("parameter"), parameter) << params;
  }
  EXPECT_EQ(*engine_.get_quota("p1"), original);
}

// ---- SetLimits, GetScope, ListScopes, ListTemplates -------------------------------------

TEST_F(AdminTest, SetLimitsOnAScopeNode) {
  Answer a = call("SetLimits", R"({"path":"org/acme","reset":"daily",
      "limits":[{"resource":"tokens","hard":"1000","soft":"800"},{"resource":"cost","hard":"12.5"}]})");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_EQ(a.str("scope/path"), "org/acme");
  EXPECT_EQ(a.str("scope/reset"), "daily");
  EXPECT_EQ(a.str("scope/last_reset_at"), "2023-11-14T22:13:20Z");
  EXPECT_EQ(a.str("scope/next_reset_at"), "2023-11-15T00:00:00Z");
  EXPECT_FALSE(a.has("scope/plan"));
  EXPECT_FALSE(a.has("template"));
  std::string tokens = a.find("scope/resources", "resource", "tokens");
  ASSERT_NE(tokens, "") << a;
  EXPECT_EQ(a.str(tokens + "/hard"), "1000");
  EXPECT_EQ(a.str(tokens + "/soft"), "800");
  EXPECT_EQ(a.str(tokens + "/approval"), "unlimited");
  EXPECT_EQ(a.str(tokens + "/used"), "0");
  EXPECT_EQ(a.str(tokens + "/reserved"), "0");
  EXPECT_EQ(a.u64(tokens + "/percent"), 0u);
  EXPECT_EQ(a.str(a.find("scope/resources", "resource", "cost") + "/hard"), "12.5");

  // Usage below it shows in GetScope, with the percent of the hard limit.
  ResourceQuota q;
  q.max_input_tokens = kUnlimited;
  q.max_context_tokens = kUnlimited;
  allocate("p1", q, "org/acme");
  record("p1", 1, 500);
  Answer g = call("GetScope", R"({"path":"/org/acme"})");
  ASSERT_EQ(g.error(), "") << g;
  tokens = g.find("scope/resources", "resource", "tokens");
  EXPECT_EQ(g.str(tokens + "/used"), "500");
  EXPECT_EQ(g.u64(tokens + "/percent"), 50u);
  // A resource without a limit has no percent.
  std::string calls = g.find("scope/resources", "resource", "llm_calls");
  ASSERT_NE(calls, "") << g;
  EXPECT_EQ(g.str(calls + "/hard"), "unlimited");
  EXPECT_FALSE(g.has(calls + "/percent"));

  // Limits merge; clear drops the node's own first.
  Answer m =
      call("SetLimits", R"({"path":"org/acme","limits":[{"resource":"tokens","approval":"100"}]})");
  tokens = m.find("scope/resources", "resource", "tokens");
  EXPECT_EQ(m.str(tokens + "/hard"), "1000");
  EXPECT_EQ(m.str(tokens + "/approval"), "100");
  Answer c =
      call("SetLimits",
           R"({"path":"org/acme","clear":true,"limits":[{"resource":"cost","hard":"unlimited"}]})");
  tokens = c.find("scope/resources", "resource", "tokens");
  EXPECT_EQ(c.str(tokens + "/hard"), "unlimited");
  EXPECT_EQ(c.str(tokens + "/used"), "500");
  EXPECT_EQ(c.find("scope/resources", "resource", "cost"), "");  // no limit, no usage: not listed
  EXPECT_EQ(c.str("scope/reset"), "daily");  // reset is not a limit: clear keeps it
}

TEST_F(AdminTest, SetLimitsAttachesAndDetachesPlansAndTiers) {
  Answer a = call("SetLimits", R"({"path":"org/acme","plan":"pro","tier":"standard"})");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_EQ(a.str("scope/plan"), "pro");
  EXPECT_EQ(a.str("scope/tier"), "standard");
  // The tier's daily reset and its token limit win over the plan's.
  EXPECT_EQ(a.str("scope/reset"), "daily");
  EXPECT_EQ(a.str(a.find("scope/resources", "resource", "tokens") + "/hard"), "500");
  EXPECT_EQ(a.str(a.find("scope/resources", "resource", "api_call") + "/hard"), "100000");

  Answer d = call("SetLimits", R"({"path":"org/acme","tier":""})");
  EXPECT_FALSE(d.has("scope/tier"));
  EXPECT_EQ(d.str("scope/reset"), "monthly");
  EXPECT_EQ(d.str(d.find("scope/resources", "resource", "tokens") + "/hard"), "1000000");

  Answer e = call("SetLimits", R"({"path":"org/acme","plan":"platinum"})");
  EXPECT_EQ(e.error(), "io.budgetd.PlanNotFound");
  EXPECT_EQ(call("SetLimits", R"({"path":"org/acme","tier":"gold"})").error(),
            "io.budgetd.PlanNotFound");
  EXPECT_EQ(engine_.get_scope("org/acme")->plan, "pro");
}

TEST_F(AdminTest, SetLimitsDeclaresCustomResources) {
  const std::size_t before = engine_.resources().size();
  Answer a = call("SetLimits",
                  R"({"path":"lab","limits":[{"resource":"gpu_seconds","hard":"10.5","soft":3}]})");
  ASSERT_EQ(a.error(), "") << a;
  std::string gpu = a.find("scope/resources", "resource", "gpu_seconds");
  EXPECT_EQ(a.str(gpu + "/hard"), "10.5");
  EXPECT_EQ(a.str(gpu + "/soft"), "3");
  EXPECT_EQ(engine_.resources().size(), before + 1);
  // Agents can now consume it.
  Answer c =
      call("io.budgetd.Agent.Consume", R"({"scope":"lab","resource":"gpu_seconds","amount":"10"})");
  EXPECT_EQ(c.str("status"), "APPROVED") << c;
}

TEST_F(AdminTest, SetLimitsOnTemplates) {
  Answer a = call("SetLimits", R"({"template":"gold","kind":"plan","reset":"weekly",
      "limits":[{"resource":"cost","hard":"100","soft":"80"}]})");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_FALSE(a.has("scope"));
  EXPECT_EQ(a.str("template/name"), "gold");
  EXPECT_EQ(a.str("template/kind"), "plan");
  EXPECT_EQ(a.str("template/reset"), "weekly");
  ASSERT_EQ(a.size("template/limits"), 1u);
  EXPECT_EQ(a.str("template/limits/0/resource"), "cost");
  EXPECT_EQ(a.str("template/limits/0/hard"), "100");
  EXPECT_EQ(a.str("template/limits/0/soft"), "80");
  EXPECT_FALSE(a.has("template/limits/0/approval"));

  // A node on the plan sees it, and sees later changes to it at once.
  Answer n = call("SetLimits", R"({"path":"org/b","plan":"gold"})");
  EXPECT_EQ(n.str(n.find("scope/resources", "resource", "cost") + "/hard"), "100");
  Answer m = call("SetLimits",
                  R"({"template":"gold","kind":"plan","limits":[{"resource":"cost","hard":"200"},
      {"resource":"tokens","hard":"5"}]})");
  EXPECT_EQ(m.size("template/limits"), 2u);
  EXPECT_EQ(m.str(m.find("template/limits", "resource", "cost") + "/soft"), "80");
  Answer g = call("GetScope", R"({"path":"org/b"})");
  EXPECT_EQ(g.str(g.find("scope/resources", "resource", "cost") + "/hard"), "200");
  EXPECT_EQ(g.str("scope/reset"), "weekly");

  Answer c = call(
      "SetLimits",
      R"({"template":"gold","kind":"plan","clear":true,"limits":[{"resource":"tokens","hard":"7"}]})");
  ASSERT_EQ(c.size("template/limits"), 1u);
  EXPECT_EQ(c.str("template/limits/0/resource"), "tokens");

  // Shipped templates change too; a tier of the same name is a different template.
  Answer t =
      call("SetLimits",
           R"({"template":"free","kind":"tier","limits":[{"resource":"tokens","hard":"150"}]})");
  EXPECT_EQ(t.str("template/limits/0/hard"), "150");
  EXPECT_EQ(engine_.get_template(TemplateKind::plan, "free")->limits.at(res::tokens).hard,
            Decimal::from_int(100'000));
}

TEST_F(AdminTest, SetLimitsErrors) {
  auto expect_invalid = [&](std::string_view params, std::string_view parameter) {
    Answer a = call("SetLimits", params);
    EXPECT_EQ(a.error(), kInvalidParameter) << params << " -> " << a;
    EXPECT_EQ(a.str("parameter"), parameter) << params;
  };
  expect_invalid(R"({"limits":[]})", "path");
  expect_invalid(R"({"path":"a","template":"b","kind":"plan"})", "template");
  expect_invalid(R"({"path":7})", "path");
  expect_invalid(R"({"path":"a","kind":"plan"})", "kind");
  expect_invalid(R"({"path":"a","reset":"yearly"})", "reset");
  expect_invalid(R"({"path":"a","reset":1})", "reset");
  expect_invalid(R"({"path":"a","clear":"yes"})", "clear");
  expect_invalid(R"({"path":"a","plan":5})", "plan");
  expect_invalid(R"({"path":"a","limits":{"resource":"tokens"}})", "limits");
  expect_invalid(R"({"path":"a","limits":[{"hard":"5"}]})", "limits");
  expect_invalid(R"({"path":"a","limits":["tokens"]})", "limits");
  expect_invalid(R"({"path":"a","limits":[{"resource":"tokens","hard":true}]})", "limits");
  expect_invalid(R"({"path":"a","limits":[{"resource":"tokens","hard":"-1"}]})", "limits");
  expect_invalid(R"({"path":"a","limits":[{"resource":"tokens","soft":"1e3"}]})", "limits");
  expect_invalid(R"({"path":"a","limits":[{"resource":"cost","approval":0.5}]})", "limits");
  expect_invalid(R"({"template":"gold"})", "kind");
  expect_invalid(R"({"template":"gold","kind":"level"})", "kind");
  expect_invalid(R"({"template":"gold","kind":"plan","plan":"pro"})", "plan");
  expect_invalid(R"({"template":"gold","kind":"plan","tier":"free"})", "tier");

  const std::size_t resources = engine_.resources().size();
  auto expect_error = [&](std::string_view params, std::string_view name) {
    Answer a = call("SetLimits", params);
    EXPECT_EQ(a.error(), name) << params << " -> " << a;
  };
  expect_error(R"({"path":"a//b","limits":[{"resource":"gpu","hard":"1"}]})",
               "io.budgetd.InvalidArgument");
  expect_error(R"({"path":"a b"})", "io.budgetd.InvalidArgument");
  expect_error(R"({"path":"a","limits":[{"resource":"llm_calls","hard":"1.5"}]})",
               "io.budgetd.InvalidArgument");
  expect_error(R"({"path":"a","limits":[{"resource":"Bad Name","hard":"1"}]})",
               "io.budgetd.UnknownResource");
  expect_error(R"({"path":"a","plan":"nope","limits":[{"resource":"gpu","hard":"1"}]})",
               "io.budgetd.PlanNotFound");
  expect_error(R"({"template":"bad name","kind":"plan"})", "io.budgetd.InvalidArgument");
  expect_error(R"({"template":"gold","kind":"tier","limits":[{"resource":"tokens","hard":"0.5"}]})",
               "io.budgetd.InvalidArgument");
  // A refused call creates no node, no template and declares no resource.
  EXPECT_EQ(call("GetScope", R"({"path":"a"})").error(), "io.budgetd.ScopeNotFound");
  EXPECT_EQ(engine_.get_template(TemplateKind::tier, "gold"), nullptr);
  EXPECT_EQ(engine_.resources().size(), resources);
}

TEST_F(AdminTest, GetScopeErrors) {
  EXPECT_EQ(call("GetScope", R"({"path":"/"})").str("scope/path"), "/");
  EXPECT_FALSE(call("GetScope", R"({"path":"/"})").has("scope/next_reset_at"));
  EXPECT_EQ(call("GetScope", R"({"path":"nowhere"})").error(), "io.budgetd.ScopeNotFound");
  EXPECT_EQ(call("GetScope", R"({"path":"a//b"})").error(), "io.budgetd.InvalidArgument");
  Answer a = call("GetScope", "{}");
  EXPECT_EQ(a.error(), kInvalidParameter);
  EXPECT_EQ(a.str("parameter"), "path");
  EXPECT_EQ(call("GetScope", R"({"path":["/"]})").str("parameter"), "path");
}

TEST_F(AdminTest, ListScopesPages) {
  for (auto p : {"b", "a/x", "c"}) ASSERT_TRUE(engine_.set_limits(p, ScopeUpdate{}).has_value());
  Answer all = call("ListScopes");
  ASSERT_EQ(all.error(), "") << all;
  EXPECT_EQ(all.u64("total"), 5u);  // "/", "a", "a/x", "b", "c"
  ASSERT_EQ(all.size("scopes"), 5u);
  EXPECT_EQ(all.str("scopes/0/path"), "/");
  EXPECT_EQ(all.str("scopes/2/path"), "a/x");
  Answer page = call("ListScopes", R"({"offset":2,"limit":2})");
  ASSERT_EQ(page.size("scopes"), 2u);
  EXPECT_EQ(page.str("scopes/0/path"), "a/x");
  EXPECT_EQ(page.str("scopes/1/path"), "b");
  EXPECT_EQ(page.u64("total"), 5u);
  EXPECT_EQ(call("ListScopes", R"({"offset":9})").size("scopes"), 0u);
  EXPECT_EQ(call("ListScopes", R"({"offset":-1})").str("parameter"), "offset");
  EXPECT_EQ(call("ListScopes", R"({"limit":"all"})").str("parameter"), "limit");
}

TEST_F(AdminTest, ListTemplatesShowsTheShippedPlansAndTiers) {
  Answer a = call("ListTemplates");
  ASSERT_EQ(a.error(), "") << a;
  std::set<std::string> seen;
  for (std::size_t i = 0; i < a.size("templates"); ++i) {
    std::string t = "templates/" + std::to_string(i);
    seen.insert(a.str(t + "/kind") + ":" + a.str(t + "/name"));
    if (a.str(t + "/name") == "standard") {
      EXPECT_EQ(a.str(t + "/reset"), "daily");
      EXPECT_EQ(a.str(t + "/limits/0/resource"), "tokens");
      EXPECT_EQ(a.str(t + "/limits/0/hard"), "500");
    }
    if (a.str(t + "/name") == "enterprise" && a.str(t + "/kind") == "plan") {
      EXPECT_EQ(a.str(t + "/limits/0/hard"), "unlimited");
    }
  }
  EXPECT_EQ(seen, (std::set<std::string>{"plan:free", "plan:pro", "plan:enterprise", "tier:free",
                                         "tier:standard", "tier:enterprise"}));
}

// ---- Rate limits --------------------------------------------------------------------------

TEST_F(AdminTest, SetRateLimitForTheDefaultAUserAndAnEndpoint) {
  RateLimiter& rl = engine_.rate_limiter();
  Answer d = call("SetRateLimit", R"({"target":"default","requests_per_minute":5})");
  ASSERT_EQ(d.error(), "") << d;
  EXPECT_EQ(d.u64("limits/requests_per_minute"), 5u);
  EXPECT_EQ(d.u64("limits/requests_per_hour"), 1000u);  // absent: kept
  EXPECT_EQ(d.u64("limits/requests_per_day"), 10000u);
  EXPECT_EQ(d.u64("limits/burst"), 10u);
  EXPECT_EQ(rl.default_config().requests_per_minute, 5u);

  // A user without limits of its own starts from the default.
  Answer u =
      call("SetRateLimit", R"({"target":"user","name":"alice","requests_per_hour":2,"burst":0})");
  ASSERT_EQ(u.error(), "") << u;
  EXPECT_EQ(u.u64("limits/requests_per_minute"), 5u);
  EXPECT_EQ(u.u64("limits/requests_per_hour"), 2u);
  EXPECT_EQ(u.u64("limits/burst"), 0u);
  ASSERT_TRUE(rl.user_limits().contains("alice"));
  // ... and later from its own.
  Answer u2 = call("SetRateLimit", R"({"target":"user","name":"alice","requests_per_minute":9})");
  EXPECT_EQ(u2.u64("limits/requests_per_minute"), 9u);
  EXPECT_EQ(u2.u64("limits/requests_per_hour"), 2u);
  // The limits apply: the third request of the hour is refused.
  for (int i = 0; i < 2; ++i)
    EXPECT_FALSE(rl.check_rate_limit("alice", "default").value().exceeded);
  auto third = rl.check_rate_limit("alice", "default").value();
  EXPECT_TRUE(third.exceeded);
  EXPECT_EQ(third.limit_type, "hour");

  Answer e = call("SetRateLimit", R"({"target":"endpoint","name":"chat","requests_per_day":3})");
  ASSERT_EQ(e.error(), "") << e;
  EXPECT_EQ(e.u64("limits/requests_per_day"), 3u);
  EXPECT_EQ(rl.endpoint_limits().at("chat").requests_per_day, 3u);

  // clear removes the override; the reply is the default that now applies.
  Answer c = call("SetRateLimit", R"({"target":"user","name":"alice","clear":true})");
  ASSERT_EQ(c.error(), "") << c;
  EXPECT_EQ(c.u64("limits/requests_per_minute"), 5u);
  EXPECT_FALSE(rl.user_limits().contains("alice"));
  EXPECT_EQ(call("SetRateLimit", R"({"target":"endpoint","name":"chat","clear":true})").error(),
            "");
  EXPECT_TRUE(rl.endpoint_limits().empty());
}

TEST_F(AdminTest, SetRateLimitErrors) {
  const RateLimitConfig before = engine_.rate_limiter().default_config();
  const std::pair<std::string_view, std::string_view> invalid[] = {
      {R"({})", "target"},
      {R"({"target":"group","name":"x"})", "target"},
      {R"({"target":1})", "target"},
      {R"({"target":"default","name":"x"})", "name"},
      {R"({"target":"user","requests_per_minute":1})", "name"},
      {R"({"target":"endpoint"})", "name"},
      {R"({"target":"user","name":7})", "name"},
      {R"({"target":"default","requests_per_minute":-1})", "requests_per_minute"},
      {R"({"target":"default","requests_per_hour":"10"})", "requests_per_hour"},
      {R"({"target":"default","requests_per_day":1.5})", "requests_per_day"},
      {R"({"target":"default","burst":true})", "burst"},
      {R"({"target":"default","clear":true})", "clear"},
      {R"({"target":"user","name":"alice","clear":true,"burst":1})", "clear"},
      {R"({"target":"user","name":"alice","clear":"yes"})", "clear"},
  };
  for (auto [params, parameter] : invalid) {
    Answer a = call("SetRateLimit", params);
    EXPECT_EQ(a.error(), kInvalidParameter) << params << " -> " << a;
    EXPECT_EQ(a.str("parameter"), parameter) << params;
  }
  EXPECT_EQ(call("SetRateLimit", R"({"target":"user","name":"","requests_per_minute":1})").error(),
            "io.budgetd.InvalidArgument");
  EXPECT_EQ(call("SetRateLimit", R"({"target":"endpoint","name":"a\u0001b","burst":1})").error(),
            "io.budgetd.InvalidArgument");
  EXPECT_EQ(engine_.rate_limiter().default_config(), before);
  EXPECT_TRUE(engine_.rate_limiter().user_limits().empty());
  EXPECT_TRUE(engine_.rate_limiter().endpoint_limits().empty());
}

TEST_F(AdminTest, GetRateLimitUsageShowsEveryWindow) {
  RateLimiter& rl = engine_.rate_limiter();
  rl.set_default_config(RateLimitConfig{3, 100, 0, 10});  // no daily limit
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(rl.check_rate_limit("alice", "default").has_value());
  Answer a = call("GetRateLimitUsage", R"({"user":"alice"})");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_EQ(a.u64("minute/current"), 2u);
  EXPECT_EQ(a.u64("minute/limit"), 3u);
  EXPECT_EQ(a.u64("minute/remaining"), 1u);
  EXPECT_FALSE(a.boolean("minute/unlimited"));
  EXPECT_GT(a.u64("minute/reset_in_seconds"), 0u);
  EXPECT_EQ(a.u64("hour/current"), 2u);
  EXPECT_EQ(a.u64("hour/remaining"), 98u);
  EXPECT_EQ(a.u64("day/limit"), 0u);
  EXPECT_TRUE(a.boolean("day/unlimited"));
  EXPECT_FALSE(a.has("day/remaining"));
  EXPECT_EQ(a.u64("burst/current"), 2u);
  EXPECT_EQ(a.u64("limits/requests_per_minute"), 3u);
  EXPECT_EQ(a.u64("limits/requests_per_day"), 0u);

  // Another endpoint has its own windows and, with an override, its own limits.
  ASSERT_TRUE(rl.set_endpoint_limits("chat", RateLimitConfig{1, 1, 1, 1}).has_value());
  Answer e = call("GetRateLimitUsage", R"({"user":"alice","endpoint":"chat"})");
  EXPECT_EQ(e.u64("minute/current"), 0u);
  EXPECT_EQ(e.u64("minute/reset_in_seconds"), 0u);
  EXPECT_EQ(e.u64("limits/requests_per_minute"), 1u);
  // Asking records nothing.
  EXPECT_EQ(call("GetRateLimitUsage", R"({"user":"alice"})").u64("minute/current"), 2u);

  EXPECT_EQ(call("GetRateLimitUsage", "{}").str("parameter"), "user");
  EXPECT_EQ(call("GetRateLimitUsage", R"({"user":"alice","endpoint":3})").str("parameter"),
            "endpoint");
  EXPECT_EQ(call("GetRateLimitUsage", R"({"user":""})").error(), "io.budgetd.InvalidArgument");
}

TEST_F(AdminTest, ResetRateLimitsClearsAUsersWindows) {
  RateLimiter& rl = engine_.rate_limiter();
  ASSERT_TRUE(rl.check_rate_limit("alice", "default").has_value());
  ASSERT_TRUE(rl.check_rate_limit("alice", "chat").has_value());
  ASSERT_TRUE(rl.check_rate_limit("bob", "default").has_value());
  Answer a = call("ResetRateLimits", R"({"user":"alice"})");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_EQ(a.u64("cleared"), 8u);  // four windows on each of two endpoints
  EXPECT_EQ(rl.get_usage("alice").value().at("minute").current, 0u);
  EXPECT_EQ(rl.get_usage("bob").value().at("minute").current, 1u);
  EXPECT_EQ(call("ResetRateLimits", R"({"user":"alice"})").u64("cleared"), 0u);
  EXPECT_EQ(call("ResetRateLimits", "{}").str("parameter"), "user");
  EXPECT_EQ(call("ResetRateLimits", R"({"user":null})").str("parameter"), "user");
  EXPECT_EQ(call("ResetRateLimits", R"({"user":""})").error(), "io.budgetd.InvalidArgument");
}

TEST_F(AdminTest, CleanupExpiredDropsEmptyWindows) {
  ASSERT_TRUE(engine_.rate_limiter().check_rate_limit("alice", "default").has_value());
  EXPECT_EQ(call("CleanupExpired").u64("rate_limit_entries"), 0u);  // still counting
  // The day window keeps a request for up to a day and one bucket (2.4 h).
  clock_.advance(std::chrono::hours(27));
  Answer a = call("CleanupExpired");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_EQ(a.u64("rate_limit_entries"), 4u);
  EXPECT_EQ(engine_.rate_limiter().tracked_pairs(), 0u);
  EXPECT_EQ(call("CleanupExpired", "{}").u64("rate_limit_entries"), 0u);
}

// ---- Reset --------------------------------------------------------------------------------

TEST_F(AdminTest, ResetAScopeAThreadOrAProcess) {
  ResourceQuota q;
  q.max_llm_calls = 2;
  allocate("p1", q, "org/acme");
  record("p1", 2);
  ASSERT_TRUE(engine_.consume("t1", 10, 5).has_value());

  EXPECT_EQ(call("Reset", R"({"process":"p1"})").error(), "");
  EXPECT_EQ(engine_.get_usage("p1")->llm_calls, 0u);
  EXPECT_FALSE(engine_.check_quota("p1").value().has_value());  // re-admitted
  // What was used stays charged on the path until the scope itself is reset.
  auto used = [&] {
    auto v = engine_.get_scope("org/acme").value();
    for (const auto& s : v.resources)
      if (s.resource == "llm_calls") return s.used;
    return Decimal();
  };
  EXPECT_EQ(used(), Decimal::from_int(2));
  EXPECT_EQ(call("Reset", R"({"scope":"/org/acme"})").error(), "");
  EXPECT_EQ(used(), Decimal());

  EXPECT_EQ(engine_.get_thread_usage("t1")->total_tokens, 15u);
  EXPECT_EQ(call("Reset", R"({"thread":"t1"})").error(), "");
  EXPECT_FALSE(engine_.has_budget("t1"));
}

TEST_F(AdminTest, ResetErrors) {
  allocate("p1");
  const std::pair<std::string_view, std::string_view> invalid[] = {
      {R"({})", "scope"},
      {R"({"scope":null})", "scope"},
      {R"({"scope":"a","thread":"t"})", "thread"},
      {R"({"thread":"t","process":"p1"})", "process"},
      {R"({"scope":1})", "scope"},
      {R"({"process":false})", "process"},
  };
  for (auto [params, parameter] : invalid) {
    Answer a = call("Reset", params);
    EXPECT_EQ(a.error(), kInvalidParameter) << params << " -> " << a;
    EXPECT_EQ(a.str("parameter"), parameter) << params;
  }
  EXPECT_EQ(call("Reset", R"({"scope":"nowhere"})").error(), "io.budgetd.ScopeNotFound");
  EXPECT_EQ(call("Reset", R"({"scope":"a b"})").error(), "io.budgetd.InvalidArgument");
  EXPECT_EQ(call("Reset", R"({"thread":"nobody"})").error(), "io.budgetd.ThreadNotFound");
  Answer p = call("Reset", R"({"process":"nobody"})");
  EXPECT_EQ(p.error(), "io.budgetd.ProcessNotFound");
  EXPECT_EQ(p.str("code"), "unknown_process");
  EXPECT_NE(p.str("message").find("nobody"), std::string::npos);
}

// ---- Views --------------------------------------------------------------------------------

TEST_F(AdminTest, ListProcessesShowsUsageLimitsAndPercent) {
  ResourceQuota q;
  q.max_llm_calls = 10;
  q.max_cost = Decimal::from_int(2);
  allocate("p2", q, "org/acme");
  allocate("p1");
  allocate("p3");
  record("p2", 5, 100);
  ASSERT_TRUE(engine_
                  .reserve(Target{"p2", "", ""},
                           [] {
                             ChargeList c;
                             (void)c.add(res::llm_calls, Decimal::from_int(1));
                             return c;
                           }())
                  .value()
                  .admitted);
  clock_.advance(30s);

  Answer a = call("ListProcesses");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_EQ(a.u64("total"), 3u);
  ASSERT_EQ(a.size("processes"), 3u);
  EXPECT_EQ(a.str("processes/0/process"), "p1");
  const std::string p2 = "processes/1";
  EXPECT_EQ(a.str(p2 + "/process"), "p2");
  EXPECT_EQ(a.str(p2 + "/scope"), "org/acme");
  EXPECT_EQ(a.u64(p2 + "/owner"), 1000u);
  EXPECT_EQ(a.str(p2 + "/allocated_at"), "2023-11-14T22:13:20Z");
  EXPECT_TRUE(a.boolean(p2 + "/within"));
  EXPECT_EQ(a.u64(p2 + "/usage/llm_calls"), 5u);
  EXPECT_EQ(a.u64(p2 + "/usage/tokens"), 100u);
  EXPECT_DOUBLE_EQ(a.dbl(p2 + "/usage/elapsed_seconds"), 30.0);
  EXPECT_EQ(a.u64(p2 + "/reserved/llm_calls"), 1u);
  EXPECT_EQ(a.str(p2 + "/quota/max_llm_calls"), "10");
  EXPECT_EQ(a.str(p2 + "/quota/max_cost"), "2");

  std::string calls = a.find(p2 + "/resources", "resource", "llm_calls");
  EXPECT_EQ(a.str(calls + "/used"), "5");
  EXPECT_EQ(a.str(calls + "/limit"), "10");
  EXPECT_EQ(a.u64(calls + "/percent"), 50u);
  std::string tokens = a.find(p2 + "/resources", "resource", "tokens");
  EXPECT_EQ(a.str(tokens + "/limit"), "unlimited");
  EXPECT_FALSE(a.has(tokens + "/percent"));
  std::string cost = a.find(p2 + "/resources", "resource", "cost");
  EXPECT_EQ(a.str(cost + "/used"), "0");
  EXPECT_EQ(a.u64(cost + "/percent"), 0u);
  std::string elapsed = a.find(p2 + "/resources", "resource", "elapsed");
  EXPECT_EQ(a.str(elapsed + "/used"), "30");
  EXPECT_EQ(a.str(elapsed + "/limit"), "300");
  EXPECT_EQ(a.u64(elapsed + "/percent"), 10u);
  for (auto r : {"tool_calls", "agent_hops", "iterations"})
    EXPECT_NE(a.find(p2 + "/resources", "resource", r), "");

  // Over a limit: not within, and the reason.
  record("p3", 10);
  Answer over = call("ListProcesses", R"({"offset":2,"limit":5})");
  ASSERT_EQ(over.size("processes"), 1u);
  EXPECT_EQ(over.str("processes/0/process"), "p3");
  EXPECT_FALSE(over.boolean("processes/0/within"));
  EXPECT_EQ(over.str("processes/0/reason"), "max_llm_calls_exceeded");
  EXPECT_EQ(over.u64(over.find("processes/0/resources", "resource", "llm_calls") + "/percent"),
            100u);
  EXPECT_EQ(over.u64("total"), 3u);

  EXPECT_EQ(call("ListProcesses", R"({"limit":1})").size("processes"), 1u);
  EXPECT_EQ(call("ListProcesses", R"({"limit":"10"})").str("parameter"), "limit");
  EXPECT_EQ(call("ListProcesses", R"({"offset":1.5})").str("parameter"), "offset");
}

TEST_F(AdminTest, GetSystemUsage) {
  ResourceQuota q;
  q.max_llm_calls = 2;
  allocate("p1", q);
  allocate("p2");
  UsageReport r;
  r.llm_calls = 2;
  r.tool_calls = 3;
  r.tokens_in = 40;
  r.tokens_out = 2;
  r.cost = Decimal::parse("0.25").value();
  ASSERT_TRUE(engine_.record_usage("p1", r).has_value());
  Answer a = call("GetSystemUsage");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_EQ(a.u64("total_processes"), 2u);
  EXPECT_EQ(a.u64("active_processes"), 1u);
  EXPECT_EQ(a.u64("system_llm_calls"), 2u);
  EXPECT_EQ(a.u64("system_tool_calls"), 3u);
  EXPECT_EQ(a.u64("system_tokens_in"), 40u);
  EXPECT_EQ(a.u64("system_tokens_out"), 2u);
  EXPECT_EQ(a.str("system_cost"), "0.25");
}

TEST_F(AdminTest, StatsCombineTheEngineAndTheDaemon) {
  ScopeUpdate u;
  u.limits[res::compute] = LimitSpec{Decimal::from_int(10), std::nullopt, std::nullopt};
  ASSERT_TRUE(engine_.set_limits("lab", u).has_value());
  EXPECT_EQ(call("io.budgetd.Agent.Consume", R"({"scope":"lab","resource":"compute","amount":"4"})")
                .str("status"),
            "APPROVED");
  EXPECT_EQ(
      call("io.budgetd.Agent.Consume", R"({"scope":"lab","resource":"compute","amount":"40"})")
          .str("status"),
      "DENIED");
  EXPECT_EQ(call("io.budgetd.Agent.Consume",
                 R"({"scope":"lab","resource":"compute","amount":"40","allow_partial":true})")
                .str("status"),
            "PARTIAL");
  pending_request();
  Answer a = call("Stats");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_EQ(a.u64("total_events"), 4u);
  EXPECT_EQ(a.u64("consumed_count"), 1u);
  EXPECT_EQ(a.u64("rejected_count"), 1u);
  EXPECT_EQ(a.u64("partial"), 1u);
  EXPECT_EQ(a.u64("pending"), 1u);
  EXPECT_EQ(a.u64("daemon/connections"), 3u);
  EXPECT_DOUBLE_EQ(a.dbl("daemon/calls_per_second"), 1.5);
  EXPECT_EQ(a.u64("daemon/uptime_seconds"), 42u);
}

// ---- Pending consumption ------------------------------------------------------------------

TEST_F(AdminTest, ListPendingAndApprove) {
  EXPECT_EQ(call("ListPending").size("requests"), 0u);
  const uint64_t id = pending_request("50");
  Answer l = call("ListPending");
  ASSERT_EQ(l.size("requests"), 1u) << l;
  EXPECT_EQ(l.u64("requests/0/request_id"), id);
  EXPECT_EQ(l.str("requests/0/scope"), "org/acme");
  EXPECT_EQ(l.str("requests/0/resource"), "compute");
  EXPECT_EQ(l.str("requests/0/amount"), "50");
  EXPECT_FALSE(l.has("requests/0/process"));
  EXPECT_EQ(l.str("requests/0/created_at"), "2023-11-14T22:13:20Z");
  EXPECT_EQ(l.str("requests/0/expires_at"), "2023-11-14T23:13:20Z");
  engine_.take_events();

  Answer a = call("Approve", R"({"request_id":)" + std::to_string(id) + "}");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_EQ(a.str("status"), "APPROVED");
  EXPECT_EQ(a.str("granted"), "50");
  EXPECT_TRUE(a.has("remaining"));
  EXPECT_EQ(engine_.get_consumer_usage("org/acme", "compute").value().consumed,
            Decimal::from_int(50));
  EXPECT_EQ(call("ListPending").size("requests"), 0u);
  bool decided = false;
  for (const auto& e : engine_.take_events())
    decided =
        decided || (e.kind == EventKind::pending_decided && e.ref == id && e.outcome == "approved");
  EXPECT_TRUE(decided);
  // Decided once only.
  Answer again = call("Approve", R"({"request_id":)" + std::to_string(id) + "}");
  EXPECT_EQ(again.error(), "io.budgetd.RequestNotFound");
  EXPECT_EQ(call("Deny", R"({"request_id":)" + std::to_string(id) + "}").error(),
            "io.budgetd.RequestNotFound");
}

TEST_F(AdminTest, DenyFreesTheHold) {
  const uint64_t id = pending_request("30");
  Answer d = call("Deny", R"({"request_id":)" + std::to_string(id) + "}");
  ASSERT_EQ(d.error(), "") << d;
  EXPECT_EQ(d.str("status"), "DENIED");
  EXPECT_EQ(d.str("granted"), "0");
  auto usage = engine_.get_consumer_usage("org/acme", "compute").value();
  EXPECT_EQ(usage.consumed, Decimal());
  Answer s = call("GetScope", R"({"path":"org/acme"})");
  EXPECT_EQ(s.str(s.find("scope/resources", "resource", "compute") + "/reserved"), "0");
  EXPECT_EQ(call("Stats").u64("rejected_count"), 1u);
  EXPECT_EQ(call("Approve", R"({"request_id":)" + std::to_string(id) + "}").error(),
            "io.budgetd.RequestNotFound");
}

TEST_F(AdminTest, ApproveAndDenyErrors) {
  for (auto method : {"Approve", "Deny"}) {
    EXPECT_EQ(call(method, R"({"request_id":999})").error(), "io.budgetd.RequestNotFound")
        << method;
    for (auto params :
         {"{}", R"({"request_id":"1"})", R"({"request_id":-1})", R"({"request_id":1.5})"}) {
      Answer a = call(method, params);
      EXPECT_EQ(a.error(), kInvalidParameter) << method << params;
      EXPECT_EQ(a.str("parameter"), "request_id");
    }
  }
  // A reservation id is not a pending request.
  allocate("p1");
  ChargeList c;
  (void)c.add(res::llm_calls, Decimal::from_int(1));
  const uint64_t rid = engine_.reserve(Target{"p1", "", ""}, c).value().id;
  EXPECT_EQ(call("Approve", R"({"request_id":)" + std::to_string(rid) + "}").error(),
            "io.budgetd.RequestNotFound");
  EXPECT_EQ(engine_.hold_count(), 1u);
}

// ---- Pause, Resume, Reload, Watch -------------------------------------------------------

TEST_F(AdminTest, PauseAndResumeGoThroughTheDaemon) {
  allocate("4242");
  EXPECT_EQ(call("Pause", R"({"process":"4242"})").error(), "");
  EXPECT_EQ(call("Resume", R"({"process":"4242"})").error(), "");
  ASSERT_EQ(hooks_.pauses.size(), 2u);
  EXPECT_EQ(hooks_.pauses[0], (std::pair<std::string, bool>{"4242", false}));
  EXPECT_EQ(hooks_.pauses[1], (std::pair<std::string, bool>{"4242", true}));
}

TEST_F(AdminTest, PauseAndResumeErrors) {
  for (auto method : {"Pause", "Resume"}) {
    hooks_.pauses.clear();
    EXPECT_EQ(call(method, R"({"process":"999"})").error(), "io.budgetd.ProcessNotFound");
    EXPECT_TRUE(hooks_.pauses.empty());  // untracked: the daemon is not asked
    EXPECT_EQ(call(method, "{}").str("parameter"), "process");
    EXPECT_EQ(call(method, R"({"process":4242})").str("parameter"), "process");
  }
  allocate("env-1");
  hooks_.pause_result = fail(Errc::unknown_process, "env-1 has no OS process to signal");
  EXPECT_EQ(call("Pause", R"({"process":"env-1"})").error(), "io.budgetd.ProcessNotFound");
  allocate("4242");
  hooks_.pause_result = fail(Errc::invalid_state, "cannot send SIGSTOP to 4242: EPERM");
  Answer a = call("Resume", R"({"process":"4242"})");
  EXPECT_EQ(a.error(), "io.budgetd.InvalidState");
  EXPECT_NE(a.str("message").find("EPERM"), std::string::npos);
}

TEST_F(AdminTest, ReloadAndItsFailure) {
  Answer ok = call("Reload");
  EXPECT_EQ(ok.error(), "") << ok;
  EXPECT_EQ(hooks_.reloads, 1);
  hooks_.reload_result = fail(Errc::invalid_argument, "budgetd.toml:3:7: expected a number");
  Answer bad = call("Reload", "{}");
  EXPECT_EQ(bad.error(), "io.budgetd.ReloadFailed");
  EXPECT_EQ(bad.str("message"), "budgetd.toml:3:7: expected a number");
  EXPECT_EQ(hooks_.reloads, 2);
}

TEST_F(AdminTest, WatchNeedsMore) {
  Answer a = call("Watch");
  EXPECT_EQ(a.error(), "org.varlink.service.ExpectedMore");
  EXPECT_TRUE(hooks_.watches.empty());
  EXPECT_EQ(call("Watch", "", nullptr, ",\"more\":false").error(),
            "org.varlink.service.ExpectedMore");
  EXPECT_TRUE(hooks_.watches.empty());
}

TEST_F(AdminTest, WatchSubscribesToEverything) {
  Answer a = call("Watch", "{}", nullptr, ",\"more\":true");
  ASSERT_EQ(a.error(), "") << a;
  EXPECT_TRUE(a.continues());
  EXPECT_EQ(a.str("event/kind"), "watching");
  EXPECT_EQ(a.str("event/at"), "2023-11-14T22:13:20Z");
  ASSERT_EQ(hooks_.watches.size(), 1u);
  EXPECT_TRUE(hooks_.watches[0].everything);
}

TEST_F(AdminTest, OnewayCallsAreProcessedWithoutAReply) {
  allocate("p1");
  std::string json = R"({"method":"io.budgetd.Admin.AdjustQuota","oneway":true,)"
                     R"("parameters":{"process":"p1","quota":{"max_llm_calls":"77"}}})";
  std::string message = json + std::string(65, '\0');
  std::string out;
  EXPECT_EQ(
      service_.handle(std::string_view(message.data(), json.size()), engine_, op_, hooks_, out),
      Service::Outcome::replied);
  EXPECT_EQ(out, "");
  EXPECT_EQ(engine_.get_quota("p1")->max_llm_calls, 77u);
}

}  // namespace
}  // namespace budgetd::ipc
