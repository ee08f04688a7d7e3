// budgetctl: argument parsing, key=value to parameters, tables, and whole invocations
// against a fake varlink server (a thread on a temporary Unix socket); and the C++
// varlink client it is built on.
#include "cli/budgetctl_args.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/varlink_client.h"
#include "tests/cli/fake_server.h"

namespace budgetd::cli {
namespace {

using client::Reply;
using client::VarlinkClient;
using namespace std::chrono_literals;
using namespace std::string_literals;

std::vector<std::string> v(std::initializer_list<std::string> l) { return l; }

Json ok(Json params = Json::object()) { return Json{{"parameters", std::move(params)}}; }
Json err_reply(std::string name, Json params) {
  return Json{{"error", std::move(name)}, {"parameters", std::move(params)}};
}

struct Run {
  int status;
  std::string out, err;
};
Run run_cli(const FakeServer& s, std::vector<std::string> args) {
  args.insert(args.begin(), {"--socket", s.path()});
  std::ostringstream out, err;
  int st = run(args, out, err);
  return {st, out.str(), err.str()};
}

// ---- The command line -----------------------------------------------------------------------

TEST(BudgetctlCommandLine, GlobalOptionsBeforeAndAfterTheCommand) {
  auto inv = parse_command_line(v({"--socket", "/tmp/s", "ps", "--json"}));
  ASSERT_TRUE(inv) << inv.error();
  EXPECT_EQ(inv->socket, "/tmp/s");
  EXPECT_TRUE(inv->json);
  EXPECT_EQ(inv->command, "ps");
  EXPECT_TRUE(inv->args.empty());

  inv = parse_command_line(v({"adjust", "--socket=/x", "42", "llm_calls=5", "--timeout", "2.5"}));
  ASSERT_TRUE(inv) << inv.error();
  EXPECT_EQ(inv->socket, "/x");
  EXPECT_EQ(inv->timeout, 2500ms);
  EXPECT_EQ(inv->args, v({"42", "llm_calls=5"}));
}

TEST(BudgetctlCommandLine, DoubleDashEndsOptions) {
  auto inv = parse_command_line(v({"call", "--", "Stats", "--json"}));
  ASSERT_TRUE(inv) << inv.error();
  EXPECT_FALSE(inv->json);
  EXPECT_EQ(inv->args, v({"Stats", "--json"}));
}

TEST(BudgetctlCommandLine, Errors) {
  EXPECT_FALSE(parse_command_line(v({"--socket"})));
  EXPECT_FALSE(parse_command_line(v({"--socket="})));
  EXPECT_FALSE(parse_command_line(v({"--timeout", "0", "ps"})));
  EXPECT_FALSE(parse_command_line(v({"--timeout=abc", "ps"})));
  EXPECT_FALSE(parse_command_line(v({"--bogus", "ps"})));
  auto inv = parse_command_line(v({"frobnicate"}));
  ASSERT_FALSE(inv);
  EXPECT_NE(inv.error().find("unknown command 'frobnicate'"), std::string::npos);
}

TEST(BudgetctlCommandLine, HelpForms) {
  auto inv = parse_command_line(v({"--help"}));
  ASSERT_TRUE(inv);
  EXPECT_TRUE(inv->help);
  EXPECT_EQ(inv->command, "");
  inv = parse_command_line(v({"help", "adjust"}));
  ASSERT_TRUE(inv);
  EXPECT_TRUE(inv->help);
  EXPECT_EQ(inv->command, "adjust");
  inv = parse_command_line(v({"set-limits", "-h"}));
  ASSERT_TRUE(inv);
  EXPECT_TRUE(inv->help);
  EXPECT_EQ(inv->command, "set-limits");
  EXPECT_FALSE(parse_command_line(v({"help", "nope"})));
}

TEST(BudgetctlCommandLine, EveryCommandHasUsage) {
  std::string all = usage_text();
  for (const auto& c : commands()) {
    EXPECT_NE(all.find("  " + std::string(c.name)), std::string::npos) << c.name;
    EXPECT_NE(command_usage(c).find("Usage: budgetctl [OPTIONS] " + std::string(c.name)),
              std::string::npos);
  }
}

// ---- key=value ----------------------------------------------------------------------------

TEST(BudgetctlKeyValue, Split) {
  auto p = split_key_value("a=b=c");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->first, "a");
  EXPECT_EQ(p->second, "b=c");
  p = split_key_value("plan=");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->second, "");
  EXPECT_FALSE(split_key_value("novalue"));
  EXPECT_FALSE(split_key_value("=5"));
}

TEST(BudgetctlKeyValue, QuotaInputWithShortForms) {
  auto q =
      quota_input_from_args(v({"llm_calls=100", "max_tokens=unlimited", "cost=2.50", "timeout=600",
                               "soft_timeout_seconds=300", "kill_grace=5", "on_violation=pause"}));
  ASSERT_TRUE(q) << q.error();
  EXPECT_EQ(*q, (Json{{"max_llm_calls", "100"},
                      {"max_tokens", "unlimited"},
                      {"max_cost", "2.50"},
                      {"timeout_seconds", "600"},
                      {"soft_timeout_seconds", "300"},
                      {"kill_grace_seconds", "5"},
                      {"on_violation", "pause"}}));
}

TEST(BudgetctlKeyValue, QuotaInputErrors) {
  EXPECT_FALSE(quota_input_from_args(v({"llm_calls"})));
  EXPECT_FALSE(quota_input_from_args(v({"bananas=3"})));
  EXPECT_FALSE(quota_input_from_args(v({"llm_calls=1", "max_llm_calls=2"})));  // twice
  EXPECT_FALSE(quota_input_from_args(v({"llm_calls="})));
}

TEST(BudgetctlKeyValue, SetLimitsGroupsByResource) {
  auto p = set_limits_params_from_args(
      v({"cost=1000", "cost.soft=800", "tokens.approval=5000", "gpu.hours=10", "gpu.hours.soft=8",
         "plan=pro", "tier=", "reset=monthly", "clear=yes"}));
  ASSERT_TRUE(p) << p.error();
  Json want = {
      {"limits", Json::array({Json{{"resource", "cost"}, {"hard", "1000"}, {"soft", "800"}},
                              Json{{"resource", "gpu.hours"}, {"hard", "10"}, {"soft", "8"}},
                              Json{{"resource", "tokens"}, {"approval", "5000"}}})},
      {"plan", "pro"},
      {"tier", ""},
      {"reset", "monthly"},
      {"clear", true}};
  EXPECT_EQ(*p, want);
}

TEST(BudgetctlKeyValue, SetLimitsErrors) {
  EXPECT_FALSE(set_limits_params_from_args(v({"cost=1", "cost.hard=2"})));
  EXPECT_FALSE(set_limits_params_from_args(v({"clear=maybe"})));
  EXPECT_FALSE(set_limits_params_from_args(v({".soft=3"})));
  EXPECT_FALSE(set_limits_params_from_args(v({"cost="})));
  EXPECT_FALSE(set_limits_params_from_args(v({"reset="})));
  EXPECT_FALSE(set_limits_params_from_args(v({"plan=a", "plan=b"})));
}

// ---- Requests ---------------------------------------------------------------------------------

std::vector<Request> requests(std::initializer_list<std::string> args) {
  auto inv = parse_command_line(std::vector<std::string>(args));
  EXPECT_TRUE(inv) << inv.error();
  auto r = build_requests(*inv);
  EXPECT_TRUE(r) << r.error();
  return r ? *r : std::vector<Request>{};
}

std::string request_error(std::initializer_list<std::string> args) {
  auto inv = parse_command_line(std::vector<std::string>(args));
  if (!inv) return inv.error();
  auto r = build_requests(*inv);
  return r ? "" : r.error();
}

TEST(BudgetctlRequests, EachCommand) {
  auto r = requests({"status"});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].method, "io.budgetd.Admin.Stats");
  EXPECT_EQ(r[1].method, "io.budgetd.Admin.GetSystemUsage");

  r = requests({"ps"});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].method, "io.budgetd.Admin.ListProcesses");
  EXPECT_EQ(r[0].paged_key, "processes");

  r = requests({"adjust", "4242", "llm_calls=10"});
  EXPECT_EQ(r[0].method, "io.budgetd.Admin.AdjustQuota");
  EXPECT_EQ(r[0].params, (Json{{"process", "4242"}, {"quota", {{"max_llm_calls", "10"}}}}));

  r = requests({"set-limits", "org/acme", "cost=5", "reset=daily"});
  EXPECT_EQ(r[0].method, "io.budgetd.Admin.SetLimits");
  EXPECT_EQ(r[0].params, (Json{{"path", "org/acme"},
                               {"limits", Json::array({Json{{"resource", "cost"}, {"hard", "5"}}})},
                               {"reset", "daily"}}));

  r = requests({"set-limits", "llm_calls=100", "--plan", "pro"});
  EXPECT_EQ(r[0].params,
            (Json{{"template", "pro"},
                  {"kind", "plan"},
                  {"limits", Json::array({Json{{"resource", "llm_calls"}, {"hard", "100"}}})}}));

  r = requests({"approve", "17"});
  EXPECT_EQ(r[0].method, "io.budgetd.Admin.Approve");
  EXPECT_EQ(r[0].params, (Json{{"request_id", 17}}));
  r = requests({"deny", "18"});
  EXPECT_EQ(r[0].method, "io.budgetd.Admin.Deny");

  r = requests({"pause", "env-1"});
  EXPECT_EQ(r[0].method, "io.budgetd.Admin.Pause");
  EXPECT_EQ(r[0].params, (Json{{"process", "env-1"}}));
  EXPECT_EQ(requests({"resume", "7"})[0].method, "io.budgetd.Admin.Resume");

  r = requests({"watch"});
  EXPECT_EQ(r[0].method, "io.budgetd.Admin.Watch");
  EXPECT_TRUE(r[0].more);
  EXPECT_EQ(requests({"reload"})[0].method, "io.budgetd.Admin.Reload");
  EXPECT_EQ(requests({"pending"})[0].method, "io.budgetd.Admin.ListPending");
  EXPECT_EQ(requests({"scopes"})[0].paged_key, "scopes");
  EXPECT_EQ(requests({"scope", "/"})[0].params, (Json{{"path", "/"}}));
  EXPECT_EQ(requests({"templates"})[0].method, "io.budgetd.Admin.ListTemplates");
}

TEST(BudgetctlRequests, Call) {
  auto r = requests({"call", "Stats"});
  EXPECT_EQ(r[0].method, "io.budgetd.Admin.Stats");
  EXPECT_EQ(r[0].params, Json::object());
  r = requests({"call", "Agent.GetUsage", R"({"process": "42"})"});
  EXPECT_EQ(r[0].method, "io.budgetd.Agent.GetUsage");
  EXPECT_EQ(r[0].params, (Json{{"process", "42"}}));
  r = requests({"call", "org.varlink.service.GetInfo"});
  EXPECT_EQ(r[0].method, "org.varlink.service.GetInfo");
  r = requests({"call", "io.budgetd.Agent.Watch"});
  EXPECT_TRUE(r[0].more);
  r = requests({"call", "Agent.RecordUsage", R"({"process":"1","llm_calls":1})", "--oneway"});
  EXPECT_TRUE(r[0].oneway);
  EXPECT_FALSE(r[0].more);
}

TEST(BudgetctlRequests, UsageErrors) {
  EXPECT_NE(request_error({"ps", "extra"}), "");
  EXPECT_NE(request_error({"adjust", "4242"}), "");
  EXPECT_NE(request_error({"adjust", "llm_calls=3"}), "");
  EXPECT_NE(request_error({"adjust", "1", "wat=3"}), "");
  EXPECT_NE(request_error({"approve", "x"}), "");
  EXPECT_NE(request_error({"approve", "-1"}), "");
  EXPECT_NE(request_error({"approve"}), "");
  EXPECT_NE(request_error({"pause"}), "");
  EXPECT_NE(request_error({"set-limits", "org/a"}), "");
  EXPECT_NE(request_error({"set-limits", "cost=1"}), "");
  EXPECT_NE(request_error({"set-limits", "a", "--plan", "p", "cost=1"}), "");
  EXPECT_NE(request_error({"set-limits", "--tier"}), "");
  EXPECT_NE(request_error({"call"}), "");
  EXPECT_NE(request_error({"call", "Stats", "{not json"}), "");
  EXPECT_NE(request_error({"call", "Stats", "--more", "--oneway"}), "");
  EXPECT_NE(request_error({"reload", "--now"}), "");
}

// ---- Output -------------------------------------------------------------------------------------

TEST(BudgetctlTable, AlignsColumnsWithoutTrailingBlanks) {
  Table t;
  t.header = {"A", "BBB", "C"};
  t.rows = {{"xxxx", "y", ""}, {"z", "ww", "last"}};
  EXPECT_EQ(t.render(),
            "A     BBB  C\n"
            "xxxx  y\n"
            "z     ww   last\n");
}

TEST(BudgetctlTable, CountsUtf8AsOneColumn) {
  Table t;
  t.rows = {{"é", "x"}, {"ab", "y"}};
  EXPECT_EQ(t.render(), "é   x\nab  y\n");
}

TEST(BudgetctlCells, UseCell) {
  EXPECT_EQ(
      use_cell(Json{{"resource", "llm_calls"}, {"used", "8"}, {"limit", "10"}, {"percent", 80}}),
      "8/10 (80%)");
  EXPECT_EQ(use_cell(Json{{"resource", "tokens"}, {"used", "123"}, {"limit", "unlimited"}}), "123");
  EXPECT_EQ(use_cell(Json{{"resource", "cost"}, {"used", "0.25"}, {"limit", "1.00"}}), "0.25/1.00");
  EXPECT_EQ(
      use_cell(Json{{"resource", "elapsed"}, {"used", "12.345"}, {"limit", "300"}, {"percent", 4}}),
      "12.3s/300s (4%)");
  EXPECT_EQ(use_cell(Json{{"resource", "elapsed"}, {"used", 61.0}, {"limit", "unlimited"}}),
            "61.0s");
}

TEST(BudgetctlCells, Values) {
  EXPECT_EQ(cell(Json()), "-");
  EXPECT_EQ(cell(Json("x")), "x");
  EXPECT_EQ(cell(Json(true)), "yes");
  EXPECT_EQ(cell(Json(42)), "42");
  EXPECT_EQ(cell(Json(3.0)), "3");
  EXPECT_EQ(cell(Json(0.5)), "0.5");
  EXPECT_EQ(field_cell(Json{{"a", 1}}, "b"), "-");
  EXPECT_EQ(format_duration(42), "42s");
  EXPECT_EQ(format_duration(3725), "1h02m05s");
  EXPECT_EQ(format_duration(90061), "1d01h01m01s");
}

Json sample_process() {
  return Json{
      {"process", "4242"},
      {"scope", "org/acme"},
      {"owner", 1000},
      {"allocated_at", "2024-02-29T00:00:00Z"},
      {"within", false},
      {"reason", "max_llm_calls_exceeded"},
      {"usage",
       {{"llm_calls", 10},
        {"tool_calls", 1},
        {"agent_hops", 0},
        {"iterations", 2},
        {"tokens_in", 100},
        {"tokens_out", 50},
        {"tokens", 150},
        {"cost", "0.50"},
        {"elapsed_seconds", 5.25}}},
      {"quota", {{"max_llm_calls", "10"}, {"max_tokens", "unlimited"}, {"timeout_seconds", "60"}}},
      {"resources",
       Json::array({
           Json{{"resource", "llm_calls"}, {"used", "10"}, {"limit", "10"}, {"percent", 100}},
           Json{{"resource", "tool_calls"}, {"used", "1"}, {"limit", "unlimited"}},
           Json{{"resource", "agent_hops"}, {"used", "0"}, {"limit", "unlimited"}},
           Json{{"resource", "iterations"}, {"used", "2"}, {"limit", "unlimited"}},
           Json{{"resource", "tokens"}, {"used", "150"}, {"limit", "unlimited"}},
           Json{{"resource", "cost"}, {"used", "0.50"}, {"limit", "2.00"}, {"percent", 25}},
           Json{{"resource", "elapsed"}, {"used", "5.25"}, {"limit", "60"}, {"percent", 8}},
       })}};
}

TEST(BudgetctlFormat, Processes) {
  Json p2 = {{"process", "env-1"},
             {"scope", "/"},
             {"within", true},
             // No `resources`: the cells come from usage and quota.
             {"usage", {{"llm_calls", 1}, {"tokens", 9}, {"cost", "0"}, {"elapsed_seconds", 1.0}}},
             {"quota", {{"max_llm_calls", "5"}, {"timeout_seconds", "unlimited"}}}};
  std::string s = format_processes(Json{{"processes", {sample_process(), p2}}, {"total", 2}});
  std::istringstream in(s);
  std::string header, row1, row2;
  std::getline(in, header);
  std::getline(in, row1);
  std::getline(in, row2);
  EXPECT_EQ(header.find("PROCESS"), 0u);
  for (auto col : {"SCOPE", "LLM", "TOOL", "HOPS", "ITER", "TOKENS", "COST", "ELAPSED", "STATE"}) {
    EXPECT_NE(header.find(col), std::string::npos) << col;
  }
  // Every column starts at the same offset in each row.
  EXPECT_EQ(row1.find("10/10 (100%)"), header.find("LLM"));
  EXPECT_EQ(row2.find("1/5"), header.find("LLM"));
  EXPECT_EQ(row1.find("0.50/2.00 (25%)"), header.find("COST"));
  EXPECT_EQ(row1.find("5.2s/60s (8%)"), header.find("ELAPSED"));
  EXPECT_EQ(row1.find("max_llm_calls_exceeded"), header.find("STATE"));
  EXPECT_EQ(row2.find("1.0s"), header.find("ELAPSED"));
  EXPECT_EQ(row2.substr(header.find("STATE")), "ok");
  EXPECT_EQ(format_processes(Json{{"processes", Json::array()}, {"total", 0}}),
            "no processes tracked\n");
}

TEST(BudgetctlFormat, StatusQuotaDecisionPendingScopes) {
  std::string s = format_status(Json{{"total_events", 5},
                                     {"consumed_count", 3},
                                     {"rejected_count", 1},
                                     {"partial", 1},
                                     {"pending", 0},
                                     {"daemon",
                                      {{"connections", 2},
                                       {"paused_connections", 0},
                                       {"calls_total", 100},
                                       {"calls_per_second", 12.34},
                                       {"uptime_seconds", 3725}}}},
                                Json{{"total_processes", 3},
                                     {"active_processes", 2},
                                     {"system_llm_calls", 7},
                                     {"system_tool_calls", 1},
                                     {"system_tokens_in", 10},
                                     {"system_tokens_out", 20},
                                     {"system_cost", "1.50"}});
  EXPECT_NE(s.find("processes    3 tracked, 2 active\n"), std::string::npos) << s;
  EXPECT_NE(s.find("consumption  5 events: 3 approved, 1 rejected, 1 partial, 0 pending\n"),
            std::string::npos);
  EXPECT_NE(s.find("calls        100 total, 12.3/s\n"), std::string::npos);
  EXPECT_NE(s.find("uptime       1h02m05s\n"), std::string::npos);
  EXPECT_EQ(s.find("watchers"), std::string::npos);  // absent in the reply

  s = format_quota(Json{{"quota", {{"max_llm_calls", "5"}, {"on_timeout", "none"}}},
                        {"within", false},
                        {"reason", "max_llm_calls_exceeded"}});
  EXPECT_EQ(s, "over quota: max_llm_calls_exceeded\nmax_llm_calls  5\non_timeout     none\n");

  EXPECT_EQ(
      format_decision(Json{{"status", "APPROVED"}, {"granted", "5"}, {"remaining", "95"}}, "7"),
      "request 7: APPROVED, granted 5, remaining 95\n");

  s = format_pending(Json{{"requests",
                           {{{"request_id", 3},
                             {"process", "42"},
                             {"scope", "org/a"},
                             {"resource", "cost"},
                             {"amount", "50"},
                             {"created_at", "t0"},
                             {"expires_at", "t1"}}}}});
  EXPECT_EQ(s,
            "ID  CONSUMER    SCOPE  RESOURCE  AMOUNT  CREATED  EXPIRES  CONTEXT\n"
            "3   process 42  org/a  cost      50      t0       t1       -\n");
  EXPECT_EQ(format_pending(Json{{"requests", Json::array()}}), "no pending requests\n");

  s = format_scopes(Json{
      {"scopes",
       {{{"path", "/"}, {"reset", "never"}, {"last_reset_at", "t"}, {"resources", Json::array()}},
        {{"path", "org"},
         {"plan", "pro"},
         {"reset", "monthly"},
         {"resources",
          {{{"resource", "cost"},
            {"used", "5"},
            {"reserved", "1"},
            {"hard", "10"},
            {"soft", "unlimited"},
            {"approval", "unlimited"},
            {"percent", 50}}}}}}},
      {"total", 2}});
  EXPECT_EQ(s,
            "PATH  PLAN  TIER  RESET    RESOURCE  USED     HARD  SOFT  APPROVAL  RESERVED\n"
            "/     -     -     never    -         -        -     -     -         -\n"
            "org   pro   -     monthly  cost      5 (50%)  10    -     -         1\n");
}

TEST(BudgetctlFormat, EventAndError) {
  EXPECT_EQ(format_event(Json{{"kind", "threshold_crossed"},
                              {"at", "2024-02-29T00:00:00Z"},
                              {"path", "org"},
                              {"process", "42"},
                              {"resource", "tokens"},
                              {"used", "800"},
                              {"limit", "1000"},
                              {"percent", 80},
                              {"message", "Approaching limit."}}),
            "2024-02-29T00:00:00Z threshold_crossed process=42 path=org resource=tokens "
            "used=800/1000 (80%): "
            "Approaching limit.");
  EXPECT_EQ(format_event(Json{
                {"kind", "watching"}, {"at", "t"}, {"path", "/"}, {"message", "Watching events."}}),
            "t watching path=/: Watching events.");

  Reply r;
  r.error = "io.budgetd.QuotaExceeded";
  r.parameters = {{"reason", "max_cost_exceeded"}, {"message", "Quota exceeded."}};
  EXPECT_EQ(format_error(r), "io.budgetd.QuotaExceeded: Quota exceeded. (max_cost_exceeded)");
  r.error = "org.varlink.service.InvalidParameter";
  r.parameters = {{"parameter", "quota.max_llm_calls"}};
  EXPECT_EQ(format_error(r), "org.varlink.service.InvalidParameter: parameter=quota.max_llm_calls");
}

// ---- The client
// ----------------------------------------------------------------------------------

TEST(VarlinkClient, EncodeAndDecode) {
  std::string f = client::encode_call("a.B", Json{{"x", 1}}, {.oneway = true, .more = false});
  ASSERT_EQ(f.back(), '\0');
  EXPECT_EQ(Json::parse(f.substr(0, f.size() - 1)),
            (Json{{"method", "a.B"}, {"parameters", {{"x", 1}}}, {"oneway", true}}));
  EXPECT_EQ(Json::parse(client::encode_call("a.B", Json(), {}).c_str()), (Json{{"method", "a.B"}}));

  auto r =
      client::decode_reply(R"({"error":"x.Y","parameters":{"message":"m"},"continues":false})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error, "x.Y");
  EXPECT_EQ(r->message(), "m");
  r = client::decode_reply("{}");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->parameters, Json::object());
  EXPECT_FALSE(client::decode_reply("nope"));
  EXPECT_FALSE(client::decode_reply("[1]"));
  EXPECT_FALSE(client::decode_reply(R"({"parameters": 3})"));
}

TEST(VarlinkClient, SocketPath) {
  ::setenv("BUDGETD_SOCKET", "/tmp/from-env", 1);
  EXPECT_EQ(client::resolve_socket_path("/tmp/flag"), "/tmp/flag");
  EXPECT_EQ(client::resolve_socket_path(), "/tmp/from-env");
  ::unsetenv("BUDGETD_SOCKET");
  EXPECT_EQ(client::resolve_socket_path(), client::default_socket_path());
  const char* old = std::getenv("XDG_RUNTIME_DIR");
  std::string saved = old ? old : "";
  ::setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
  EXPECT_EQ(client::default_socket_path(),
            ::geteuid() == 0 ? "/run/budgetd/io.budgetd" : "/run/user/1000/budgetd/io.budgetd");
  ::unsetenv("XDG_RUNTIME_DIR");
  EXPECT_EQ(client::default_socket_path(),
            ::geteuid() == 0 ? "/run/budgetd/io.budgetd" : "./run/io.budgetd");
  if (old) ::setenv("XDG_RUNTIME_DIR", saved.c_str(), 1);
}

TEST(VarlinkClient, ConnectFailsOnMissingSocket) {
  auto c = VarlinkClient::connect("/nonexistent/budgetd.sock", 1s);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().find("/nonexistent/budgetd.sock"), std::string::npos);
  EXPECT_FALSE(VarlinkClient::connect(std::string(200, 'x'), 1s));
}

TEST(VarlinkClient, CallOnewayPipelineAndErrors) {
  FakeServer s([](const Json& call) -> std::vector<Json> {
    if (call.value("oneway", false)) return {};
    std::string m = call["method"];
    if (m == "t.Echo") return {ok(call.value("parameters", Json::object()))};
    if (m == "t.Fail") return {err_reply("t.Broken", {{"message", "it broke"}})};
    return {err_reply("org.varlink.service.MethodNotFound", {{"method", m}})};
  });
  auto c = VarlinkClient::connect(s.path(), 5s);
  ASSERT_TRUE(c) << c.error();

  auto r = c->call("t.Echo", Json{{"a", "b"}});
  ASSERT_TRUE(r) << r.error();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->parameters, (Json{{"a", "b"}}));

  r = c->call("t.Fail");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error, "t.Broken");
  EXPECT_EQ(r->message(), "it broke");

  ASSERT_TRUE(c->send_oneway("t.Echo", Json{{"n", 0}}));
  // Pipelined: three calls out, then three replies in order.
  for (int i = 1; i <= 3; ++i) ASSERT_TRUE(c->send_call("t.Echo", Json{{"n", i}}));
  for (int i = 1; i <= 3; ++i) {
    auto rr = c->read_reply(5s);
    ASSERT_TRUE(rr) << rr.error();
    EXPECT_EQ(rr->parameters["n"], i);
  }
  // The oneway call produced no reply: nothing more is waiting.
  auto none = c->read_reply(50ms);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error(), client::kTimedOut);
  // The connection stays usable after a timed-out read.
  r = c->call("t.Echo", Json{{"again", true}});
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(s.calls().size(), 7u);
}

TEST(VarlinkClient, SplitFramesAndSeveralInOneRead) {
  FakeServer s([](const Json& call) -> std::vector<Json> {
    if (call["method"] == "t.Split") {
      return {Json{{"__raw", R"({"parame)"s}}, Json{{"__raw", "ters\":{\"x\":1}}\0{\"par"s}},
              Json{{"__raw", "ameters\":{\"x\":2}}\0"s}}};
    }
    return {};
  });
  auto c = VarlinkClient::connect(s.path());
  ASSERT_TRUE(c) << c.error();
  auto r = c->call("t.Split");
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->parameters["x"], 1);
  r = c->read_reply(5s);
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->parameters["x"], 2);
}

TEST(VarlinkClient, StreamsAndClose) {
  FakeServer s([](const Json& call) -> std::vector<Json> {
    if (call["method"] == "t.Watch") {
      EXPECT_TRUE(call.value("more", false));
      return {Json{{"parameters", {{"i", 0}}}, {"continues", true}},
              Json{{"parameters", {{"i", 1}}}, {"continues", true}},
              Json{{"parameters", {{"i", 2}}}}};
    }
    if (call["method"] == "t.Bye") return {Json{{"__close", true}}};
    return {};
  });
  auto c = VarlinkClient::connect(s.path());
  ASSERT_TRUE(c) << c.error();
  std::vector<std::pair<int, bool>> seen;
  auto done = c->call_more("t.Watch", Json::object(), [&](const Reply& r, bool continues) {
    seen.emplace_back(r.parameters["i"].get<int>(), continues);
    return true;
  });
  ASSERT_TRUE(done) << done.error();
  EXPECT_EQ(seen, (std::vector<std::pair<int, bool>>{{0, true}, {1, true}, {2, false}}));

  // Stopping early: the callback returns false after the first reply.
  seen.clear();
  done = c->call_more("t.Watch", Json::object(), [&](const Reply& r, bool continues) {
    seen.emplace_back(r.parameters["i"].get<int>(), continues);
    return false;
  });
  ASSERT_TRUE(done);
  EXPECT_EQ(seen.size(), 1u);
  // The rest of that stream is still on the connection, in order.
  for (int i = 1; i <= 2; ++i) {
    auto rest = c->read_reply(5s);
    ASSERT_TRUE(rest) << rest.error();
    EXPECT_EQ(rest->parameters["i"], i);
    EXPECT_EQ(rest->continues, i == 1);
  }

  auto r = c->call("t.Bye", Json::object(), 5s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), client::kConnectionClosed);
}

TEST(VarlinkClient, WaitClosedAndGarbage) {
  FakeServer s([](const Json& call) -> std::vector<Json> {
    if (call.is_discarded()) return {Json{{"__close", true}}};  // not JSON: hang up
    return {ok()};
  });
  auto c = VarlinkClient::connect(s.path());
  ASSERT_TRUE(c) << c.error();
  ASSERT_TRUE(c->send_raw("\x01\x02garbage\0"s));
  EXPECT_TRUE(c->wait_closed(5s));
  auto r = c->read_reply(1s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), client::kConnectionClosed);
}

TEST(VarlinkClient, AdoptSocketpair) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::thread peer([fd = sv[1]] {
    std::string buf;
    char tmp[256];
    while (buf.find('\0') == std::string::npos) {
      ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) break;
      buf.append(tmp, static_cast<std::size_t>(n));
    }
    std::string reply = std::string(R"({"parameters":{"pong":true}})") + '\0';
    [[maybe_unused]] auto n = ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
    ::close(fd);
  });
  VarlinkClient c = VarlinkClient::adopt(sv[0]);
  auto r = c.call("t.Ping");
  peer.join();
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->parameters["pong"], true);
  VarlinkClient moved = std::move(c);
  EXPECT_FALSE(c.is_open());
  EXPECT_TRUE(moved.is_open());
}

// ---- Whole invocations
// ----------------------------------------------------------------------------

std::vector<Json> admin_handler(const Json& call) {
  std::string m = call["method"];
  const Json& p = call.contains("parameters") ? call["parameters"] : Json::object();
  if (m == "io.budgetd.Admin.ListProcesses") {
    // Two pages of one process each.
    uint64_t offset = p.value("offset", uint64_t{0});
    Json proc = sample_process();
    proc["process"] = offset == 0 ? "4242" : "4343";
    return {ok({{"processes", Json::array({proc})}, {"total", 2}})};
  }
  if (m == "io.budgetd.Admin.Stats") {
    return {ok({{"total_events", 1},
                {"consumed_count", 1},
                {"rejected_count", 0},
                {"partial", 0},
                {"pending", 0},
                {"daemon", {{"connections", 1}}}})};
  }
  if (m == "io.budgetd.Admin.GetSystemUsage") {
    return {ok({{"total_processes", 2},
                {"active_processes", 1},
                {"system_llm_calls", 3},
                {"system_tool_calls", 0},
                {"system_tokens_in", 0},
                {"system_tokens_out", 0},
                {"system_cost", "0"}})};
  }
  if (m == "io.budgetd.Admin.AdjustQuota") {
    if (p["process"] == "missing") {
      return {err_reply("io.budgetd.ProcessNotFound",
                        {{"code", "process_not_found"}, {"message", "No such process."}})};
    }
    return {ok({{"quota", p["quota"]}, {"within", true}})};
  }
  if (m == "io.budgetd.Admin.Watch") {
    return {Json{{"parameters",
                  {{"event",
                    {{"kind", "watching"},
                     {"at", "t0"},
                     {"path", "/"},
                     {"message", "Watching events."}}}}},
                 {"continues", true}},
            Json{{"parameters",
                  {{"event",
                    {{"kind", "violation"},
                     {"at", "t1"},
                     {"path", "/"},
                     {"process", "42"},
                     {"reason", "max_llm_calls_exceeded"},
                     {"message", "Limit reached."}}}}},
                 {"continues", true}},
            Json{{"__close", true}}};
  }
  if (m == "io.budgetd.Admin.Pause" || m == "io.budgetd.Admin.Reload") return {ok()};
  return {err_reply("org.varlink.service.MethodNotFound", {{"method", m}})};
}

TEST(BudgetctlRun, PsPagesThroughEveryProcess) {
  FakeServer s(admin_handler);
  auto r = run_cli(s, {"ps"});
  EXPECT_EQ(r.status, kExitOk) << r.err;
  EXPECT_NE(r.out.find("PROCESS"), std::string::npos);
  EXPECT_NE(r.out.find("4242"), std::string::npos);
  EXPECT_NE(r.out.find("4343"), std::string::npos);
  EXPECT_NE(r.out.find("10/10 (100%)"), std::string::npos);
  auto calls = s.calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0]["parameters"]["offset"], 0);
  EXPECT_EQ(calls[1]["parameters"]["offset"], 1);

  r = run_cli(s, {"--json", "ps"});
  EXPECT_EQ(r.status, kExitOk);
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["total"], 2);
  EXPECT_EQ(j["processes"].size(), 2u);
}

TEST(BudgetctlRun, StatusMergesTwoCalls) {
  FakeServer s(admin_handler);
  auto r = run_cli(s, {"status"});
  EXPECT_EQ(r.status, kExitOk) << r.err;
  EXPECT_NE(r.out.find("2 tracked, 1 active"), std::string::npos) << r.out;
  r = run_cli(s, {"status", "--json"});
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["total_processes"], 2);
  EXPECT_EQ(j["total_events"], 1);
}

TEST(BudgetctlRun, AdjustSendsTheQuotaAndReportsErrors) {
  FakeServer s(admin_handler);
  auto r = run_cli(s, {"adjust", "4242", "llm_calls=50", "timeout=unlimited"});
  EXPECT_EQ(r.status, kExitOk) << r.err;
  EXPECT_EQ(r.out, "process 4242: within quota\nmax_llm_calls    50\ntimeout_seconds  unlimited\n");
  EXPECT_EQ(s.calls().back()["parameters"],
            (Json{{"process", "4242"},
                  {"quota", {{"max_llm_calls", "50"}, {"timeout_seconds", "unlimited"}}}}));

  r = run_cli(s, {"adjust", "missing", "llm_calls=1"});
  EXPECT_EQ(r.status, kExitErrorReply);
  EXPECT_EQ(r.err, "error: io.budgetd.ProcessNotFound: No such process.\n");
  EXPECT_EQ(r.out, "");

  r = run_cli(s, {"--json", "adjust", "missing", "llm_calls=1"});
  EXPECT_EQ(r.status, kExitErrorReply);
  EXPECT_EQ(Json::parse(r.out)["error"], "io.budgetd.ProcessNotFound");
}

TEST(BudgetctlRun, WatchPrintsOneLinePerEvent) {
  FakeServer s(admin_handler);
  auto r = run_cli(s, {"watch"});
  // The fake daemon hangs up after two events: a transport error.
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_EQ(r.out,
            "t0 watching path=/: Watching events.\n"
            "t1 violation process=42 path=/ reason=max_llm_calls_exceeded: Limit reached.\n");
  r = run_cli(s, {"--json", "watch"});
  std::istringstream in(r.out);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    EXPECT_TRUE(Json::parse(line).contains("event"));
    ++n;
  }
  EXPECT_EQ(n, 2);
}

TEST(BudgetctlRun, SimpleCommandsAndCall) {
  FakeServer s(admin_handler);
  auto r = run_cli(s, {"pause", "4242"});
  EXPECT_EQ(r.status, kExitOk);
  EXPECT_EQ(r.out, "paused 4242\n");
  r = run_cli(s, {"reload"});
  EXPECT_EQ(r.out, "configuration reloaded\n");
  r = run_cli(s, {"call", "GetSystemUsage"});
  EXPECT_EQ(r.status, kExitOk);
  EXPECT_EQ(Json::parse(r.out)["system_llm_calls"], 3);
  r = run_cli(s, {"call", "Agent.Nope", "{}"});
  EXPECT_EQ(r.status, kExitErrorReply);
  EXPECT_NE(r.err.find("error: org.varlink.service.MethodNotFound: method=io.budgetd.Agent.Nope"),
            std::string::npos)
      << r.err;
}

TEST(BudgetctlRun, UsageAndTransportErrors) {
  std::ostringstream out, err;
  EXPECT_EQ(run(v({}), out, err), kExitUsage);
  EXPECT_NE(err.str().find("Usage: budgetctl"), std::string::npos);

  out.str("");
  err.str("");
  EXPECT_EQ(run(v({"--help"}), out, err), kExitOk);
  EXPECT_NE(out.str().find("set-limits"), std::string::npos);

  out.str("");
  EXPECT_EQ(run(v({"adjust", "--help"}), out, err), kExitOk);
  EXPECT_NE(out.str().find("Usage: budgetctl [OPTIONS] adjust PID key=value..."),
            std::string::npos);

  err.str("");
  EXPECT_EQ(run(v({"adjust", "1"}), out, err), kExitUsage);
  EXPECT_NE(err.str().find("budgetctl adjust: "), std::string::npos);

  err.str("");
  EXPECT_EQ(run(v({"--socket", "/nonexistent/sock", "status"}), out, err), kExitUsage);
  EXPECT_NE(err.str().find("/nonexistent/sock"), std::string::npos);
}

}  // namespace
}  // namespace budgetd::cli
