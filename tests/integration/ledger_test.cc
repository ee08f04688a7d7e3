// The usage ledger against the real daemon (issue 5): every accepted report is a priced
// record, operator actions are audited, summaries add up exactly, unanswered holds and
// requests leave an "expired" record, and the ledger survives a restart.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "tests/integration/daemon_fixture.h"

namespace budgetd::integration {
namespace {

std::string usage(std::string_view m) { return "io.budgetd.Usage." + std::string(m); }
std::string agent(std::string_view m) { return "io.budgetd.Agent." + std::string(m); }

constexpr std::string_view kAllTime = "1970-01-01";
constexpr std::string_view kFarFuture = "2999-12-31";

TEST(Ledger, ReportsArePricedRecordedAndSummedExactly) {
  Daemon d;
  ASSERT_TRUE(d.start());
  auto c = d.client();
  // 1 token at the default $0.002 per 1000 tokens costs exactly $0.000002.
  Json one = call_ok(c, agent("RecordUsage"),
                     {{"process", "led-1"}, {"tokens_in", 1}, {"labels", {{"agent", "a1"}, {"model", "m1"}}}});
  EXPECT_EQ(one["usage"]["cost"], "0.000002") << "the priced cost is charged";
  for (int i = 0; i < 9; ++i)
    call_ok(c, agent("RecordUsage"),
            {{"process", "led-1"}, {"tokens_in", 1}, {"labels", {{"agent", "a1"}, {"model", "m1"}}}});
  // An explicit cost is the charge.
  call_ok(c, agent("RecordUsage"),
          {{"process", "led-2"}, {"llm_calls", 1}, {"cost", "0.25"}, {"labels", {{"agent", "a2"}}}});

  Json by_agent = call_ok(c, usage("Summary"), {{"start", kAllTime}, {"end", kFarFuture}, {"group_by", "agent"}});
  EXPECT_EQ(by_agent["total_cost"], "0.25002") << by_agent;
  EXPECT_EQ(by_agent["records"], 11) << by_agent;
  std::set<std::string> keys;
  for (const auto& g : by_agent["usage"]) keys.insert(g["key"].get<std::string>());
  EXPECT_EQ(keys, (std::set<std::string>{"a1", "a2"}));

  Json page = call_ok(c, usage("Records"), {{"process", "led-1"}, {"limit", 3}});
  ASSERT_EQ(page["records"].size(), 3u) << page;
  const Json& r = page["records"][0];
  EXPECT_EQ(r["kind"], "usage");
  EXPECT_EQ(r["id"].get<std::string>().size(), 36u) << "a GUID";
  EXPECT_EQ(r["labels"]["model"], "m1");
  EXPECT_EQ(r["total_cost"], "0.000002");
  EXPECT_TRUE(page.contains("next_cursor"));
  Json next = call_ok(c, usage("Records"), {{"process", "led-1"}, {"limit", 3}, {"cursor", page["next_cursor"]}});
  ASSERT_EQ(next["records"].size(), 3u);
  EXPECT_NE(next["records"][0]["id"], r["id"]) << "the next page goes on";

  // The ledger survives a restart.
  ASSERT_TRUE(d.restart());
  auto c2 = d.client();
  Json again = call_ok(c2, usage("Summary"), {{"start", kAllTime}, {"end", kFarFuture}, {"group_by", "agent"}});
  EXPECT_EQ(again["total_cost"], "0.25002");
}

TEST(Ledger, OperatorActionsAreAudited) {
  Daemon d;
  ASSERT_TRUE(d.start());
  auto c = d.client();
  call_ok(c, agent("Allocate"), {{"process", "aud-1"}});
  call_ok(c, "io.budgetd.Admin.AdjustQuota", {{"process", "aud-1"}, {"quota", {{"max_llm_calls", "20"}}}});
  call_ok(c, "io.budgetd.Admin.SetLimits", {{"path", "team"}, {"limits", Json::array({{{"resource", "cost"}, {"hard", "5"}}})}});
  Json audit = call_ok(c, usage("Records"), {{"kind", "audit"}});
  std::set<std::string> actions;
  for (const auto& rec : audit["records"]) actions.insert(rec["action"].get<std::string>());
  EXPECT_TRUE(actions.contains("AdjustQuota")) << audit;
  EXPECT_TRUE(actions.contains("SetLimits")) << audit;
  Json team = call_ok(c, usage("Records"), {{"kind", "audit"}, {"scope", "team"}});
  ASSERT_EQ(team["records"].size(), 1u) << "a scope's audit records are found by its path";
  EXPECT_EQ(team["records"][0]["action"], "SetLimits");
}

TEST(Ledger, AnExpiredReservationLeavesARecord) {
  Daemon d;
  ASSERT_TRUE(d.start());
  auto c = d.client();
  call_ok(c, agent("Allocate"), {{"process", "exp-1"}});
  Json r = call_ok(c, agent("Reserve"), {{"process", "exp-1"}, {"tokens_in", 100}, {"ttl_seconds", 1}});
  ASSERT_TRUE(r.contains("reservation_id"));
  EXPECT_TRUE(wait_until(
      [&] {
        Json recs = call_ok(c, usage("Records"), {{"process", "exp-1"}, {"kind", "reservation"}});
        for (const auto& rec : recs["records"])
          if (rec.value("action", "") == "expired") return true;
        return false;
      },
      Ms{5000}, Ms{20}));
}

}  // namespace
}  // namespace budgetd::integration
