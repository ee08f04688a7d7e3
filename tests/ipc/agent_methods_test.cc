// io.budgetd.Agent end to end: every method through Service::handle on a real Engine, its
// replies and errors as a client sees them, and who may do what (from the Peer only).
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "lib/engine.h"
#include "tests/ipc/test_support.h"

namespace budgetd::ipc::testsupport {
namespace {

constexpr std::string_view kQuotaExceeded = "io.budgetd.QuotaExceeded";
constexpr std::string_view kPermissionDenied = "io.budgetd.PermissionDenied";
constexpr std::string_view kInvalidParameter = "org.varlink.service.InvalidParameter";

// Another agent runtime: another uid, another pid.
constexpr Peer kOtherAgent{1001, 1001, 600, false};

// Every Violation / QuotaExceeded carries these, with these types.
void expect_violation_shape(const json& v) {
  ASSERT_TRUE(v.is_object()) << v;
  EXPECT_TRUE(v["reason"].is_string()) << v;
  EXPECT_TRUE(v["resource"].is_string()) << v;
  EXPECT_TRUE(v["used"].is_string()) << v;
  EXPECT_TRUE(v["limit"].is_string()) << v;
  EXPECT_TRUE(v["path"].is_string()) << v;
  EXPECT_TRUE(v["message"].is_string()) << v;
  EXPECT_FALSE(v["message"].get<std::string>().empty()) << v;
  if (v.contains("retry_after")) {
    EXPECT_TRUE(v["retry_after"].is_number()) << v;
  }
}

// ---- Allocate -------------------------------------------------------------------------

TEST(AgentAllocate, AllocatesOnceWithTheDefaultQuota) {
  Harness h;
  json r = h.agent("Allocate", {{"process", "4242"}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["allocated"], true);
  json q = params_of(r)["quota"];
  EXPECT_EQ(q["max_llm_calls"], "10");
  EXPECT_EQ(q["max_tool_calls"], "50");
  EXPECT_EQ(q["max_tokens"], "unlimited");
  EXPECT_EQ(q["max_cost"], "unlimited");
  EXPECT_EQ(q["timeout_seconds"], "300");
  EXPECT_EQ(q["on_timeout"], "none");
  // An OS pid is handed to the daemon to watch.
  EXPECT_EQ(h.hooks.tracked, std::vector<std::string>{"4242"});

  r = h.agent("Allocate", {{"process", "4242"}, {"quota", {{"max_llm_calls", "99"}}}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["allocated"], false);
  EXPECT_EQ(params_of(r)["quota"]["max_llm_calls"], "10");  // the existing budget stands
  EXPECT_EQ(h.hooks.tracked.size(), 1u);
}

TEST(AgentAllocate, QuotaFieldsAreApplied) {
  Harness h;
  json r = h.agent("Allocate", {{"process", "env-1"},
                                {"quota",
                                 {{"max_llm_calls", "5"},
                                  {"max_tool_calls", 7},
                                  {"max_tokens", "1000"},
                                  {"max_cost", "1.50"},
                                  {"timeout_seconds", "unlimited"},
                                  {"on_violation", "terminate"},
                                  {"on_timeout", "pause"}}}});
  ASSERT_EQ(error_of(r), "") << r;
  json q = params_of(r)["quota"];
  EXPECT_EQ(q["max_llm_calls"], "5");
  EXPECT_EQ(q["max_tool_calls"], "7");
  EXPECT_EQ(q["max_tokens"], "1000");
  EXPECT_EQ(q["max_cost"], "1.5");
  EXPECT_EQ(q["timeout_seconds"], "unlimited");
  EXPECT_EQ(q["on_violation"], "terminate");
  EXPECT_EQ(q["on_timeout"], "pause");
  EXPECT_EQ(q["max_iterations"], "3");  // absent: the default
  // A logical id is not an OS process: nothing for the daemon to watch.
  EXPECT_TRUE(h.hooks.tracked.empty());
  EXPECT_EQ(params_of(h.agent("GetQuota", {{"process", "env-1"}}))["quota"], q);
}

TEST(AgentAllocate, BadQuotaFieldsAreRefusedAndChangeNothing) {
  Harness h;
  // A value out of its domain.
  json r = h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"max_llm_calls", "lots"}}}});
  EXPECT_EQ(error_of(r), "io.budgetd.InvalidArgument") << r;
  EXPECT_TRUE(params_of(r)["code"].is_string()) << r;
  EXPECT_TRUE(params_of(r)["message"].is_string()) << r;
  r = h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"on_timeout", "explode"}}}});
  EXPECT_EQ(error_of(r), "io.budgetd.InvalidArgument") << r;
  r = h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"max_cost", "-1"}}}});
  EXPECT_EQ(error_of(r), "io.budgetd.InvalidArgument") << r;
  // A field of the wrong JSON type.
  r = h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"max_llm_calls", true}}}});
  EXPECT_EQ(error_of(r), kInvalidParameter) << r;
  EXPECT_EQ(params_of(r)["parameter"], "quota.max_llm_calls");
  r = h.agent("Allocate", {{"process", "env-1"}, {"quota", "big"}});
  EXPECT_EQ(error_of(r), kInvalidParameter) << r;
  EXPECT_EQ(params_of(r)["parameter"], "quota");
  // A field that does not exist: a typo must not silently leave a limit at its default.
  r = h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"max_llm_call", "1"}}}});
  EXPECT_EQ(error_of(r), "io.budgetd.UnknownField") << r;
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "env-1"}}))["tracked"], false);
}

TEST(AgentAllocate, InvalidIdOrScope) {
  Harness h;
  json r = h.agent("Allocate", {{"process", "has space"}});
  EXPECT_EQ(error_of(r), "io.budgetd.InvalidArgument") << r;
  r = h.agent("Allocate", {{"process", ""}});
  EXPECT_EQ(error_of(r), "io.budgetd.InvalidArgument") << r;
  r = h.agent("Allocate", {{"process", "env-1"}, {"scope", "bad path!"}});
  EXPECT_EQ(error_of(r), "io.budgetd.InvalidArgument") << r;
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "env-1"}}))["tracked"], false);
}

TEST(AgentAllocate, OperatorPlacesInAScope) {
  Harness h;
  json r = h.agent("Allocate", {{"process", "env-1"}, {"scope", "team-a/proj"}});
  ASSERT_EQ(error_of(r), "") << r;
  auto p = h.engine.get_process("env-1");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->scope, "team-a/proj");
}

TEST(AgentAllocate, ATrackFailureRefusesTheAllocation) {
  Harness h;
  h.hooks.track_result = fail(Errc::unknown_process, "4242");
  json r = h.agent("Allocate", {{"process", "4242"}});
  EXPECT_EQ(error_of(r), "io.budgetd.ProcessNotFound") << r;
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "4242"}}))["tracked"], false);
}

// ---- Release --------------------------------------------------------------------------

TEST(AgentRelease, ReturnsTheFinalUsage) {
  Harness h;
  h.agent("Allocate", {{"process", "env-1"}});
  h.agent("RecordUsage",
          {{"process", "env-1"}, {"llm_calls", 2}, {"tokens_in", 100}, {"cost", "0.25"}});
  h.clock.advance(std::chrono::seconds(3));
  json r = h.agent("Release", {{"process", "env-1"}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["released"], true);
  json u = params_of(r)["usage"];
  EXPECT_EQ(u["llm_calls"], 2);
  EXPECT_EQ(u["tokens_in"], 100);
  EXPECT_EQ(u["tokens"], 100);
  EXPECT_EQ(u["cost"], "0.25");
  EXPECT_DOUBLE_EQ(u["elapsed_seconds"].get<double>(), 3.0);
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "env-1"}}))["tracked"], false);

  r = h.agent("Release", {{"process", "env-1"}});
  EXPECT_EQ(params_of(r)["released"], false);
  EXPECT_FALSE(params_of(r).contains("usage"));
}

// ---- RecordUsage ----------------------------------------------------------------------

TEST(AgentRecordUsage, ReturnsUsageAndAutoCreates) {
  Harness h;
  json r = h.agent("RecordUsage", {{"process", "env-9"},
                                   {"llm_calls", 1},
                                   {"tool_calls", 2},
                                   {"agent_hops", 1},
                                   {"iterations", 1},
                                   {"tokens_in", 300},
                                   {"tokens_out", 200},
                                   {"cost", "0.000002"}});
  ASSERT_EQ(error_of(r), "") << r;
  json u = params_of(r)["usage"];
  EXPECT_EQ(u["llm_calls"], 1);
  EXPECT_EQ(u["tool_calls"], 2);
  EXPECT_EQ(u["agent_hops"], 1);
  EXPECT_EQ(u["iterations"], 1);
  EXPECT_EQ(u["tokens_in"], 300);
  EXPECT_EQ(u["tokens_out"], 200);
  EXPECT_EQ(u["tokens"], 500);
  EXPECT_EQ(u["cost"], "0.000002");
  EXPECT_TRUE(u["elapsed_seconds"].is_number());
  EXPECT_EQ(params_of(r)["violations"], json::array());
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "env-9"}}))["tracked"], true);
  // Integers are decimals too.
  r = h.agent("RecordUsage", {{"process", "env-9"}, {"cost", 1}});
  EXPECT_EQ(params_of(r)["usage"]["cost"], "1.000002");
}

TEST(AgentRecordUsage, AutoCreatedOsPidIsTracked) {
  Harness h;
  h.agent("RecordUsage", {{"process", "321"}, {"llm_calls", 1}});
  EXPECT_EQ(h.hooks.tracked, std::vector<std::string>{"321"});
  h.agent("RecordUsage", {{"process", "321"}, {"llm_calls", 1}});
  EXPECT_EQ(h.hooks.tracked.size(), 1u);
}

TEST(AgentRecordUsage, ViolationsCarryReasons) {
  Harness h;
  h.agent("Allocate",
          {{"process", "env-1"}, {"quota", {{"max_llm_calls", "2"}, {"max_tool_calls", "1"}}}});
  json r = h.agent("RecordUsage", {{"process", "env-1"}, {"llm_calls", 2}, {"tool_calls", 1}});
  ASSERT_EQ(error_of(r), "") << r;  // recording always succeeds: the usage happened
  json v = params_of(r)["violations"];
  ASSERT_TRUE(v.is_array());
  std::vector<std::string> reasons;
  for (const auto& x : v) {
    expect_violation_shape(x);
    reasons.push_back(x["reason"]);
  }
  EXPECT_NE(std::find(reasons.begin(), reasons.end(), "max_llm_calls_exceeded"), reasons.end())
      << v;
  EXPECT_NE(std::find(reasons.begin(), reasons.end(), "max_tool_calls_exceeded"), reasons.end())
      << v;
  for (const auto& x : v)
    if (x["reason"] == "max_llm_calls_exceeded") {
      EXPECT_EQ(x["resource"], "llm_calls");
      EXPECT_EQ(x["used"], "2");
      EXPECT_EQ(x["limit"], "2");
    }
  EXPECT_EQ(params_of(r)["usage"]["llm_calls"], 2);
}

TEST(AgentRecordUsage, PerCallCapViolation) {
  Harness h;
  h.agent("Allocate", {{"process", "env-1"}});
  json r = h.agent("RecordUsage", {{"process", "env-1"}, {"llm_calls", 1}, {"tokens_in", 5000}});
  ASSERT_EQ(error_of(r), "") << r;
  json v = params_of(r)["violations"];
  ASSERT_EQ(v.size(), 1u) << v;
  expect_violation_shape(v[0]);
  EXPECT_EQ(v[0]["reason"], "max_input_tokens_exceeded");
  EXPECT_EQ(v[0]["limit"], "4096");
  EXPECT_EQ(params_of(r)["usage"]["tokens_in"], 5000);
}

TEST(AgentRecordUsage, AmountsOfBuiltInAndCustomResources) {
  Harness h;
  ASSERT_TRUE(h.engine.resources().intern("gpu_seconds"));  // an operator-declared resource
  h.agent("Allocate", {{"process", "env-1"}, {"scope", "team"}});
  json r = h.agent("RecordUsage",
                   {{"process", "env-1"},
                    {"amounts", json::array({{{"resource", "gpu_seconds"}, {"amount", "1.5"}},
                                             {{"resource", "compute"}, {"amount", 2}}})}});
  ASSERT_EQ(error_of(r), "") << r;
  auto scope = h.engine.get_scope("team");
  ASSERT_TRUE(scope);
  bool gpu = false, compute = false;
  for (const auto& s : scope->resources) {
    if (s.resource == "gpu_seconds") gpu = s.used == *Decimal::parse("1.5");
    if (s.resource == "compute") compute = s.used == Decimal::from_int(2);
  }
  EXPECT_TRUE(gpu);
  EXPECT_TRUE(compute);
}

TEST(AgentRecordUsage, UnknownResourceChangesNothing) {
  Harness h;
  json r = h.agent("RecordUsage", {{"process", "env-1"},
                                   {"llm_calls", 1},
                                   {"amounts", {{{"resource", "unobtainium"}, {"amount", "1"}}}}});
  EXPECT_EQ(error_of(r), "io.budgetd.UnknownResource") << r;
  EXPECT_TRUE(params_of(r)["message"].is_string());
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "env-1"}}))["tracked"], false);
}

TEST(AgentRecordUsage, MalformedAmounts) {
  Harness h;
  json r = h.agent("RecordUsage", {{"process", "env-1"},
                                   {"amounts", {{{"resource", "compute"}, {"amount", 1.5}}}}});
  EXPECT_EQ(error_of(r), kInvalidParameter) << r;
  EXPECT_EQ(params_of(r)["parameter"], "amounts");
  r = h.agent("RecordUsage", {{"process", "env-1"}, {"amounts", "lots"}});
  EXPECT_EQ(params_of(r)["parameter"], "amounts");
  r = h.agent("RecordUsage", {{"process", "env-1"}, {"amounts", json::array({5})}});
  EXPECT_EQ(params_of(r)["parameter"], "amounts");
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "env-1"}}))["tracked"], false);
}

TEST(AgentRecordUsage, ThreadIsCharged) {
  Harness h;
  h.agent("RecordUsage", {{"process", "env-1"},
                          {"thread", "t-1"},
                          {"llm_calls", 1},
                          {"tokens_in", 10},
                          {"tokens_out", 5}});
  auto t = h.engine.get_thread_usage("t-1");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->total_tokens, 15u);
}

// ---- CheckQuota -----------------------------------------------------------------------

TEST(AgentCheckQuota, WithinAndNot) {
  Harness h;
  h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"max_llm_calls", "2"}}}});
  json r = h.agent("CheckQuota", {{"process", "env-1"}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r), json({{"within", true}}));

  h.agent("RecordUsage", {{"process", "env-1"}, {"llm_calls", 2}});
  r = h.agent("CheckQuota", {{"process", "env-1"}});
  EXPECT_EQ(params_of(r)["within"], false);
  EXPECT_EQ(params_of(r)["reason"], "max_llm_calls_exceeded");
  expect_violation_shape(params_of(r)["violation"]);
  EXPECT_EQ(params_of(r)["violation"]["reason"], "max_llm_calls_exceeded");

  r = h.agent("CheckQuota", {{"process", "nobody"}});
  EXPECT_EQ(error_of(r), "io.budgetd.ProcessNotFound") << r;
}

TEST(AgentCheckQuota, Timeout) {
  Harness h;
  h.agent("Allocate", {{"process", "env-1"},
                       {"quota", {{"timeout_seconds", "10"}, {"soft_timeout_seconds", "5"}}}});
  h.clock.advance(std::chrono::seconds(11));
  json r = h.agent("CheckQuota", {{"process", "env-1"}});
  EXPECT_EQ(params_of(r)["within"], false);
  EXPECT_EQ(params_of(r)["reason"], "timeout_exceeded");
}

// ---- Consume --------------------------------------------------------------------------

class AgentConsume : public ::testing::Test {
 protected:
  void SetUp() override {
    ScopeUpdate u;
    u.limits[res::compute].hard = Decimal::from_int(10);
    ASSERT_TRUE(h.engine.set_limits("team", u));
    ScopeUpdate a;
    a.limits[res::compute].approval = Decimal::from_int(3);
    ASSERT_TRUE(h.engine.set_limits("ops", a));
    ASSERT_EQ(error_of(h.agent("Allocate", {{"process", "env-1"}, {"scope", "team"}})), "");
    ASSERT_EQ(error_of(h.agent("Allocate", {{"process", "env-2"}, {"scope", "ops"}})), "");
  }
  Harness h;
};

TEST_F(AgentConsume, ApprovedDeniedPartial) {
  json r = h.agent("Consume", {{"process", "env-1"}, {"resource", "compute"}, {"amount", "8"}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["status"], "APPROVED");
  EXPECT_EQ(params_of(r)["granted"], "8");
  EXPECT_EQ(params_of(r)["remaining"], "2");
  EXPECT_FALSE(params_of(r).contains("request_id"));

  r = h.agent("Consume", {{"process", "env-1"}, {"resource", "compute"}, {"amount", "5"}});
  ASSERT_EQ(error_of(r), "") << r;  // a denial is an answer, not an error
  EXPECT_EQ(params_of(r)["status"], "DENIED");
  EXPECT_EQ(params_of(r)["granted"], "0");
  expect_violation_shape(params_of(r)["violation"]);
  EXPECT_EQ(params_of(r)["violation"]["resource"], "compute");

  r = h.agent(
      "Consume",
      {{"process", "env-1"}, {"resource", "compute"}, {"amount", "5"}, {"allow_partial", true}});
  EXPECT_EQ(params_of(r)["status"], "PARTIAL");
  EXPECT_EQ(params_of(r)["granted"], "2");
  EXPECT_EQ(params_of(r)["remaining"], "0");
}

// Seed 001's action costs: translate is 5 tokens per 1000 words, rounded up.
TEST_F(AgentConsume, AnActionOnWordsChargesItsTokens) {
  ScopeUpdate u;
  u.limits[res::tokens].hard = Decimal::from_int(100);
  ASSERT_TRUE(h.engine.set_limits("words", u));
  ASSERT_EQ(error_of(h.agent("Allocate", {{"process", "env-w"}, {"scope", "words"}})), "");
  json r = h.agent("Consume", {{"process", "env-w"}, {"action", "translate"}, {"words", 2500}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["status"], "APPROVED");
  EXPECT_EQ(params_of(r)["granted"], "13") << "2500 words x 5 / 1000 = 12.5, a started token counts";
  EXPECT_EQ(params_of(r)["remaining"], "87");
  r = h.agent("Consume", {{"process", "env-w"}, {"action", "summarize"}, {"words", 1000}});
  EXPECT_EQ(params_of(r)["granted"], "2");
  // An action with an amount, or without words, changes nothing.
  EXPECT_EQ(error_of(h.agent("Consume", {{"process", "env-w"}, {"action", "translate"}, {"words", 1}, {"amount", "1"}})),
            "org.varlink.service.InvalidParameter");
  EXPECT_EQ(error_of(h.agent("Consume", {{"process", "env-w"}, {"action", "translate"}})),
            "org.varlink.service.InvalidParameter");
  EXPECT_EQ(error_of(h.agent("Consume", {{"process", "env-w"}, {"action", "juggle"}, {"words", 10}})),
            "io.budgetd.InvalidArgument");
  EXPECT_EQ(params_of(h.agent("Consume", {{"process", "env-w"}, {"resource", "tokens"}, {"amount", "0"}}))["remaining"], "85");
}

TEST_F(AgentConsume, PendingAboveTheApprovalThreshold) {
  json r = h.agent(
      "Consume",
      {{"process", "env-2"}, {"resource", "compute"}, {"amount", "4"}, {"context", "batch"}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["status"], "PENDING");
  ASSERT_TRUE(params_of(r)["request_id"].is_number_unsigned()) << r;
  EXPECT_GT(params_of(r)["request_id"].get<uint64_t>(), 0u);
  EXPECT_TRUE(params_of(r)["expires_at"].is_string());
  EXPECT_EQ(params_of(r)["violation"]["reason"], "approval_required");
  ASSERT_EQ(h.engine.list_pending().size(), 1u);
  EXPECT_EQ(h.engine.list_pending()[0].id, params_of(r)["request_id"].get<uint64_t>());
}

TEST_F(AgentConsume, ScopeAndThreadConsumers) {
  json r = h.agent("Consume", {{"scope", "team"}, {"resource", "compute"}, {"amount", "1"}});
  EXPECT_EQ(params_of(r)["status"], "APPROVED") << r;
  r = h.agent("Consume", {{"scope", "team"}, {"resource", "compute"}, {"amount", "1"}}, kAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
  r = h.agent("Consume",
              {{"thread", "t-1"}, {"process", "env-1"}, {"resource", "compute"}, {"amount", "1"}});
  EXPECT_EQ(params_of(r)["status"], "APPROVED") << r;
}

TEST_F(AgentConsume, BadRequests) {
  json r = h.agent("Consume", {{"resource", "compute"}, {"amount", "1"}});
  EXPECT_EQ(error_of(r), kInvalidParameter) << r;
  EXPECT_EQ(params_of(r)["parameter"], "process");
  r = h.agent("Consume", {{"process", "env-1"}, {"amount", "1"}});
  EXPECT_EQ(params_of(r)["parameter"], "resource");
  r = h.agent("Consume", {{"process", "env-1"}, {"resource", "compute"}, {"amount", "abc"}});
  EXPECT_EQ(params_of(r)["parameter"], "amount");
  r = h.agent("Consume", {{"process", "env-1"}, {"resource", "nope"}, {"amount", "1"}});
  EXPECT_EQ(error_of(r), "io.budgetd.UnknownResource") << r;
  r = h.agent("Consume", {{"process", "ghost"}, {"resource", "compute"}, {"amount", "1"}});
  EXPECT_EQ(error_of(r), "io.budgetd.ProcessNotFound") << r;
  r = h.agent("Consume", {{"process", "env-1"}, {"resource", "llm_calls"}, {"amount", "0.5"}});
  EXPECT_EQ(error_of(r), "io.budgetd.InvalidArgument") << r;
}

// ---- Reserve / Commit / Cancel --------------------------------------------------------

TEST(AgentReserve, ReserveCommitCancel) {
  Harness h;
  h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"max_llm_calls", "3"}}}});
  json r = h.agent("Reserve",
                   {{"process", "env-1"}, {"llm_calls", 2}, {"tokens_in", 100}, {"cost", "0.5"}});
  ASSERT_EQ(error_of(r), "") << r;
  ASSERT_TRUE(params_of(r)["reservation_id"].is_number_unsigned()) << r;
  EXPECT_TRUE(params_of(r)["expires_at"].is_string());
  const uint64_t id = params_of(r)["reservation_id"];

  // The hold counts: two more calls do not fit next to it.
  r = h.agent("Reserve", {{"process", "env-1"}, {"llm_calls", 2}});
  EXPECT_EQ(error_of(r), kQuotaExceeded) << r;

  r = h.agent("Commit", {{"reservation_id", id}, {"llm_calls", 1}, {"tokens_in", 80}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["expired"], false);
  EXPECT_FALSE(params_of(r).contains("reason"));
  EXPECT_EQ(params_of(r)["violations"], json::array());
  EXPECT_EQ(params_of(h.agent("GetUsage", {{"process", "env-1"}}))["usage"]["llm_calls"], 1);

  r = h.agent("Reserve", {{"process", "env-1"}, {"llm_calls", 2}});
  ASSERT_EQ(error_of(r), "") << r;
  const uint64_t id2 = params_of(r)["reservation_id"];
  r = h.agent("Cancel", {{"reservation_id", id2}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r), json::object());
  EXPECT_EQ(h.engine.hold_count(), 0u);
  r = h.agent("Cancel", {{"reservation_id", id2}});
  EXPECT_EQ(error_of(r), "io.budgetd.ReservationNotFound") << r;
  r = h.agent("Commit", {{"reservation_id", 987654}});
  EXPECT_EQ(error_of(r), "io.budgetd.ReservationNotFound") << r;
}

TEST(AgentReserve, RefusalIsQuotaExceededWithDetails) {
  Harness h;
  h.agent("Allocate",
          {{"process", "env-1"}, {"scope", "team"}, {"quota", {{"max_llm_calls", "2"}}}});
  h.agent("RecordUsage", {{"process", "env-1"}, {"llm_calls", 2}});
  json r = h.agent("Reserve", {{"process", "env-1"}, {"llm_calls", 1}});
  ASSERT_EQ(error_of(r), kQuotaExceeded) << r;
  json p = params_of(r);
  expect_violation_shape(p);
  EXPECT_EQ(p["reason"], "max_llm_calls_exceeded");
  EXPECT_EQ(p["resource"], "llm_calls");
  EXPECT_EQ(p["used"], "2");
  EXPECT_EQ(p["limit"], "2");
  EXPECT_EQ(h.engine.hold_count(), 0u);
}

TEST(AgentReserve, ScopeLimitRefusalNamesThePath) {
  Harness h;
  ScopeUpdate u;
  u.limits[res::cost].hard = Decimal::from_int(1);
  ASSERT_TRUE(h.engine.set_limits("team", u));
  h.agent("Allocate", {{"process", "env-1"}, {"scope", "team/proj"}});
  json r = h.agent("Reserve", {{"process", "env-1"}, {"cost", "2"}});
  ASSERT_EQ(error_of(r), kQuotaExceeded) << r;
  EXPECT_EQ(params_of(r)["reason"], "scope_limit_exceeded");
  EXPECT_EQ(params_of(r)["path"], "team");
  EXPECT_EQ(params_of(r)["resource"], "cost");
  EXPECT_EQ(params_of(r)["limit"], "1");
}

TEST(AgentReserve, CommitAfterExpiry) {
  Harness h;
  h.agent("Allocate", {{"process", "env-1"}});
  json r = h.agent("Reserve", {{"process", "env-1"}, {"llm_calls", 1}, {"ttl_seconds", 1}});
  ASSERT_EQ(error_of(r), "") << r;
  const uint64_t id = params_of(r)["reservation_id"];
  h.clock.advance(std::chrono::seconds(2));
  r = h.agent("Commit", {{"reservation_id", id}, {"llm_calls", 1}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["expired"], true);
  EXPECT_EQ(params_of(r)["reason"], "reservation_expired");
  EXPECT_EQ(params_of(h.agent("GetUsage", {{"process", "env-1"}}))["usage"]["llm_calls"], 1);
}

TEST(AgentReserve, NeedsAConsumer) {
  Harness h;
  json r = h.agent("Reserve", {{"llm_calls", 1}});
  EXPECT_EQ(error_of(r), kInvalidParameter) << r;
  r = h.agent("Reserve", {{"process", "ghost"}, {"llm_calls", 1}});
  EXPECT_EQ(error_of(r), "io.budgetd.ProcessNotFound") << r;
}

// ---- Thread budgets -------------------------------------------------------------------

TEST(AgentThreads, CheckBudget) {
  Harness h;
  json r = h.agent("CheckBudget", {{"thread", "t-1"}, {"estimated_tokens", 10}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["remaining"], 100000);
  EXPECT_EQ(params_of(r)["max_tokens"], 100000);

  r = h.agent("CheckBudget", {{"thread", "t-1"}, {"estimated_tokens", 200000}});
  ASSERT_EQ(error_of(r), "io.budgetd.BudgetExhausted") << r;
  expect_violation_shape(params_of(r));
  EXPECT_EQ(params_of(r)["reason"], "thread_budget_exhausted");
  EXPECT_EQ(params_of(r)["limit"], "100000");

  r = h.agent("CheckBudget", {{"estimated_tokens", 1}});
  EXPECT_EQ(params_of(r)["parameter"], "thread");
}

TEST(AgentThreads, ConsumeThread) {
  Harness h;
  json r = h.agent("ConsumeThread",
                   {{"thread", "t-2"}, {"prompt_tokens", 100}, {"completion_tokens", 50}});
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r), json({{"prompt_tokens", 100},
                                {"completion_tokens", 50},
                                {"total_tokens", 150},
                                {"remaining", 99850},
                                {"max_tokens", 100000},
                                {"request_count", 1}}));
  r = h.agent("ConsumeThread", {{"thread", "t-2"}, {"prompt_tokens", 99850}});
  EXPECT_EQ(params_of(r)["remaining"], 0);
  r = h.agent("CheckBudget", {{"thread", "t-2"}});
  EXPECT_EQ(error_of(r), "io.budgetd.BudgetExhausted") << r;
  EXPECT_EQ(params_of(r)["used"], "100000");
}

TEST(AgentThreads, ThreadOfAnotherAgentsProcess) {
  Harness g;
  ASSERT_EQ(error_of(g.agent("Allocate", {{"process", "env-1"}}, kAgent)), "");
  json r = g.agent("ConsumeThread", {{"thread", "t-3"}, {"process", "env-1"}, {"prompt_tokens", 1}},
                   kOtherAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
  r = g.agent("ConsumeThread", {{"thread", "t-3"}, {"process", "env-1"}, {"prompt_tokens", 1}},
              kAgent);
  EXPECT_EQ(error_of(r), "") << r;
  // The thread now belongs to env-1: naming it alone does not get around the owner.
  r = g.agent("CheckBudget", {{"thread", "t-3"}}, kOtherAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
}

// ---- Views ----------------------------------------------------------------------------

TEST(AgentViews, GetUsageQuotaRemainingTracked) {
  Harness h;
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "env-1"}})), json({{"tracked", false}}));
  h.agent("Allocate",
          {{"process", "env-1"}, {"quota", {{"max_cost", "2"}, {"max_tokens", "1000"}}}});
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "env-1"}})), json({{"tracked", true}}));
  h.agent("RecordUsage", {{"process", "env-1"},
                          {"llm_calls", 3},
                          {"tokens_in", 100},
                          {"tokens_out", 50},
                          {"cost", "0.5"}});
  h.clock.advance(std::chrono::seconds(100));

  json u = params_of(h.agent("GetUsage", {{"process", "env-1"}}))["usage"];
  EXPECT_EQ(u["llm_calls"], 3);
  EXPECT_EQ(u["tokens"], 150);
  EXPECT_EQ(u["cost"], "0.5");
  EXPECT_DOUBLE_EQ(u["elapsed_seconds"].get<double>(), 100.0);

  json q = params_of(h.agent("GetQuota", {{"process", "env-1"}}))["quota"];
  EXPECT_EQ(q["max_cost"], "2");
  EXPECT_EQ(q["max_tokens"], "1000");
  EXPECT_EQ(q.size(), 14u);  // every field of the Quota type

  json rem = params_of(h.agent("GetRemainingBudget", {{"process", "env-1"}}));
  EXPECT_EQ(rem, json({{"llm_calls", "7"},
                       {"tool_calls", "50"},
                       {"agent_hops", "21"},
                       {"iterations", "3"},
                       {"time_seconds", "200"},
                       {"tokens", "850"},
                       {"cost", "1.5"}}));

  for (const char* m : {"GetUsage", "GetQuota", "GetRemainingBudget"}) {
    json r = h.agent(m, {{"process", "ghost"}});
    EXPECT_EQ(error_of(r), "io.budgetd.ProcessNotFound") << m << ": " << r;
    EXPECT_TRUE(params_of(r)["code"].is_string()) << r;
  }
}

TEST(AgentViews, RemainingUnlimited) {
  Harness h;
  h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"timeout_seconds", "unlimited"}}}});
  json rem = params_of(h.agent("GetRemainingBudget", {{"process", "env-1"}}));
  EXPECT_EQ(rem["tokens"], "unlimited");
  EXPECT_EQ(rem["cost"], "unlimited");
  EXPECT_EQ(rem["time_seconds"], "unlimited");
}

// ---- CheckRateLimit -------------------------------------------------------------------

TEST(AgentRateLimit, ExceededAfterTheBurst) {
  Harness h;
  // The default limits allow a burst of 10.
  for (int i = 0; i < 10; ++i) {
    json r = h.agent("CheckRateLimit", json::object(), kAgent);
    ASSERT_EQ(params_of(r)["exceeded"], false) << i << ": " << r;
  }
  json r = h.agent("CheckRateLimit", json::object(), kAgent);
  ASSERT_EQ(error_of(r), "") << r;
  json p = params_of(r);
  EXPECT_EQ(p["exceeded"], true);
  EXPECT_EQ(p["limit_type"], "burst");
  EXPECT_EQ(p["limit"], 10);
  EXPECT_EQ(p["current"], 10);
  EXPECT_EQ(p["remaining"], 0);
  EXPECT_GT(p["retry_after"].get<double>(), 0.0);
  // Another user (the operator asking for uid 1001) has its own windows.
  r = h.agent("CheckRateLimit", {{"user", "1001"}});
  EXPECT_EQ(params_of(r)["exceeded"], false);
  // After retry_after, a slot is free again.
  h.clock.advance(
      std::chrono::microseconds(static_cast<int64_t>(p["retry_after"].get<double>() * 1e6) + 1));
  EXPECT_EQ(params_of(h.agent("CheckRateLimit", json::object(), kAgent))["exceeded"], false);
}

TEST(AgentRateLimit, RecordFalseOnlyAsks) {
  Harness h;
  for (int i = 0; i < 20; ++i) h.agent("CheckRateLimit", {{"record", false}}, kAgent);
  json r = h.agent("CheckRateLimit", {{"endpoint", "default"}}, kAgent);
  EXPECT_EQ(params_of(r)["exceeded"], false);
  EXPECT_EQ(params_of(r)["remaining"], 9);
}

TEST(AgentRateLimit, OnlyOperatorsAskForAnotherUser) {
  Harness h;
  json r = h.agent("CheckRateLimit", {{"user", "1001"}}, kAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
  r = h.agent("CheckRateLimit", {{"user", "1000"}}, kAgent);  // itself, by name
  EXPECT_EQ(error_of(r), "") << r;
}

// ---- Watch ----------------------------------------------------------------------------

TEST(AgentWatch, WithMoreSubscribes) {
  Harness h;
  auto replies = h.call(R"({"method":"io.budgetd.Agent.Watch","more":true})", kAgent);
  ASSERT_EQ(replies.size(), 1u) << h.out;
  EXPECT_EQ(replies[0]["continues"], true);
  json e = params_of(replies[0])["event"];
  EXPECT_EQ(e["kind"], "watching");
  EXPECT_TRUE(e["at"].is_string());
  EXPECT_TRUE(e["message"].is_string());
  ASSERT_EQ(h.hooks.watches.size(), 1u);
  const WatchFilter& f = h.hooks.watches[0];
  EXPECT_FALSE(f.everything);
  EXPECT_EQ(f.peer_pid, 500);
  EXPECT_EQ(f.peer_uid, 1000u);
  EXPECT_EQ(f.processes, std::vector<std::string>{"500"});
}

// ---- Who may do what ------------------------------------------------------------------

TEST(AgentAuthorization, OwnPidAllowed) {
  Harness h;
  json r = h.agent("Allocate", {{"process", "500"}}, kAgent);
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["allocated"], true);
  r = h.agent("RecordUsage", {{"process", "500"}, {"llm_calls", 1}}, kAgent);
  EXPECT_EQ(error_of(r), "") << r;
  for (const char* m : {"GetUsage", "GetQuota", "GetRemainingBudget", "CheckQuota", "Release"})
    EXPECT_EQ(error_of(h.agent(m, {{"process", "500"}}, kAgent)), "") << m;
}

TEST(AgentAuthorization, AnotherPidIsDeniedAndNothingChanges) {
  Harness h;
  json r = h.agent("Allocate", {{"process", "777"}}, kAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
  EXPECT_TRUE(params_of(r)["message"].is_string());
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "777"}}, kAgent))["tracked"], false);
  EXPECT_TRUE(h.hooks.tracked.empty());

  r = h.agent("RecordUsage", {{"process", "777"}, {"llm_calls", 1}}, kAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
  EXPECT_FALSE(h.engine.is_tracked("777"));

  // Allocated by an operator: still not the agent's to touch.
  h.agent("Allocate", {{"process", "777"}});
  for (const char* m :
       {"GetUsage", "GetQuota", "GetRemainingBudget", "CheckQuota", "Release", "RecordUsage"})
    EXPECT_EQ(error_of(h.agent(m, {{"process", "777"}}, kAgent)), kPermissionDenied) << m;
  EXPECT_TRUE(h.engine.is_tracked("777"));
  EXPECT_EQ(h.engine.get_usage("777")->llm_calls, 0u);
  json c =
      h.agent("Consume", {{"process", "777"}, {"resource", "compute"}, {"amount", "1"}}, kAgent);
  EXPECT_EQ(error_of(c), kPermissionDenied) << c;
  c = h.agent("Reserve", {{"process", "777"}, {"llm_calls", 1}}, kAgent);
  EXPECT_EQ(error_of(c), kPermissionDenied) << c;
  EXPECT_EQ(h.engine.hold_count(), 0u);
}

TEST(AgentAuthorization, DescendantAllowed) {
  Harness h;
  h.hooks.descendants.insert({501, 500});
  json r = h.agent("Allocate", {{"process", "501"}}, kAgent);
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["allocated"], true);
  r = h.agent("RecordUsage", {{"process", "501"}, {"tool_calls", 1}}, kAgent);
  EXPECT_EQ(error_of(r), "") << r;
  EXPECT_NE(std::find(h.hooks.descendant_queries.begin(), h.hooks.descendant_queries.end(),
                      std::pair{501, 500}),
            h.hooks.descendant_queries.end());
  // Not a descendant of the other agent.
  r = h.agent("GetUsage", {{"process", "501"}}, kOtherAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
}

TEST(AgentAuthorization, LogicalIdsBelongToTheirCreator) {
  Harness h;
  json r = h.agent("Allocate", {{"process", "env-7"}}, kAgent);
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(error_of(h.agent("RecordUsage", {{"process", "env-7"}, {"llm_calls", 1}}, kAgent)), "");
  // The same uid from another process may act on it.
  Peer same_uid = kAgent;
  same_uid.pid = 999;
  EXPECT_EQ(error_of(h.agent("GetUsage", {{"process", "env-7"}}, same_uid)), "");

  r = h.agent("RecordUsage", {{"process", "env-7"}, {"llm_calls", 1}}, kOtherAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
  r = h.agent("Release", {{"process", "env-7"}}, kOtherAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
  EXPECT_TRUE(h.engine.is_tracked("env-7"));
  EXPECT_EQ(h.engine.get_usage("env-7")->llm_calls, 1u);
}

TEST(AgentAuthorization, LogicalIdAutoCreatedByRecordUsageBelongsToTheCaller) {
  Harness h;
  ASSERT_EQ(error_of(h.agent("RecordUsage", {{"process", "env-8"}, {"llm_calls", 1}}, kAgent)), "");
  auto p = h.engine.get_process("env-8");
  ASSERT_TRUE(p);
  EXPECT_EQ(error_of(h.agent("GetUsage", {{"process", "env-8"}}, kOtherAgent)), kPermissionDenied)
      << "a process auto-created by uid 1000 (owner " << p->owner << ") is readable by uid 1001";
}

TEST(AgentAuthorization, DelegationNestsTheChildUnderTheParent) {
  Harness h;
  ASSERT_EQ(
      error_of(h.agent("Allocate", {{"process", "500"}, {"quota", {{"max_llm_calls", "10"}}}})),
      "");
  json r = h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"max_llm_calls", "4"}}}}, kAgent);
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(params_of(r)["quota"]["max_llm_calls"], "4");
  EXPECT_EQ(h.engine.get_process("env-1")->parent, "500");
  // The child's spending is the parent's too (cgroups-style); the parent's quota is kept.
  h.agent("RecordUsage", {{"process", "env-1"}, {"llm_calls", 4}}, kAgent);
  EXPECT_EQ(params_of(h.agent("GetUsage", {{"process", "500"}}))["usage"]["llm_calls"], 4);
  EXPECT_EQ(params_of(h.agent("GetQuota", {{"process", "500"}}))["quota"]["max_llm_calls"], "10");

  r = h.agent("Allocate", {{"process", "env-2"}, {"quota", {{"max_llm_calls", "20"}}}}, kAgent);
  EXPECT_EQ(error_of(r), kQuotaExceeded) << r;
  expect_violation_shape(params_of(r));
  EXPECT_EQ(params_of(r)["reason"], "max_llm_calls_exceeded");
  EXPECT_EQ(params_of(r)["used"], "20");
  EXPECT_EQ(params_of(r)["limit"], "6");
  EXPECT_FALSE(h.engine.is_tracked("env-2"));
}

TEST(AgentAuthorization, AChildCannotSpendMoreThanItsParentHasLeft) {
  Harness h;
  ASSERT_EQ(
      error_of(h.agent("Allocate", {{"process", "500"}, {"quota", {{"max_llm_calls", "10"}}}})),
      "");
  h.agent("RecordUsage", {{"process", "500"}, {"llm_calls", 7}}, kAgent);
  json r = h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"max_llm_calls", "4"}}}}, kAgent);
  EXPECT_EQ(error_of(r), kQuotaExceeded) << r;
  r = h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"max_llm_calls", "3"}}}}, kAgent);
  ASSERT_EQ(error_of(r), "") << r;
  // Two children of 3 each may be granted, but together they still fit in the parent's 3:
  // the second is refused at admission once the first has spent it.
  r = h.agent("Allocate", {{"process", "env-2"}, {"quota", {{"max_llm_calls", "3"}}}}, kAgent);
  ASSERT_EQ(error_of(r), "") << r;
  h.agent("RecordUsage", {{"process", "env-1"}, {"llm_calls", 3}}, kAgent);
  r = h.agent("Reserve", {{"process", "env-2"}, {"llm_calls", 1}}, kAgent);
  EXPECT_EQ(error_of(r), kQuotaExceeded) << r;
  EXPECT_EQ(params_of(r)["reason"], "max_llm_calls_exceeded");
}

TEST(AgentAuthorization, AgentWithoutABudgetMayGrantAtMostTheDefault) {
  Harness h;
  json r =
      h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"max_llm_calls", "11"}}}}, kAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
  EXPECT_FALSE(h.engine.is_tracked("env-1"));
  r = h.agent("Allocate", {{"process", "env-1"}, {"quota", {{"max_cost", "5"}}}}, kAgent);
  EXPECT_EQ(error_of(r), "") << r;  // the default cost is unlimited
  r = h.agent("Allocate", {{"process", "env-2"}, {"quota", {{"max_llm_calls", "10"}}}}, kAgent);
  EXPECT_EQ(error_of(r), "") << r;
}

TEST(AgentAuthorization, NonOperatorScopeOutsideItsOwnIsDenied) {
  Harness h;
  // Without a budget of its own, an agent places nothing in a scope.
  json r = h.agent("Allocate", {{"process", "env-1"}, {"scope", "team-b"}}, kAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
  EXPECT_FALSE(h.engine.is_tracked("env-1"));

  ASSERT_EQ(error_of(h.agent("Allocate", {{"process", "500"}, {"scope", "team-a"}})), "");
  const auto before = h.engine.get_quota("500");
  r = h.agent("Allocate", {{"process", "env-1"}, {"scope", "team-b"}}, kAgent);
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;
  EXPECT_FALSE(h.engine.is_tracked("env-1"));
  EXPECT_EQ(h.engine.get_quota("500"), before);
  r = h.agent("Allocate", {{"process", "env-1"}, {"scope", "team-ab"}},
              kAgent);  // a prefix is not a parent
  EXPECT_EQ(error_of(r), kPermissionDenied) << r;

  // Its own scope and below are fine; the default is its own scope.
  r = h.agent("Allocate",
              {{"process", "env-1"}, {"scope", "team-a/sub"}, {"quota", {{"max_llm_calls", "1"}}}},
              kAgent);
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(h.engine.get_process("env-1")->scope, "team-a/sub");
  r = h.agent("Allocate", {{"process", "env-2"}, {"quota", {{"max_llm_calls", "1"}}}}, kAgent);
  ASSERT_EQ(error_of(r), "") << r;
  EXPECT_EQ(h.engine.get_process("env-2")->scope, "team-a");
}

TEST(AgentAuthorization, ARefusedDelegationLeavesTheParentUnchanged) {
  Harness h;
  ASSERT_EQ(error_of(h.agent("Allocate", {{"process", "500"}, {"scope", "team-a"}})), "");
  const auto before = h.engine.get_quota("500");
  // Within the parent's scope, but not a valid path: the allocation fails after the
  // delegation checks passed.
  json r = h.agent(
      "Allocate",
      {{"process", "env-1"}, {"scope", "team-a/bad path"}, {"quota", {{"max_llm_calls", "4"}}}},
      kAgent);
  EXPECT_EQ(error_of(r), "io.budgetd.InvalidArgument") << r;
  EXPECT_FALSE(h.engine.is_tracked("env-1"));
  EXPECT_EQ(h.engine.get_quota("500"), before)
      << "the parent's quota was carved for a child that was never allocated";

  // The daemon refusing to watch a new OS pid, likewise.
  h.hooks.descendants.insert({501, 500});
  h.hooks.track_result = fail(Errc::unknown_process, "501");
  r = h.agent("Allocate", {{"process", "501"}, {"quota", {{"max_llm_calls", "4"}}}}, kAgent);
  EXPECT_EQ(error_of(r), "io.budgetd.ProcessNotFound") << r;
  EXPECT_FALSE(h.engine.is_tracked("501"));
  EXPECT_EQ(h.engine.get_quota("500"), before)
      << "the parent's quota was carved for a child that was refused";
}

TEST(AgentAuthorization, DelegatingWithDefaultsLeavesTheParentUsable) {
  Harness h;
  ASSERT_EQ(error_of(h.agent("Allocate", {{"process", "500"}})), "");
  ASSERT_EQ(error_of(h.agent("Allocate", {{"process", "env-1"}}, kAgent)), "");
  json r = h.agent("CheckQuota", {{"process", "500"}});
  EXPECT_EQ(params_of(r)["within"], true) << r;
  r = h.agent("Reserve", {{"process", "500"}, {"llm_calls", 1}}, kAgent);
  EXPECT_EQ(error_of(r), "") << r;
}

TEST(AgentAuthorization, OperatorMayDoAnything) {
  Harness h;
  h.agent("Allocate", {{"process", "env-1"}}, kAgent);
  for (const char* m :
       {"GetUsage", "GetQuota", "GetRemainingBudget", "CheckQuota", "RecordUsage", "Release"})
    EXPECT_EQ(error_of(h.agent(m, {{"process", "env-1"}})), "") << m;
  EXPECT_EQ(error_of(h.agent("Allocate", {{"process", "777"}, {"scope", "anywhere"}})), "");
}

}  // namespace
}  // namespace budgetd::ipc::testsupport
